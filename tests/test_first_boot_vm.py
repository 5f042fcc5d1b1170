"""First-boot mode, the stock debian-installer path: node3's disk holds an installed bookworm
in a 12 GiB root with free space after it (tests/vm/disks.py makes it as d-i would, with the
late_command's first-boot unit). At its first boot the unit fetches the agent from the master
and runs it against `/`; after the reboot it asks for, the node must pass the same checks as
a node installed from blank."""

from __future__ import annotations

import pexpect
import pytest

from installer.cluster import config

from .conftest import example_path
from .vm import checks
from .vm.console import login, run
from .vm.disks import debian_installer_disk, overlay
from .vm.qemu import VM

pytestmark = pytest.mark.vm

NODE = "node3"
TRUNK_PORT = 2
D_I_ADDRESS = "10.99.0.50/24"      # set by hand in d-i, outside the DHCP range


@pytest.fixture(scope="module")
def node3(built, lan, tmp_path_factory):
    outdir, _ = built
    work = tmp_path_factory.mktemp("first-boot")
    cluster = config.load(example_path("cluster.toml"))
    node = next(n for n in cluster.nodes if n.name == NODE)
    base = debian_installer_disk(outdir / f"images/{cluster.release.name}.tar.zst",
                                 lan.standin.url, NODE, D_I_ADDRESS)
    disk = overlay(base, work / f"{NODE}.qcow2")
    nic = lan.nic(TRUNK_PORT, node.mac)
    vm = VM(f"{NODE}-first-boot", work, memory=1536, cpus=2, disks=[disk], nics=[nic]).start()
    try:
        vm.expect(f"installed {node.fqdn}", timeout=1200)
        vm.child.expect(pexpect.EOF, timeout=300)       # it reboots; -no-reboot exits
    finally:
        vm.stop()
    lan.standin.wait_for(NODE, ("install", "installed"))
    vm = VM(NODE, work, memory=1536, cpus=2, disks=[disk], nics=[nic]).start()
    try:
        login(vm, NODE)
        yield lan, vm, cluster, node
    finally:
        vm.stop()


def test_the_agent_ran_the_first_boot_stages(node3):
    lan, _, _, _ = node3
    events = lan.standin.events(NODE)
    for stage in ("identify", "storage", "configure", "drbd", "finish"):
        assert (stage, "done") in events, events
    assert ("os", "started") not in events and ("bootloader", "started") not in events


def test_first_boot_node_is_ganeti_ready(node3):
    _, vm, cluster, node = node3
    checks.ganeti_ready(vm, cluster, node, min_vg_gib=25)


def test_the_d_i_root_is_kept_and_the_unit_does_not_run_again(node3):
    _, vm, _, _ = node3
    out = run(vm, "findmnt -n -o SOURCE,SIZE /; ls /var/lib/ganeti-installer/; "
                  "systemctl --no-pager show -p ConditionResult ganeti-installer-firstboot")
    assert "/dev/vda2" in out and "installed" in out, out
    assert "ConditionResult=no" in out, out
