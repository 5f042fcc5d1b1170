"""The first node from a stick: a PC with no network boots the install stick over USB with
OVMF (UEFI), installs itself onto its blank disk from the plan and OS image on the stick, and
boots its disk into a node that passes the node checks. The stick is byte for byte what
`ganeti-installer usb` made, before and after. With SeaBIOS the stick boots into the agent,
which takes its plan from the stick and starts: from there on the install is the same code
as under OVMF, and its BIOS boot loader stage is what every PXE install of the other VM tests
runs (SeaBIOS), so a second whole install would only cost CI minutes.

The PC's NIC has the node's MAC but no cable (no peer in QEMU, `-nic none` otherwise): the
stick's index picks the plan by that MAC, and there is nothing to take DHCP or HTTP from.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from installer import cli
from installer.cluster import config

from .conftest import example_path
from .vm import checks
from .vm.console import login, run
from .vm.qemu import VM, make_disk

pytestmark = pytest.mark.vm

NODE = "node2"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def unplugged(mac: str) -> list[str]:
    """No default NIC; one with the node's MAC and nothing at the other end."""
    return ["-nic", "none", "-device", f"virtio-net-pci,mac={mac}"]


@pytest.fixture(scope="module")
def stick(built, tmp_path_factory):
    outdir, _ = built
    work = tmp_path_factory.mktemp("usb")
    start = time.monotonic()
    path = work / "stick.img"
    assert cli.main(["usb", example_path("cluster.toml"), str(outdir), "--output", str(path),
                     "--state", str(work / "state")]) == 0
    print(f"stick made in {time.monotonic() - start:.1f} s", flush=True)
    return path, sha256(path)


@dataclass
class Installed:
    vm: VM
    cluster: config.Cluster
    node: config.Node
    console: str            # the install's serial console


def test_seabios_boots_the_stick_into_the_agent(stick, tmp_path_factory):
    """BIOS: the stick's boot loader, kernel and initrd; the agent finds its plan on it and
    lays out the disk."""
    path, before = stick
    work = tmp_path_factory.mktemp("usb-seabios")
    cluster = config.load(example_path("cluster.toml"))
    node = next(n for n in cluster.nodes if n.name == NODE)
    start = time.monotonic()
    vm = VM(f"{NODE}-stick-bios", work, memory=1536, cpus=2,
            disks=[make_disk(work / f"{NODE}.qcow2", "40G")], stick=path, nics=[],
            extra=unplugged(node.mac)).start()
    try:
        vm.expect(f"plan of {NODE} from the install stick", timeout=900)
        vm.expect("storage: done", timeout=300)     # it laid out the disk, as under OVMF
    finally:
        vm.stop()
    print(f"seabios: stick to agent in {time.monotonic() - start:.0f} s", flush=True)
    assert sha256(path) == before, "seabios: the boot wrote to the stick"


@pytest.fixture(scope="module")
def installed(stick, tmp_path_factory):
    firmware = "ovmf"
    path, before = stick
    work = tmp_path_factory.mktemp(f"usb-{firmware}")
    cluster = config.load(example_path("cluster.toml"))
    node = next(n for n in cluster.nodes if n.name == NODE)
    disk = make_disk(work / f"{NODE}.qcow2", "40G")
    uefi = True
    start = time.monotonic()
    vm = VM(f"{NODE}-stick", work, memory=1536, cpus=2, disks=[disk], stick=path, nics=[],
            extra=unplugged(node.mac), uefi=uefi).start()
    try:
        vm.expect(r"remove the stick; rebooting in 10 s", timeout=2400)
        vm.child.expect(pexpect.EOF, timeout=180)      # the agent reboots; -no-reboot exits
    finally:
        vm.stop()
    console = vm.log_path.read_text(errors="replace")
    print(f"{firmware}: stick install in {time.monotonic() - start:.0f} s", flush=True)
    assert sha256(path) == before, f"{firmware}: the install wrote to the stick"
    vm = VM(NODE, work, memory=1536, cpus=2, disks=[disk], nics=[],
            extra=unplugged(node.mac), uefi=uefi).start()
    try:
        login(vm, NODE)
        print(f"{firmware}: setup (install and first boot) {time.monotonic() - start:.0f} s",
              flush=True)
        yield Installed(vm, cluster, node, console)
    finally:
        vm.stop()


def test_the_install_showed_its_stages_and_the_image_write(installed):
    console = installed.console
    assert f"plan of {NODE} from the install stick" in console
    for stage in ("storage", "os", "configure", "bootloader", "finish"):
        assert f"{stage}: done" in console, stage
    assert "os image: 50% written" in console and "os image: 100% written" in console


def test_node_is_ready_for_ganeti(installed):
    checks.ganeti_ready(installed.vm, installed.cluster, installed.node)


def test_reports_wait_on_the_node_for_the_master(installed):
    """No master was there: the install's reports, up to "installed", are in the outbox,
    with the node's token, for the booted service to deliver."""
    outbox = json.loads(run(installed.vm, "cat /var/lib/ganeti-installer/outbox.json"))
    steps = [(e["step"], e["status"]) for e in outbox["events"]]
    assert ("install", "started") in steps and ("install", "installed") in steps, steps
    assert outbox["token"] and outbox["url"].endswith(f"/api/v1/nodes/{NODE}/events")
