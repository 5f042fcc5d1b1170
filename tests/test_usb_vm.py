"""The first node from a stick, and the cluster from the first node.

A PC with no network boots the `usb --all` stick and installs itself onto its blank disk from
the plan and OS image on the stick: the master (node1) with SeaBIOS, node2 with OVMF (UEFI).
Each then boots its disk; the stick is byte for byte what `ganeti-installer usb` made, before
and after. The master got OUTDIR, serve's state and the program from the stick: plugged into
the test LAN, it runs serve from its first boot, takes its own install reports, initialises
the cluster, and a blank third PC (node3) PXE-boots from it, installs and joins.

The installing PCs' NICs have their node's MAC but no cable (no peer in QEMU, `-nic none`
otherwise): the stick's index picks the plan by that MAC, and there is nothing to take DHCP or
HTTP from. Why fresh installs: an install from the stick is what is tested.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
import tomli_w

from installer import cli
from installer.build import builder as build
from installer.cluster import config

from .conftest import example_data
from .vm import checks
from .vm.console import login, run
from .vm.qemu import VM, make_disk
from .vm.switch import Switch

pytestmark = pytest.mark.vm

def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def unplugged(mac: str) -> list[str]:
    """No default NIC; one with the node's MAC and nothing at the other end."""
    return ["-nic", "none", "-device", f"virtio-net-pci,mac={mac}"]


def cluster_file(work: Path) -> Path:
    """The example, with Ganeti's kvm on QEMU's own emulator (no /dev/kvm in a TCG guest)."""
    data = example_data()
    data["hypervisor"] = {"kvm": {"kvm_path": "/usr/bin/qemu-system-x86_64"}}
    path = work / "cluster.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


@pytest.fixture(scope="module")
def stick(tmp_path_factory):
    """The `usb --all` stick of the example cluster, from an OUTDIR `build` made (its images
    from the cache ./build.sh filled)."""
    work = tmp_path_factory.mktemp("usb")
    start = time.monotonic()
    path = cluster_file(work)
    outdir = work / "out"
    build.build(config.load(str(path)), str(outdir), progress=lambda msg: None)
    image = work / "stick.img"
    assert cli.main(["usb", str(path), str(outdir), "--output", str(image),
                     "--state", str(work / "state"), "--all"]) == 0
    print(f"stick made in {time.monotonic() - start:.1f} s", flush=True)
    return image, sha256(image), config.load(str(path))


@dataclass
class Installed:
    vm: VM
    cluster: config.Cluster
    node: config.Node
    console: str            # the install's serial console
    disk: Path


def install_from_stick(stick, work: Path, name: str, *, uefi: bool) -> Installed:
    """NAME's PC installs from the stick with no network and powers off at its reboot; the
    stick is unchanged. The VM is not running afterwards."""
    path, before, cluster = stick
    node = cluster.node(name)
    firmware = "ovmf" if uefi else "seabios"
    disk = make_disk(work / f"{name}.qcow2", "40G")
    start = time.monotonic()
    vm = VM(f"{name}-stick", work, memory=1536, cpus=2, disks=[disk], stick=path, nics=[],
            extra=unplugged(node.mac), uefi=uefi).start()
    try:
        vm.expect(r"remove the stick; rebooting in 10 s", timeout=2400)
        vm.child.expect(pexpect.EOF, timeout=180)      # the agent reboots; -no-reboot exits
    finally:
        vm.stop()
    print(f"{firmware}: {name} installed from the stick in {time.monotonic() - start:.0f} s",
          flush=True)
    assert sha256(path) == before, f"{firmware}: the install wrote to the stick"
    return Installed(vm, cluster, node, vm.log_path.read_text(errors="replace"), disk)


def check_install_console(installed: Installed) -> None:
    console = installed.console
    assert f"plan of {installed.node.name} from the install stick" in console
    for stage in ("storage", "os", "configure", "bootloader", "finish"):
        assert f"{stage}: done" in console, stage
    assert "os image: 50% written" in console and "os image: 100% written" in console


# -- node2: UEFI, no network before or after ---------------------------------------------------

@pytest.fixture(scope="module")
def installed(stick, tmp_path_factory):
    work = tmp_path_factory.mktemp("usb-ovmf")
    start = time.monotonic()
    done = install_from_stick(stick, work, "node2", uefi=True)
    vm = VM("node2", work, memory=1536, cpus=2, disks=[done.disk], nics=[],
            extra=unplugged(done.node.mac), uefi=True).start()
    try:
        login(vm, "node2")
        print(f"ovmf: setup (install and first boot) {time.monotonic() - start:.0f} s",
              flush=True)
        done.vm = vm
        yield done
    finally:
        vm.stop()


def test_the_install_showed_its_stages_and_the_image_write(installed):
    check_install_console(installed)


def test_node_is_ready_for_ganeti(installed):
    checks.ganeti_ready(installed.vm, installed.cluster, installed.node)


