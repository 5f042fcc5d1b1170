"""The netboot image boots under QEMU (TCG, 1 GiB) to the agent; read on the serial console.
And an install from it, on a PC whose clock is years behind, rides out its master going away.
(A PC with no disk at all is refused by disks.choose: tests/test_agent_disks.py; a refusal
reported from a booted netboot: tests/test_disk_safety_vm.py.)"""

from __future__ import annotations

import re
import socket
import time

import pexpect
import pytest

from installer import __version__
from installer.cluster import config

from .conftest import example_path
from .vm import checks
from .vm.console import login
from .vm.install import boot_disk, user_nic
from .vm.qemu import VM, make_disk
from .vm.standin import StandinMaster

pytestmark = pytest.mark.vm

CONSOLE = "console=ttyS0,115200n8"


@pytest.fixture
def master(built):
    outdir, _ = built
    base_url = config.load(example_path("cluster.toml")).provisioning.base_url
    with StandinMaster(outdir, base_url) as m:
        yield m


def boot(built, tmp_path, append: str, mac: str = "52:54:00:12:34:56",
         rtc: str | None = None) -> VM:
    outdir, _ = built
    return VM("netboot", tmp_path, memory=1024, kernel=str(outdir / "netboot/vmlinuz"),
              initrd=str(outdir / "netboot/initrd"), append=append,
              nics=[f"user,model=virtio-net-pci,mac={mac}"], rtc=rtc).start()


def test_netboot_without_plan_says_so(built, tmp_path):
    vm = boot(built, tmp_path, CONSOLE)
    try:
        vm.expect(f"ganeti-installer agent {__version__}", timeout=420)
        vm.expect("no plan: the kernel command line has no installer.plan=", timeout=60)
    finally:
        vm.stop()


def test_an_install_rides_out_its_master_going_away(built, tmp_path):
    """A PC powered on 30 s before its master, whose master is then killed twice mid-install
    (as the OS image's checksum is asked for, and 40% into the image), back 20 s later each
    time: the install finishes with no hand, writes the image once from the cut on, and the
    node passes the usual checks.

    It needs a boot: what is under test is the netboot image's agent, with its own Python,
    requests and zstd, over a real NIC to a master that vanishes (the stream cut with the
    network in between, the systemd unit that must not give up). A fresh install on QEMU's
    user network (not the office LAN of test_install_vm, whose runs are defined by its power
    cuts) lets the stand-in master, in this process, go away and come back on its port."""
    outdir, _ = built
    cluster = config.load(example_path("cluster.toml"))
    node = next(n for n in cluster.nodes if n.name == "node1")
    image = outdir / "images" / f"{cluster.release.name}.ext4.zst"
    size = image.stat().st_size
    with socket.socket() as s:          # the master's port, free until it comes up
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    master = StandinMaster(outdir, cluster.provisioning.base_url, port=port)
    checksum = master.outage(".sha256", seconds=20)
    stream = master.outage(f"images/{image.name}", seconds=20, after_bytes=int(size * 0.4))
    disk = make_disk(tmp_path / "node1.qcow2", "40G")
    # This PC's CMOS battery is flat too: its clock starts in 2009 (systemd moves it on to
    # its own build date), and the agent takes the master's time from the plan's answer
    # before it reports anything.
    vm = VM("outage", tmp_path, memory=1536, cpus=2, disks=[disk], nics=[user_nic(node.mac)],
            kernel=str(outdir / "netboot/vmlinuz"), initrd=str(outdir / "netboot/initrd"),
            append=f"{CONSOLE} installer.plan={master.url}/plans/node1.json",
            rtc="2009-01-01T00:00:00").start()
    try:
        # QEMU's user network answers no SYN for a port nothing listens on: the agent's
        # connect times out (on a LAN: connection refused).
        vm.expect(f"plan: {master.url}/plans/node1.json", timeout=600)
        vm.expect(r"waiting for the master since \S+ UTC \(\d+s\): the plan: (connection "
                  r"refused|timed out)", timeout=600)
        vm.pump(30)                                 # booted 30 s before its master
        with master:
            vm.expect(r"the master answered after \d+s: the plan", timeout=120)
            vm.expect(r"clock: this machine said [-\d]+ \S+ UTC, \d+ days behind the "
                      r"master; set to the master's .* UTC, and the hardware clock too",
                      timeout=60)
            vm.expect(r"waiting for the master since .*: the OS image's checksum", timeout=600)
            vm.expect(r"the master answered after \d+s: the OS image's checksum", timeout=120)
            vm.expect(r"waiting for the master since .*: the OS image: ", timeout=900)
            # " of": a number at the end of the pattern would match before its last digits
            # arrived on the serial line.
            vm.expect(r"os image: resuming at byte (\d+) of", timeout=120)
            resumed_at = int(vm.child.match.group(1))
            vm.expect(r"os image: fetched (\d+) bytes for an image of (\d+) bytes "
                      r"\((\d+) resumed, (\d+) restarted\)", timeout=900)
            fetched, written, resumes, restarts = map(int, vm.child.match.groups())
            vm.expect(f"installed {node.fqdn}", timeout=1500)
            vm.child.expect(pexpect.EOF, timeout=180)
            assert master.wait_for("node1", ("install", "installed"), timeout=120)
    finally:
        vm.stop()
    assert checksum.up and stream.up, "the master did not go away at both points"
    assert (written, resumes, restarts) == (size, 1, 0)
    # Written once from the cut on: the second request asks for the bytes after those the
    # agent had; only what was in flight at the cut (in socket buffers) crossed twice.
    gets = [(asked, sent) for path, asked, sent in master.served if path.endswith(image.name)]
    assert gets == [(None, stream.sent), (f"bytes={resumed_at}-", size - resumed_at)], gets
    in_flight = stream.sent - resumed_at
    assert fetched == size and 0 <= in_flight <= 8 << 20, (fetched, in_flight)
    print(f"image {size} bytes; the master sent {stream.sent + size - resumed_at} "
          f"({in_flight} in flight at the cut); the agent fed {fetched} to zstd")
    waits = [r["message"] for _, r in master.reports if r["step"].endswith("/wait")]
    assert any("(the OS image's checksum)" in m for m in waits), waits
    # Told as the outage it was (20 s and the pause after it), not the download after it.
    assert any(re.fullmatch(r"waited for the master (\d+s|1m\d\ds) \(the OS image\)", m)
               for m in waits), waits
    started = next(r for _, r in master.reports if r["step"] == "install")
    assert "waited for the master" in started["message"] and "(the plan)" in started["message"]
    assert abs(started["time"] - time.time()) < 3600, "the node reported in its own time"
    vm = boot_disk(tmp_path, node, disk)
    try:
        login(vm, node.name)
        checks.volume_group(vm, cluster)
        checks.drbd(vm, cluster)
        checks.hostname(vm, cluster, node)
        checks.sshd(vm)
    finally:
        vm.stop()
