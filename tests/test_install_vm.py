"""A whole install in QEMU on the office LAN, with three power cuts on the way.

node2 is a PC with a blank 40 GiB disk and a blank USB stick, its one NIC on a trunk port of
the test switch (untagged provisioning VLAN, tagged 100 and 200). It boots the netboot image,
takes DHCP from dnsmasq and its plan from the stand-in master on the provisioning VLAN, and
installs. The test pulls the plug while it partitions, while it writes the OS and while it
installs the boot loader; each time the next netboot must resume. Then the node boots from its
own disk and is checked as an admin would check it, VLANs included.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from installer.cluster import config

from .conftest import example_path
from .vm import checks
from .vm.console import login, run, status
from .vm.office import VLAN200_PUBLIC, VLAN200_SAME_SUBNET, Office
from .vm.qemu import VM, make_disk

pytestmark = pytest.mark.vm

CONSOLE = "console=ttyS0,115200n8"
NODE = "node2"
TRUNK_PORT = 1

# (step, the report that shows it under way, seconds to let it run, the stage it is in).
# None: the cut is exact, the stand-in master holds that report and the power goes while the
# agent waits on it: after the ESP partition (the new table written, nothing formatted), and
# as the boot loader starts (the stage takes a few seconds, too short to aim a cut inside).
CUTS = [("partitioning", ("storage/partition/esp", "running"), None, "storage"),
        ("OS write", ("os", "started"), 10, "os"),
        ("boot loader", ("bootloader", "started"), None, "bootloader")]


@dataclass
class Installed:
    lan: Office
    vm: VM
    cluster: config.Cluster
    node: config.Node
    runs: list[list[tuple[str, str]]]      # the events of each netboot, in order
    stick: Path


def netboot(lan: Office, outdir: Path, work: Path, name: str, disk: Path, stick: Path,
            mac: str) -> VM:
    plan_url = f"{lan.standin.url}/plans/{NODE}.json"
    return VM(name, work, memory=1536, cpus=2, disks=[disk], usb_disks=[stick],
              nics=[lan.nic(TRUNK_PORT, mac)], kernel=str(outdir / "netboot/vmlinuz"),
              initrd=str(outdir / "netboot/initrd"),
              append=f"{CONSOLE} installer.plan={plan_url}").start()


def wait_for_report(lan: Office, vm: VM, event: tuple[str, str], since: int,
                    timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while event not in lan.standin.events(NODE)[since:]:
        assert time.monotonic() < deadline, f"no {event} report; serial log {vm.log_path}"
        vm.pump(0.3)


@pytest.fixture(scope="module")
def installed(built, lan, tmp_path_factory):
    outdir, _ = built
    work = tmp_path_factory.mktemp("install-vm")
    cluster = config.load(example_path("cluster.toml"))
    node = next(n for n in cluster.nodes if n.name == NODE)
    disk, stick = make_disk(work / f"{NODE}.qcow2", "40G"), make_disk(work / "stick.qcow2", "1G")
    runs = []
    for i, (_, event, wait, _) in enumerate(CUTS):
        seen = len(lan.standin.events(NODE))
        if wait is None:
            lan.standin.hold(*event)
        vm = netboot(lan, outdir, work, f"{NODE}-cut{i}", disk, stick, node.mac)
        try:
            wait_for_report(lan, vm, event, seen)
            vm.pump(wait or 0)
            vm.monitor("quit")                          # the power cut
            vm.child.expect(pexpect.EOF, timeout=60)
        finally:
            vm.stop()
            lan.standin.release()
        runs.append(lan.standin.events(NODE)[seen:])
    seen = len(lan.standin.events(NODE))
    vm = netboot(lan, outdir, work, f"{NODE}-install", disk, stick, node.mac)
    try:
        vm.expect(f"installed {node.fqdn}", timeout=1500)
        vm.child.expect(pexpect.EOF, timeout=180)      # the agent reboots; -no-reboot exits
    finally:
        vm.stop()
    lan.standin.wait_for(NODE, ("install", "installed"))
    runs.append(lan.standin.events(NODE)[seen:])
    vm = VM(NODE, work, memory=1536, cpus=2, disks=[disk], usb_disks=[stick],
            nics=[lan.nic(TRUNK_PORT, node.mac)]).start()
    try:
        login(vm, NODE)
        yield Installed(lan, vm, cluster, node, runs, stick)
    finally:
        vm.stop()


@pytest.mark.parametrize("cut", range(len(CUTS)), ids=[c[0] for c in CUTS])
def test_power_cut_landed_in_its_step(installed, cut):
    _, _, _, stage = CUTS[cut]
    events = installed.runs[cut]
    assert (stage, "started") in events and (stage, "done") not in events, events


def test_the_netboot_after_the_last_cut_resumed(installed):
    """Cut in the boot loader: the OS and its configuration were kept, not redone."""
    last = installed.runs[-1]
    assert ("os", "skipped") in last and ("configure", "skipped") in last, last
    for stage in ("bootloader", "finish"):
        assert (stage, "done") in last, last
    assert ("install", "installed") in last


def test_booted_node_reports_to_the_master_with_its_host_keys(installed):
    """Booted from its disk, the node tells the master it is up, with the host keys the
    install reported: the keys the master pins before it joins the node."""
    standin = installed.lan.standin
    assert standin.wait_for(NODE, ("boot", "booted"), timeout=120), standin.events(NODE)[-5:]
    sent = [r for path, r in standin.reports if path.endswith(f"/{NODE}/events")]
    installed_keys = next(r["host_keys"] for r in reversed(sent) if r["status"] == "installed")
    booted_keys = next(r["host_keys"] for r in reversed(sent) if r["status"] == "booted")
    assert booted_keys == installed_keys and "ed25519" in booted_keys, sent[-1]
    pub = run(installed.vm, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()
    assert booted_keys["ed25519"] == f"{pub[0]} {pub[1]}"
    assert run(installed.vm, "systemctl is-active ganeti-installer-booted.service").strip() \
        in ("inactive", "active")       # done (exited 0), not failed or restarting


def test_volume_group_ganeti_holds_the_rest_of_the_disk(installed):
    checks.volume_group(installed.vm, installed.cluster)


def test_drbd_loads_with_the_papers_parameters(installed):
    checks.drbd(installed.vm, installed.cluster)


def test_vlan_bridges_are_up(installed):
    checks.bridges(installed.vm, installed.cluster, installed.node)


def test_vlan_100_reaches_the_management_gateway(installed):
    gateway = installed.cluster.management.gateway
    assert status(installed.vm, f"ping -c 2 -W 3 {gateway}") == 0
    assert installed.lan.vlan100.ping(installed.node.ip)


def test_vlan_200_stays_separate(installed):
    vm = installed.vm
    # An address on VLAN 200 only, in br-man's subnet: unreachable over VLAN 100.
    assert status(vm, f"ping -c 2 -W 2 {VLAN200_SAME_SUBNET}") != 0
    assert not installed.lan.vlan200.ping(installed.node.ip)
    # br-public does carry VLAN 200: with an address for the test, its host answers.
    run(vm, "ip addr add 192.168.21.9/24 dev br-public")
    try:
        assert status(vm, f"ping -c 2 -W 3 {VLAN200_PUBLIC}") == 0
    finally:
        run(vm, "ip addr del 192.168.21.9/24 dev br-public")


def test_hostname_and_hosts(installed):
    checks.hostname(installed.vm, installed.cluster, installed.node)


def test_sshd_runs_with_fresh_host_keys(installed):
    checks.sshd(installed.vm)


def test_lvm_filter_is_in_force(installed):
    checks.lvm_filter(installed.vm)


def image_uuid(image: Path) -> uuid.UUID:
    """The UUID in the ext4 superblock (offset 1024) of the OS image, at offset 0x68."""
    head = subprocess.run(f"zstd -dc {image} | head -c 4096", shell=True, check=True,
                          capture_output=True).stdout
    return uuid.UUID(bytes=head[1024 + 0x68:1024 + 0x78])


def test_root_fills_its_partition_with_a_uuid_of_its_own(installed, built):
    """The image's file system was grown to the 10 GiB partition and given a new UUID."""
    outdir, _ = built
    size = int(run(installed.vm, "df --block-size=1 --output=size / | tail -1").split()[-1])
    assert size > 9.5 * 2**30, f"root is {size} bytes: not grown to its partition"
    got = uuid.UUID(run(installed.vm, "findmnt --noheadings --output UUID /").split()[-1])
    assert got != image_uuid(outdir / "images/bookworm.ext4.zst")
    assert f"root=UUID={got}" in run(installed.vm, "cat /proc/cmdline")


def test_usb_stick_was_not_touched(installed):
    """The removable stick is never a candidate: it is as blank as it was made."""
    listing = run(installed.vm, "lsblk -dn -o NAME,RM")
    sticks = [line.split()[0] for line in listing.splitlines()
              if line.split()[1:] == ["1"] and not line.startswith("sr")]
    assert len(sticks) == 1, listing
    assert run(installed.vm, f"wipefs --noheadings /dev/{sticks[0]}").strip() == ""
    assert status(installed.vm, f"cmp -n 16777216 /dev/{sticks[0]} /dev/zero") == 0
