"""The whole flow with the real master: two blank VMs PXE-boot from `ganeti-installer serve`
(its dnsmasq answers their iPXE ROMs), install, are handed off to their disks, report booted,
and end as one real Ganeti cluster joined by serve: gnt-cluster init on node1, gnt-node add
of node2, verify clean. Then the cluster's services on the same two nodes: our `image` OS
definition (gnt-os list, an image+default instance), an ISO sent to both by `iso add`, and the
paper's testvm (image+cd, DRBD) booted from it under kvm, migrated, and failed over with its
primary powered off; that leaves node2 down and offline: `rebuild node2` brings it back, last.
node2 is a UEFI PC with its own NVRAM, node1 a BIOS PC.

The test LAN is the office's: the serving host is a separate machine (on_master = false) with
a leg on VLAN 100. The nodes are the example's, OS image included. kvm, the paper's
hypervisor, runs QEMU's own emulator ([hypervisor.kvm] kvm_path: no /dev/kvm under TCG);
Ganeti's `fake` hypervisor is enabled as well, for the image+default instance, which is only
checked on its disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect
import pytest
import tomli_w

from installer.build import builder as build
from installer.cluster import config, sshkeys

from .conftest import REPO, example_data
from .vm import checks, testiso
from .vm.console import login, run, status
from .vm.qemu import VM, make_disk
from .vm.switch import UNTAGGED, Switch

pytestmark = pytest.mark.vm

NODES = ("node1", "node2")
INSTANCE_IMAGE = "debian-12"
SERVE_MANAGEMENT = "192.168.20.250"
CLI = [sys.executable, "-c", "import sys; from installer.cli import main; sys.exit(main())"]

def cluster_file(work: Path) -> Path:
    data = example_data()
    data["cluster"]["hypervisors"] = ["kvm", "fake"]      # kvm first: the example's image
    # No /dev/kvm in a TCG guest: Ganeti's kvm runs QEMU's own emulator.
    data["hypervisor"] = {"kvm": {"kvm_path": "/usr/bin/qemu-system-x86_64"}}
    prov = data["network"]["provisioning"]
    prov["on_master"], prov["management_address"] = False, SERVE_MANAGEMENT
    data["nodes"] = [n for n in data["nodes"] if n["name"] in NODES]
    # The paper's variants, default writing a Debian image that `build` makes.
    data["instance_image"] = {
        "images": [{"name": INSTANCE_IMAGE, "build": "bookworm"}],
        "variants": [{"name": "default", "image": INSTANCE_IMAGE},
                     {"name": "cd", "cdinstall": True, "nomount": True}]}
    path = work / "cluster.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


class Master:
    """`ganeti-installer serve` in the serving host's namespace, and its status API."""

    def __init__(self, host, path: Path, outdir: Path, work: Path):
        self.host, self.log, self.state = host, work / "serve.log", work / "state"
        self.path, self.outdir, self.work = path, outdir, work
        self.switch: Switch | None = None           # the test LAN, for the rebuild's PC
        # node: seconds from power-on to "installed" on its console, and to joined
        self.first_install: dict[str, dict[str, float]] = {}
        self.stranger: tuple[int, str] | None = None    # what a second plan fetch got
        self.proc = host.spawn(CLI + ["serve", str(path), str(outdir), "--state",
                                      str(self.state)], cwd=REPO,
                               stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "serving " not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.5)

    def status(self) -> dict:
        out = self.table("--json")
        return json.loads(out[out.index("{"):])

    def table(self, *argv: str) -> str:
        """`status` on the serving host at the provisioning address (not loopback: with the
        admin token from the state directory)."""
        return self.host.run(CLI + ["status", "--url", "http://10.99.0.1:8080", "--state",
                                    str(self.state), *argv])

    def node(self, name: str) -> dict:
        return next(n for n in self.status()["nodes"] if n["name"] == name)

    def wait(self, name: str, states: tuple[str, ...], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while (node := self.node(name))["state"] not in states:
            assert node["state"] != "failed", self.explain(node)
            assert time.monotonic() < deadline, self.explain(node)
            time.sleep(5)
        return node

    def explain(self, node: dict) -> str:
        """The node's state and message, and serve's lines about it (not dnsmasq's)."""
        lines = [ln for ln in self.log.read_text().splitlines()
                 if ln.startswith(f"{node['name']}:") or "join" in ln]
        return (f"{node['name']} is {node['state']}: {node.get('message')}\n"
                + "\n".join(lines[-40:]))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


STRANGER = "10.99.0.66"
# A machine on the untagged VLAN asks for a node's plan: (HTTP status, the JSON error).
ASK_PLAN = ("import requests, sys; r = requests.get(sys.argv[1], timeout=30); "
            "print(r.status_code); print(r.json().get('error', 'a plan'))")


def steal_plan(switch: Switch, master: Master, node, vms: list[VM]) -> tuple[int, str]:
    """Once NODE is past pending (it took its plan and reported), a stranger asks for it.
    The VMs' consoles are read meanwhile: a guest whose serial output nobody reads stalls."""
    stranger = switch.host("stranger", UNTAGGED, [f"{STRANGER}/24"])
    deadline = time.monotonic() + 1800
    while master.node(node.name)["state"] == "pending":
        assert time.monotonic() < deadline, master.explain(master.node(node.name))
        for vm in vms:
            vm.pump(2)
    url = f"http://10.99.0.1:8080/api/v1/plans/{node.mac.replace(':', '-')}"
    code, _, error = stranger.run([sys.executable, "-c", ASK_PLAN, url]).partition("\n")
    return int(code), error.strip()


# node2 is a UEFI PC: OVMF with its NVRAM in a file kept across its boots (the rebuild's
# too), booting by the BootOrder the agent left; node1 is a BIOS PC that tries PXE first.
UEFI_NODES = ("node2",)


def _installed(vms: list[VM], nodes, timeout: float) -> dict[str, float]:
    """When each VM said "installed <fqdn>" (monotonic), every console read meanwhile."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(nodes):
        for vm, node in zip(vms, nodes, strict=True):
            if node.name in seen:
                continue
            line = f"installed {node.fqdn}"
            got = vm.child.expect([line, pexpect.TIMEOUT, pexpect.EOF], timeout=1)
            if got == 2:        # ended: powered on again after an early reset, or the log
                vm.expect(line, timeout=max(deadline - time.monotonic(), 1))
            if got in (0, 2):
                seen[node.name] = time.monotonic()
            elif time.monotonic() > deadline:
                vm.expect(line, timeout=1)      # fails with the console's tail
    return seen


def pxe_vm(switch: Switch, work: Path, node, port: int, disk: Path, tag: str) -> VM:
    nvram = work / f"{node.name}.OVMF_VARS.fd" if node.name in UEFI_NODES else None
    return VM(f"{node.name}-{tag}", work, memory=2048, cpus=2, disks=[disk],
              nics=[switch.trunk(port, node.mac)], pxe=True, nvram=nvram).start()


@pytest.fixture(scope="module")
def cluster_up(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    path = cluster_file(work)
    cluster = config.load(str(path))
    # dnsmasq reads the TFTP root as nobody: OUTDIR where every parent is searchable
    # (pytest's own directories are not).
    public = Path(tempfile.mkdtemp(prefix="gi-cluster-"))
    public.chmod(0o755)
    outdir = public / "out"
    build.build(cluster, str(outdir), progress=lambda msg: print(msg, flush=True))
    nodes = [cluster.node(n) for n in NODES]
    with Switch(work) as switch:
        serving = switch.host("serve", UNTAGGED, ["10.99.0.1/24"])
        switch.plug(serving, cluster.management.vlan, "eth100", [f"{SERVE_MANAGEMENT}/24"])
        switch.host("vlan100", cluster.management.vlan, ["192.168.20.1/24"])
        master = Master(serving, path, outdir, work)
        master.switch = switch
        vms: dict[str, VM] = {}
        try:
            disks = {n.name: make_disk(work / f"{n.name}.qcow2", "40G") for n in nodes}
            powered_on = time.monotonic()
            installs = [pxe_vm(switch, work, n, i + 1, disks[n.name], "install")
                        for i, n in enumerate(nodes)]
            master.stranger = steal_plan(switch, master, nodes[1], installs)
            for name, at in _installed(installs, nodes, timeout=1800).items():
                master.first_install[name] = {"installed": at - powered_on}
            for vm in installs:
                vm.child.expect(pexpect.EOF, timeout=300)   # the agent reboots: -no-reboot
                vm.stop()
            entries = {n.name: (outdir / f"tftp/ipxe/{n.mac.replace(':', '-')}.ipxe")
                       .read_text() for n in nodes}
            before = len(master.log.read_text())
            for i, node in enumerate(nodes):
                vms[node.name] = pxe_vm(switch, work, node, i + 1, disks[node.name], "disk")
            for node in nodes:
                login(vms[node.name], node.name)
            # Network first: each VM's iPXE asked serve's dnsmasq (the installed system has
            # no DHCP client), got the local-boot entry, and booted its disk.
            dhcp = master.log.read_text()[before:]
            for node in nodes:
                assert f"{node.mac} {node.name}" in dhcp and "tags: known, ipxe" in dhcp, dhcp
            for node in nodes:
                master.wait(node.name, ("joined",), timeout=1800)
                master.first_install[node.name]["joined"] = time.monotonic() - powered_on
            yield cluster, master, vms, entries
        finally:
            for vm in vms.values():
                vm.stop()
            master.stop()
            shutil.rmtree(public, ignore_errors=True)


def test_a_stranger_gets_no_second_plan_and_status_shows_it(cluster_up):
    """node2's plan went out once, to node2; a stranger asking after it got a JSON 409, and
    the admin sees the refused fetch in `status`'s default output."""
    _, master, _, _ = cluster_up
    assert master.stranger is not None
    code, error = master.stranger
    assert code == 409, error
    assert "the plan of node2 was already taken by 10.99.0." in error, error
    assert "ganeti-installer reinstall CLUSTER OUTDIR node2" in error
    table = master.table()
    assert f"node2: 1 plan fetch(es) refused, the last from {STRANGER}" in table, table
    assert "node2 " in table and "joined" in table


def test_handed_off_nodes_boot_their_disks(cluster_up):
    cluster, master, vms, entries = cluster_up
    for name in NODES:
        assert "is installed, booting its local disk" in entries[name], entries[name]
        assert "sanboot" in entries[name]
    checks.ganeti_ready(vms["node2"], cluster, cluster.node("node2"))


EFIVARS, EFI_GLOBAL = "/sys/firmware/efi/efivars", "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def _efi(vm: VM, name: str) -> str:
    """A UEFI global variable as its node reads it: BootOrder and BootCurrent as boot
    numbers ("0003 0006 ..."), a Boot#### entry as its printable characters (its label)."""
    path = f"{EFIVARS}/{name}-{EFI_GLOBAL}"
    if re.fullmatch(r"Boot[0-9A-F]{4}", name):
        return run(vm, f"tr -dc '[:print:]' < {path}").strip()
    return " ".join(w.upper() for w in run(vm, f"od -An -tx2 -j4 {path}").split())


def test_the_uefi_node_boots_the_network_first_then_its_disk(cluster_up):
    """Issue 16, UEFI PCs: node2 runs OVMF with its own NVRAM and no boot order from QEMU.
    The agent left its BootOrder as: the PXE entry the install booted from, then its own
    entry for the disk; the firmware booted PXE (serve's local-boot entry exits), then that
    disk entry. The rebuild, last, shows the other half: flipped to install, it boots the
    network again, with no hand at the firmware."""
    _, _, vms, _ = cluster_up
    _booted_pxe_then_disk(vms["node2"])


def _booted_pxe_then_disk(vm: VM) -> None:
    """BootOrder is PXE, then our disk entry, which is what booted (BootCurrent); and ours
    is the only entry of ours (a rebuild drops the one for the ESP it replaced)."""
    order, current = _efi(vm, "BootOrder").split(), _efi(vm, "BootCurrent")
    assert len(order) > 2 and current == order[1], (order, current)
    first, disk = _efi(vm, f"Boot{order[0]}"), _efi(vm, f"Boot{current}")
    assert "PXEv4" in first, first
    assert "Debian (ganeti-installer)" in disk and "BOOTX64.EFI" in disk, disk
    ours = run(vm, f"for v in {EFIVARS}/Boot[0-9A-F]*-{EFI_GLOBAL}; do tr -dc '[:print:]' "
                   "< $v; echo; done | grep -c 'ganeti-installer'")
    assert ours.strip() == "1", ours


def test_both_nodes_are_joined_and_the_first_is_master(cluster_up):
    cluster, master, vms, _ = cluster_up
    assert {n["name"]: n["state"] for n in master.status()["nodes"]} == \
        {"node1": "joined", "node2": "joined"}
    vm = vms["node1"]
    listed = run(vm, "gnt-node list --no-headers -o name", timeout=300).split()
    assert sorted(listed) == ["node1.project.edu", "node2.project.edu"], listed
    assert run(vm, "gnt-cluster getmaster", timeout=120).strip() == "node1.project.edu"
    # The paper's `gnt-cluster modify -H kvm:kernel_path=,initrd_path=,vnc_bind_address=...`
    info = run(vm, "gnt-cluster info | grep -E '^ +(vnc_bind_address|kernel_path):'", timeout=120)
    assert "vnc_bind_address: 0.0.0.0" in info, info
    assert status(vm, "gnt-cluster verify", timeout=900) == 0


# -- the image OS definition (issue 15): every node got it from its plan ------------------------

# A plain LV: the OS definition writes the same disk path whatever the template, and testvm
# below covers DRBD (a second DRBD sync here cost minutes under TCG).
IMAGE_ADD = ("gnt-instance add -t plain -o {os} -s 1G -H fake --ignore-ipolicy --no-start "
             "--no-ip-check --no-name-check -n node1.project.edu {name}")
LAST_JOB = "gnt-job info $(gnt-job list --no-headers -o id | tail -1) | tail -20"


def test_gnt_os_list_shows_the_papers_three_oses(cluster_up):
    """The paper's figure in section 2.12."""
    _, _, vms, _ = cluster_up
    listed = run(vms["node1"], "gnt-os list --no-headers", timeout=300).split()
    assert listed == ["debootstrap+default", "image+cd", "image+default"], listed


def test_an_image_default_instance_holds_its_image(cluster_up):
    """The cluster file's built Debian image (INSTANCE_IMAGE), fetched by every node at its
    install: create of an image+default instance unpacks it into a partition of the
    instance's disk and writes the image's GRUB. Checked on the disk, with activate-disks
    (tests/test_instance_image_vm.py boots such a disk to its login prompt)."""
    _, _, vms, _ = cluster_up
    image = f"/var/cache/ganeti-instance-image/{INSTANCE_IMAGE}-x86_64.tar"
    sums = {n: run(vm, f"cat {image}.sha256; sha256sum {image}", timeout=300).split()
            for n, vm in vms.items()}
    assert all(s[0] == s[2] for s in sums.values()) and sums["node1"] == sums["node2"], sums
    vm = vms["node1"]
    add = IMAGE_ADD.format(os="image+default", name="imagevm")
    assert status(vm, add, timeout=1800) == 0, run(vm, LAST_JOB)
    disk = run(vm, "gnt-instance activate-disks imagevm", timeout=600).strip().split(":")[-1]
    assert disk.startswith("/dev/"), disk
    assert run(vm, f"head -c 440 {disk} | grep -a -c GRUB").strip() == "1"
    out = run(vm, f"mkdir -p /mnt/imagevm && mount -o ro,loop,offset=1048576 {disk} "
                  "/mnt/imagevm && cd /mnt/imagevm && grep VERSION_CODENAME etc/os-release "
                  "&& cat etc/hostname && ls boot/grub/i386-pc/core.img && grep -o "
                  "'root=UUID=[-0-9a-f]*' boot/grub/grub.cfg; cd / && umount /mnt/imagevm && "
                  f"blkid -p -O 1048576 -o value -s UUID {disk}", timeout=300)
    lines = out.strip().splitlines()[-5:]
    assert lines[:3] == ["VERSION_CODENAME=bookworm", "imagevm",
                         "boot/grub/i386-pc/core.img"], out
    assert lines[3] == f"root=UUID={lines[4]}", out


# -- the paper's testvm (sections 2.12-3.7): booted from CD under kvm, migrated, failed over

TESTVM = "testvm.project.edu"
SERIAL = f"/var/run/ganeti/kvm-hypervisor/ctrl/{TESTVM}.serial"


def _iso_add(master: Master, iso: Path) -> str:
    """`ganeti-installer iso add` on the serving host, against the running serve."""
    return master.host.run(CLI + ["iso", "add", str(iso), "--url", "http://10.99.0.1:8080",
                                  "--state", str(master.log.parent / "state")], timeout=600)


MONITOR = f"/var/run/ganeti/kvm-hypervisor/ctrl/{TESTVM}.monitor"


def _serial_shows_marker(vm: VM, timeout: int = 120) -> bool:
    """The instance's serial socket on this node prints the ISO's marker."""
    out = run(vm, f"timeout {timeout} socat -u UNIX-CONNECT:{SERIAL} - | "
                  f"grep -a -m1 -o '{testiso.MARKER}'", timeout=timeout + 30)
    return testiso.MARKER in out


def _qemu_state(vm: VM) -> str:
    """What the instance's QEMU on this node says of itself, for a failure's message."""
    return run(vm, f"for c in 'info status' 'info registers'; do echo \"$c\" | "
                   f"timeout 10 socat - UNIX-CONNECT:{MONITOR}; done 2>&1 | head -40; "
                   f"tail -5 /var/log/ganeti/kvm/{TESTVM}.log", timeout=60)


def _executing(vm: VM) -> tuple[str, int]:
    """The instance's QEMU on this node: its `info status`, and the CPU ticks its process
    used in two seconds (a guest whose CPU runs keeps a TCG emulator busy; a paused or
    stopped one does not)."""
    pid = f"$(cat /var/run/ganeti/kvm-hypervisor/pid/{TESTVM})"
    ticks = f"awk '{{print $14 + $15}}' /proc/{pid}/stat"
    out = run(vm, f"{ticks}; sleep 2; {ticks}; echo 'info status' | timeout 10 socat - "
                  f"UNIX-CONNECT:{MONITOR} | grep -a -o 'VM status: [a-z-]*'", timeout=90)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    numbers = [int(ln) for ln in lines if ln.isdigit()]
    busy = numbers[1] - numbers[0] if len(numbers) == 2 else -1
    return next((ln for ln in lines if ln.startswith("VM status")), out), busy


def _instance(vm: VM) -> list[str]:
    """testvm's line of `gnt-instance list` (the console may carry a stray line besides)."""
    out = run(vm, f"gnt-instance list --no-headers -o name,pnode,snodes,status {TESTVM}",
              timeout=120)
    return next((ln.split() for ln in out.splitlines() if ln.startswith(TESTVM)), [out])


def _drbd_in_sync(vm: VM, timeout: float = 900) -> str:
    """Wait until every DRBD device on this node is connected and up to date on both sides;
    /proc/drbd as it last read. migrate refuses a degraded disk: under TCG, drbd's
    connection can drop and resync when a starved node misses a ping."""
    deadline = time.monotonic() + timeout
    while True:
        out = run(vm, "cat /proc/drbd", timeout=120)
        states = [ln for ln in out.splitlines() if " cs:" in ln]
        if states and all("cs:Connected" in ln and "ds:UpToDate/UpToDate" in ln
                          for ln in states):
            return out
        if time.monotonic() > deadline:
            return out
        time.sleep(5)


# Under TCG a busy node can miss drbd's 0.5 s ping timeout (the CI consoles showed "PingAck
# did not arrive in time"), and each drop means a resync: 5 s (in tenths), below the 6 s ack
# timeout and the 10 s ping interval. Real PCs keep drbd's defaults.
DRBD_TIMEOUTS = "gnt-cluster modify -D drbd:net-custom='--ping-timeout 50'"


@pytest.fixture(scope="module")
def testvm(cluster_up, tmp_path_factory):
    _, master, vms, _ = cluster_up
    assert status(vms["node1"], DRBD_TIMEOUTS, timeout=600) == 0, \
        run(vms["node1"], "gnt-job info $(gnt-job list --no-headers -o id | tail -1) | tail -20")
    iso = testiso.build(tmp_path_factory.mktemp("iso") / "gi-test.iso")
    added = _iso_add(master, iso)
    return None, vms, iso, added


def test_the_iso_is_on_every_node_by_multicast(testvm):
    _, vms, iso, added = testvm
    for name in NODES:
        assert f"{name}: ok: /iso/{iso.name} by multicast" in added, added
    want = hashlib.sha256(iso.read_bytes()).hexdigest()
    for name in NODES:
        assert run(vms[name], f"sha256sum /iso/{iso.name}").split()[0] == want


def test_testvm_boots_from_cd_under_kvm(testvm):
    """The paper's Figure 2.13 and 3.x commands, names aside: -n pins the paper's placement
    (primary node2, secondary node1: what hail chose there), and 256M instead of 4G keeps
    the DRBD sync short under TCG: the instance boots from the CD and never writes its disk.
    256M is below the default instance policy's 1G, so the commands that check the policy
    (add, modify) say --ignore-ipolicy."""
    _, vms, iso, _ = testvm
    vm = vms["node1"]
    add = ("gnt-instance add -t drbd -o image+cd -s 256M -B minmem=256M,maxmem=512M "
           "--ignore-ipolicy --no-start --no-name-check --no-ip-check "
           f"-n node2.project.edu:node1.project.edu {TESTVM}")
    last_job = "gnt-job info $(gnt-job list --no-headers -o id | tail -1) | tail -30"
    assert status(vm, add, timeout=1500) == 0, run(vm, last_job)
    start = (f"gnt-instance start -H boot_order=cdrom,cdrom_image_path=/iso/{iso.name} "
             f"{TESTVM}")
    assert status(vm, start, timeout=600) == 0, run(vm, last_job)
    assert _instance(vm) == [TESTVM, "node2.project.edu", "node1.project.edu", "running"]
    info = run(vm, f"gnt-instance info {TESTVM}", timeout=120)
    assert "Hypervisor: kvm" in info and "actual state is up" in info, info
    assert _serial_shows_marker(vms["node2"]), run(vms["node2"], f"tail -20 "
                                                   f"/var/log/ganeti/kvm/{TESTVM}.log")
    # start -H was for that start only (the paper's info shows the defaults): the CD stays
    # in for the failover's fresh start, as for an installer that has not finished.
    assert status(vm, f"gnt-instance modify --ignore-ipolicy -H boot_order=cdrom,"
                      f"cdrom_image_path=/iso/{iso.name} {TESTVM}", timeout=300) == 0, \
        run(vm, last_job)


def test_testvm_nic_moves_to_the_management_bridge(testvm):
    _, vms, _, _ = testvm
    vm = vms["node1"]
    assert status(vm, f"gnt-instance modify --ignore-ipolicy --net 0:modify,link=br-man "
                      f"--hotplug -f {TESTVM}", timeout=600) == 0, \
        run(vm, "gnt-job info $(gnt-job list --no-headers -o id | tail -1)")
    assert run(vm, f"gnt-instance list --no-headers -o nic.link/0 {TESTVM}").strip() == \
        "br-man"


# Ganeti's RPC gives a node daemon 5 s to take a connection; a TCG node busy with a TCG guest
# now and then misses that in the resync after the memory transfer (ci22: "Cannot resync disks
# on node node1.project.edu: Error 28: SSL connection timeout"), the guest already moved.
RPC_TIMEOUT = "SSL connection timeout"


def _migrate(vm: VM) -> None:
    """`gnt-instance migrate` once the disks are in sync (as an admin checks /proc/drbd
    first); its output if it fails. A migration whose memory transfer completed but whose
    resync RPC timed out is finished as Ganeti's manual says, with `migrate --cleanup`, which
    must then succeed."""
    drbd = _drbd_in_sync(vm)
    out = run(vm, f"gnt-instance migrate -f {TESTVM} 2>&1; echo rc=$?", timeout=900)
    if not out.strip().endswith("rc=0") and "memory transfer complete" in out \
            and RPC_TIMEOUT in out:
        print(f"migrate: the resync RPC timed out; migrate --cleanup\n{out}", flush=True)
        out = run(vm, f"gnt-instance migrate --cleanup -f {TESTVM} 2>&1; echo rc=$?",
                  timeout=900)
    assert out.strip().endswith("rc=0"), f"{out}\n/proc/drbd before:\n{drbd}"


def test_testvm_migrates_live(testvm):
    """Section 3.6: migrate to node1 and back. On node1 the migrated guest runs: Ganeti
    lists it there, and its QEMU there is running and busy (its CPU runs). Not its serial marker:
    after a live migration between two TCG nodes the guest's serial line now and then stays
    silent for good (ci14, ci17: QEMU running, GRUB executing its loop, no byte on the
    socket), which says nothing of Ganeti's migration; the marker is checked on the boot
    from CD and after the failover's fresh start."""
    _, vms, _, _ = testvm
    vm = vms["node1"]
    _migrate(vm)
    assert _instance(vm) == [TESTVM, "node1.project.edu", "node2.project.edu", "running"]
    state, busy = _executing(vms["node1"])
    assert state == "VM status: running" and busy > 0, (state, busy, _qemu_state(vms["node1"]))
    _migrate(vm)                                                    # back: node2


def test_testvm_fails_over_when_its_primary_dies(testvm):
    """Section 3.7: node2, the primary, goes down; failover --ignore-consistency brings the
    instance up on node1 (the node stays down, and the rebuild below brings it back). Ganeti 3.0
    wants the dead node marked offline first, and asks on the terminal whether it is (no -f
    skips that question): the admin's answer is typed on node1's console."""
    _, vms, _, _ = testvm
    vm = vms["node1"]
    assert _instance(vm)[1] == "node2.project.edu"
    vms["node2"].stop()
    assert status(vm, "gnt-node modify -f -O yes node2.project.edu", timeout=600) == 0
    vm.child.sendline(f"echo ==BEGIN==; gnt-instance failover -f --ignore-consistency "
                      f"{TESTVM}; echo rc=$? ==END==")
    vm.expect("Is this already the case", timeout=600)
    vm.child.sendline("y")
    vm.expect(r"rc=(\d+) ==END==", timeout=900)
    assert vm.child.match.group(1) == b"0", run(vm, "gnt-job info $(gnt-job list "
                                                   "--no-headers -o id | tail -1) | tail -30")
    assert _instance(vm) == [TESTVM, "node1.project.edu", "node2.project.edu", "running"]
    assert _serial_shows_marker(vm), _qemu_state(vm)


# -- issue 16: the failed node rebuilt with one command ---------------------------------------

# The PC's power supply: Wake-on-LAN reaches a NIC on the provisioning LAN, here a host on the
# switch's untagged VLAN that prints the one packet it gets; the test then powers the VM on.
WOL_RECEIVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("0.0.0.0", 9))
print("ready", flush=True)
data, (source, _) = s.recvfrom(2048)
print(data.hex(), source, flush=True)
"""
WOL_PC = "10.99.0.77"


def _pinned(master: Master, fqdn: str) -> list[str]:
    """The host keys serve's known_hosts holds for a node (pinned at its join)."""
    path = str(master.state / "ssh" / "known_hosts")
    return [k.line for k in sshkeys.keys_for(path, fqdn)]


