"""The netboot image boots under QEMU (TCG, 1 GiB) to the agent; read on the serial console."""

from __future__ import annotations

import time

import pytest

from installer import __version__
from installer.cluster import config

from .conftest import example_path
from .vm.qemu import VM
from .vm.standin import StandinMaster

pytestmark = pytest.mark.vm

CONSOLE = "console=ttyS0,115200n8"


@pytest.fixture
def master(built):
    outdir, _ = built
    with StandinMaster(outdir, config.load(example_path("cluster.toml")).provisioning.base_url) as m:
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


def test_netboot_fetches_the_plan_named_on_the_command_line(built, tmp_path, master):
    plan = master.plan("node1")
    url = f"{master.url}/plans/node1.json"
    # This PC's CMOS battery is flat: its clock starts in 2009 (systemd moves it on to its
    # own build date), and the agent takes the master's time from the plan's answer before
    # it reports anything.
    vm = boot(built, tmp_path, f"{CONSOLE} installer.plan={url}", mac=plan["node"]["mac"],
              rtc="2009-01-01T00:00:00")
    try:
        vm.expect(f"ganeti-installer agent {__version__}", timeout=420)
        vm.expect(f"plan: {url}", timeout=60)
        vm.expect(r"clock: this machine said [-\d]+ \S+ UTC, \d+ days behind the master; "
                  r"set to the master's .* UTC, and the hardware clock too", timeout=60)
        # This VM has no disk: the agent must say so, and report it to the master.
        vm.expect(r"identify: failed - DiskError: no disk matches .* no disks at all",
                  timeout=180)
        deadline = time.monotonic() + 60   # the report is posted after the console line
        while time.monotonic() < deadline and ("identify", "failed") not in master.events(
                "node1"):
            time.sleep(1)
    finally:
        vm.stop()
    assert ("install", "started") in master.events("node1")
    assert ("identify", "failed") in master.events("node1")
    started = next(r for _, r in master.reports if r["step"] == "install")
    assert abs(started["time"] - time.time()) < 600, "the node reported in its own time"