def test_reports_wait_on_the_node_for_the_master(installed):
    """No master was there: the install's reports, up to "installed", are in the outbox,
    with the node's token, for the booted service to deliver."""
    outbox = json.loads(run(installed.vm, "cat /var/lib/ganeti-installer/outbox.json"))
    steps = [(e["step"], e["status"]) for e in outbox["events"]]
    assert ("install", "started") in steps and ("install", "installed") in steps, steps
    assert outbox["token"] and outbox["url"].endswith("/api/v1/nodes/node2/events")
    assert run(installed.vm, "ls /etc/systemd/system/multi-user.target.wants/").count(
        "ganeti-installer-serve") == 0, "only the master serves"


# -- node1, the master: BIOS, then the serving host of the test LAN ----------------------------

SERVE = "PYTHONPATH=/usr/local/lib/ganeti-installer-serve python3 -m installer.cli"
STATES = (f"{SERVE} status --url http://127.0.0.1:8080 --json | python3 -c 'import json, sys; "
          "print(\" \".join(n[\"name\"] + \"=\" + n[\"state\"] for n in json.load(sys.stdin)"
          "[\"nodes\"]))'")


@dataclass
class Served:
    master: Installed       # its vm: node1 booted from its disk, logged in
    node3: VM
    states: dict[str, str]


def node_states(vm: VM) -> dict[str, str]:
    out = run(vm, STATES, timeout=60).split()
    return dict(item.split("=", 1) for item in out if "=" in item)


def wait_states(master: VM, others: list[VM], want: dict[str, str], timeout: float) -> dict:
    """serve's view of the nodes, asked on the master, until every node in WANT is there;
    the other consoles are read meanwhile (a guest whose serial output nobody reads stalls)."""
    deadline = time.monotonic() + timeout
    while True:
        states = node_states(master)
        if all(states.get(k) == v for k, v in want.items()):
            return states
        assert "failed" not in states.values(), (states, run(master, "journalctl -u "
                                                "ganeti-installer-serve -n 60 --no-pager"))
        assert time.monotonic() < deadline, (states, run(master, "journalctl -u "
                                             "ganeti-installer-serve -n 60 --no-pager"))
        for vm in others:
            vm.pump(5)
        if not others:
            time.sleep(5)


@pytest.fixture(scope="module")
def served(stick, tmp_path_factory):
    work = tmp_path_factory.mktemp("usb-seabios")
    start = time.monotonic()
    done = install_from_stick(stick, work, "node1", uefi=False)
    cluster = done.cluster
    node3 = cluster.node("node3")
    with Switch(work) as switch:
        switch.host("vlan100", cluster.management.vlan, ["192.168.20.1/24"])
        master = VM("node1", work, memory=2048, cpus=2, disks=[done.disk],
                    nics=[switch.trunk(1, done.node.mac)]).start()
        vms = [master]
        try:
            login(master, "node1")
            done.vm = master
            print(f"seabios: master installed and booted in {time.monotonic() - start:.0f} s",
                  flush=True)
            wait_states(master, [], {"node3": "pending"}, timeout=600)     # serve answers
            disk3 = make_disk(work / "node3.qcow2", "40G")
            pxe = VM("node3-install", work, memory=2048, cpus=2, disks=[disk3],
                     nics=[switch.trunk(3, node3.mac)], pxe=True).start()
            vms.append(pxe)
            wait_states(master, [pxe], {"node3": "installed"}, timeout=1800)
            pxe.child.expect(pexpect.EOF, timeout=300)      # the agent reboots: -no-reboot
            pxe.stop()
            vm3 = VM("node3", work, memory=2048, cpus=2, disks=[disk3],
                     nics=[switch.trunk(3, node3.mac)], pxe=True).start()
            vms.append(vm3)
            states = wait_states(master, [vm3], {"node1": "joined", "node3": "joined"},
                                 timeout=1800)
            print(f"seabios: setup (stick install, serve, node3 PXE-installed and joined) "
                  f"{time.monotonic() - start:.0f} s", flush=True)
            yield Served(done, vm3, states)
        finally:
            for vm in vms:
                vm.stop()


def test_the_master_installed_from_the_stick_under_bios(served):
    check_install_console(served.master)
    checks.ganeti_ready(served.master.vm, served.master.cluster, served.master.node)


def test_the_master_serves_from_its_first_boot(served):
    vm = served.master.vm
    assert run(vm, "systemctl is-active ganeti-installer-serve").strip() == "active"
    # serve's own state carried on the stick: its install reports arrived from the outbox
    events = run(vm, f"{SERVE} status --url http://127.0.0.1:8080 --json")
    node1 = next(n for n in json.loads(events[events.index("{"):])["nodes"]
                 if n["name"] == "node1")
    assert node1["state"] == "joined", node1
    log = run(vm, "journalctl -u ganeti-installer-serve --no-pager | grep 'node1: '")
    assert "node1: install installed" in log and "node1: boot booted" in log, log


def test_the_pxe_node_joined_the_cluster_the_master_made(served):
    vm = served.master.vm
    nodes = run(vm, "gnt-node list --no-headers -o name,offline", timeout=300)
    assert "node1.project.edu N" in " ".join(nodes.split()) and \
        "node3.project.edu N" in " ".join(nodes.split()), nodes
    assert run(vm, "gnt-cluster getmaster").strip() == "node1.project.edu"
    assert served.states["node2"] == "pending", served.states   # still on its stick install