def _line(proc: subprocess.Popen, vms: list[VM], timeout: float,
          alive: subprocess.Popen | None = None, log: Path | None = None) -> str:
    """proc's next stdout line, the VMs' consoles read meanwhile; `alive` must not end
    before it (its `log` says why it did)."""
    import select
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while not select.select([proc.stdout], [], [], 0)[0]:
        assert time.monotonic() < deadline and proc.poll() is None, "no line"
        assert alive is None or alive.poll() is None, log.read_text() if log else "ended"
        for vm in vms:
            vm.pump(1)
    return proc.stdout.readline().decode()


def test_rebuild_brings_the_failed_node_back(cluster_up, testvm):
    """Issue 16: node2 died (the failover above left it off and offline, testvm's secondary);
    `ganeti-installer rebuild node2` alone brings it back: Wake-on-LAN (as captured on the
    LAN: the test then powers the VM on), the install over its own earlier one (the agent
    tears that down), the join with --readd and its new host key, testvm's disks back on it
    in sync, and gnt-cluster verify clean. It needs a fresh install: that is what a rebuild
    is; it runs on the cluster test's nodes, after their other checks."""
    cluster, master, vms, _ = cluster_up
    _, _, iso, _ = testvm
    node, vm1 = cluster.node("node2"), vms["node1"]
    assert master.switch is not None
    before = _pinned(master, node.fqdn)
    assert before, (master.state / "ssh" / "known_hosts").read_text()
    pc = master.switch.host("node2-power", UNTAGGED, [f"{WOL_PC}/24"])
    receiver = pc.spawn([sys.executable, "-c", WOL_RECEIVER], stdout=subprocess.PIPE,
                        bufsize=0)          # unbuffered: select() sees each line
    log = master.work / "rebuild.log"
    proc = None
    try:
        assert _line(receiver, [vm1], 60).strip() == "ready"      # listening before rebuild
        started = time.monotonic()
        proc = master.host.spawn(CLI + ["rebuild", str(master.path), str(master.outdir),
                                        "node2", "--state", str(master.state), "--url",
                                        "http://10.99.0.1:8080"],
                                 cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                 start_new_session=True)      # its ssh children end with it
        payload, source = _line(receiver, [vm1], 900, alive=proc, log=log).split()
        assert bytes.fromhex(payload) == b"\xff" * 6 + bytes.fromhex(node.mac.replace(":", "")) * 16
        assert source == "10.99.0.1", source
        woken = time.monotonic()
        vm2 = pxe_vm(master.switch, master.work, node, 2, master.work / "node2.qcow2", "rebuild")
        vms["node2"] = vm2                      # the fixture stops it
        vm2.expect("holds an earlier install for this cluster: tearing it down", timeout=1800)
        vm2.expect(f"installed {node.fqdn}", timeout=1800)
        vm2.child.expect(pexpect.EOF, timeout=300)
        vm2.stop()
        installed = time.monotonic()
        vm2 = vms["node2"] = pxe_vm(master.switch, master.work, node, 2,
                                    master.work / "node2.qcow2", "rebuilt")
        login(vm2, node.name)
        _booted_pxe_then_disk(vm2)
        joined = None
        deadline = time.monotonic() + 2400
        while proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            if joined is None and master.node("node2")["state"] == "joined":
                joined = time.monotonic()
            vm1.pump(2)
            vm2.pump(2)
    finally:
        receiver.kill()
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    said = log.read_text()
    assert proc.returncode == 0, said
    done = time.monotonic()
    assert f"Wake-on-LAN packet for {node.mac} sent on eth0" in said, said
    assert f"+ gnt-instance activate-disks {TESTVM}" in said, said
    assert f"+ gnt-instance replace-disks -s {TESTVM}" in said, said
    assert "node2: rebuilt, joined and its instances' disks replaced" in said, said
    listed = run(vm1, "gnt-node list --no-headers -o name,offline", timeout=300).split()
    assert listed == ["node1.project.edu", "N", "node2.project.edu", "N"], listed
    assert _instance(vm1) == [TESTVM, "node1.project.edu", "node2.project.edu", "running"]
    drbd = _drbd_in_sync(vm1, timeout=60)
    assert "ds:UpToDate/UpToDate" in drbd, drbd
    assert status(vm1, "gnt-cluster verify", timeout=900) == 0
    # The join pinned the key the new install reported, not the old one; and the rebuilt
    # node got the cluster's ISO at its join.
    after = _pinned(master, node.fqdn)
    assert after and after != before, (before, after)
    want = hashlib.sha256(iso.read_bytes()).hexdigest()
    deadline = time.monotonic() + 300       # serve sends it once the node is joined
    while (got := run(vm2, f"sha256sum /iso/{iso.name} 2>&1")).split()[:1] != [want]:
        assert time.monotonic() < deadline, got
        vm1.pump(5)
    rebuild = {"woken": woken, "installed": installed, "joined": joined or done, "in sync": done}
    figures = {"rebuild": {k: round(t - started) for k, t in rebuild.items()},
               "first install": {k: round(s) for k, s in master.first_install["node2"].items()}}
    print(f"rebuild of node2 (seconds from the command): {figures['rebuild']}; its first "
          f"install (from power-on, beside node1's): {figures['first install']}")
    if os.environ.get("GI_REBUILD_FIGURES"):        # bench/bench_rebuild.py reads them
        Path(os.environ["GI_REBUILD_FIGURES"]).write_text(json.dumps(figures))
