"""A whole install in QEMU: the netboot image installs node1 onto a blank 40 GiB disk from
its plan and the OS image, reboots, and the node comes up from its own disk. What is checked
is what an admin would check on the console of the installed node."""

from __future__ import annotations

import re

import pexpect
import pytest

from installer import config

from .conftest import example_path
from .vm.qemu import VM, make_disk
from .vm.standin import StandinMaster

pytestmark = pytest.mark.vm

CONSOLE = "console=ttyS0,115200n8"
ROOT_PASSWORD = "ganeti"      # examples/cluster.toml carries the hash of this password


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """Install node1 once; yield the stand-in master and a VM booted from the node's disk."""
    outdir, _ = built
    work = tmp_path_factory.mktemp("install-vm")
    disk = make_disk(work / "node1.qcow2", "40G")
    cluster = config.load(example_path("cluster.toml"))
    with StandinMaster(outdir, cluster.provisioning.base_url) as master:
        plan = master.plan("node1")
        nic = f"user,model=virtio-net-pci,mac={plan['node']['mac']}"
        vm = VM("node1-install", work, memory=1536, cpus=2, disks=[disk], nics=[nic],
                kernel=str(outdir / "netboot/vmlinuz"), initrd=str(outdir / "netboot/initrd"),
                append=f"{CONSOLE} installer.plan={master.url}/plans/node1.json").start()
        try:
            vm.expect("installed node1.project.edu", timeout=1500)
            vm.child.expect(pexpect.EOF, timeout=180)   # the agent reboots; -no-reboot exits
        finally:
            vm.stop()
        node = VM("node1", work, memory=1536, cpus=2, disks=[disk], nics=[nic]).start()
        try:
            node.expect("node1 login:", timeout=600)
            login(node)
            yield master, node
        finally:
            node.stop()


def login(vm: VM) -> None:
    vm.child.sendline("root")
    vm.expect("Password:", timeout=60)
    vm.child.sendline(ROOT_PASSWORD)
    vm.expect(r"root@node1:~# ", timeout=120)
    # The quotes keep the echoed command line from matching the prompt.
    vm.child.sendline("stty -echo; export PS1='G''I# '")
    vm.expect("GI# ", timeout=30)


def run(vm: VM, command: str, timeout: float = 120) -> str:
    """Run a shell command on the serial console; its output, between two markers."""
    vm.child.sendline(f"echo ==BEGIN==; {command}; echo ==END==")
    vm.expect(r"==BEGIN==[\r\n]+", timeout=timeout)
    vm.expect(r"==END==", timeout=timeout)
    return vm.child.before.decode(errors="replace").replace("\r", "")


def test_master_heard_the_whole_install(installed):
    master, _ = installed
    events = master.events("node1")
    assert ("install", "started") in events
    for stage in ("identify", "storage", "os", "configure", "bootloader", "finish"):
        assert (stage, "done") in events, f"no '{stage} done' report: {events}"
    assert ("install", "installed") in events


def test_volume_group_ganeti_holds_the_rest_of_the_disk(installed):
    _, node = installed
    out = run(node, "vgs --noheadings --units g -o vg_name,vg_size ganeti")
    name, size = out.split()
    assert name == "ganeti" and float(size.rstrip("g")) > 25


def test_drbd_loads_with_the_papers_parameters(installed):
    _, node = installed
    out = run(node, "cat /sys/module/drbd/parameters/minor_count "
                    "/sys/module/drbd/parameters/usermode_helper")
    assert out.split() == ["128", "/bin/true"]


def test_vlan_bridges_are_up(installed):
    _, node = installed
    addr = run(node, "ip -o -4 addr show br-man")
    assert "192.168.20.222/24" in addr
    ports = run(node, "ls /sys/class/net/br-man/brif; echo --; ls /sys/class/net/br-public/brif")
    man, public = (part.split() for part in ports.split("--"))
    assert man == ["eth0.100"] and public == ["eth0.200"]
    vlans = run(node, "cat /proc/net/vlan/config")
    for vid in (100, 200):
        assert re.search(rf"eth0\.{vid}\s*\|\s*{vid}\s*\|\s*eth0", vlans), vlans


def test_hostname_and_hosts(installed):
    _, node = installed
    out = run(node, "hostname -f; getent hosts node2.project.edu")
    assert "node1.project.edu" in out and "192.168.20.223" in out


def test_sshd_runs_with_fresh_host_keys(installed):
    _, node = installed
    out = run(node, "systemctl is-active ssh; ls /etc/ssh/ssh_host_ed25519_key.pub")
    assert "active" in out.split() and "ssh_host_ed25519_key.pub" in out


def test_lvm_filter_is_in_force(installed):
    _, node = installed
    out = run(node, "lvmconfig devices/filter")
    assert 'filter=["r|/dev/cdrom|","r|/dev/drbd[0-9]+|"]' in out.replace(" ", ""), out
