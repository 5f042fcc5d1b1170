"""A whole netboot install on QEMU's user network, for tests that need an installed node but
not the office LAN: the netboot image fetches the plan from a stand-in master on loopback,
installs, and powers off (-no-reboot) when the agent reboots."""

from __future__ import annotations

from pathlib import Path

import pexpect

from .qemu import VM
from .standin import StandinMaster

CONSOLE = "console=ttyS0,115200n8"


def user_nic(mac: str) -> str:
    return f"user,model=virtio-net-pci,mac={mac}"


def netboot_install(work: Path, outdir: Path, master: StandinMaster, node, disk: Path,
                    timeout: float = 1500, cpus: int = 2) -> None:
    vm = VM(f"{node.name}-install", work, memory=1536, cpus=cpus, disks=[disk],
            nics=[user_nic(node.mac)], kernel=str(outdir / "netboot/vmlinuz"),
            initrd=str(outdir / "netboot/initrd"),
            append=f"{CONSOLE} installer.plan={master.url}/plans/{node.name}.json").start()
    try:
        vm.expect(f"installed {node.fqdn}", timeout=timeout)
        vm.child.expect(pexpect.EOF, timeout=180)
    finally:
        vm.stop()


def boot_disk(work: Path, node, disk: Path) -> VM:
    return VM(node.name, work, memory=1536, cpus=2, disks=[disk],
              nics=[user_nic(node.mac)]).start()
