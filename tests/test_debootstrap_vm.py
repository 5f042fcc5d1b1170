"""The debootstrap path: the example cluster with `install.method = "debootstrap"` and its
`apt.proxy` pointing at an apt-cacher-ng on the host's loopback installs node3 from blank in
QEMU, boots its disk and passes the same checks as an image install. This is the way a
release with no OS image (Debian 7, the paper's) is installed.

The install starts with the first VM test module and runs beside the other VM tests (conftest,
tests/vm/background.py); these tests run last and wait for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from installer.build import builder as build
from installer.cluster import config

from .conftest import example_data, example_path
from .vm import checks
from .vm.aptcache import apt_cacher
from .vm.background import Job
from .vm.console import login, run
from .vm.install import boot_disk, netboot_install
from .vm.qemu import make_disk
from .vm.standin import GUEST_HOST, StandinMaster

pytestmark = pytest.mark.vm

NODE = "node3"


INSTALL_TIMEOUT = 5400      # it shares the CPU with the rest of the suite


def install(built, work: Path) -> dict:
    """Plans for debootstrap through apt-cacher-ng, and node3 installed from blank."""
    with apt_cacher(work) as (port, transfers):
        data = example_data()
        data.setdefault("install", {})["method"] = "debootstrap"
        data.setdefault("apt", {})["proxy"] = f"http://{GUEST_HOST}:{port}"
        # Ganeti's fake hypervisor: QEMU and its ~80 libraries are a quarter of the packages
        # dpkg would configure under TCG; the image installs carry them.
        data["cluster"]["hypervisors"] = ["fake"]
        # The PC's own drivers only: MODULES=most is 13,000 execs, 15 minutes under TCG.
        data["install"]["initramfs_modules"] = "dep"
        cluster = config.parse(data, example_path("cluster.toml"))  # the host's real mirror
        outdir = work / "out"
        # Plans only: the netboot image is the session's (a debootstrap cluster has no OS
        # image, and the guest-side proxy address must not reach the image builds).
        build.build(cluster, str(outdir), images=False, progress=lambda msg: None)
        shutil.copytree(built[0] / "netboot", outdir / "netboot")
        node = next(n for n in cluster.nodes if n.name == NODE)
        disk = make_disk(work / f"{NODE}.qcow2", "40G")
        with StandinMaster(outdir, cluster.provisioning.base_url) as master:
            # One CPU: the install runs beside the other VM tests and must leave them a core.
            netboot_install(work, outdir, master, node, disk, timeout=INSTALL_TIMEOUT, cpus=1)
            reports = master.events(NODE)
        return {"work": work, "cluster": cluster, "node": node, "disk": disk,
                "reports": reports, "transfers": transfers.read_text(errors="replace")}


def start_install(built, work: Path) -> Job:
    """Called by conftest with the first VM module: the install runs beside the VM tests."""
    return Job("the debootstrap install of node3", lambda: install(built, work), work).start()


@pytest.fixture(scope="module")
def installed(background_installs):
    got = background_installs["debootstrap"].result(timeout=INSTALL_TIMEOUT + 600)
    vm = boot_disk(got["work"], got["node"], got["disk"])
    try:
        login(vm, NODE)
        yield vm, got["cluster"], got["node"], got["reports"], got["transfers"]
    finally:
        vm.stop()


def test_install_went_through_debootstrap_and_the_proxy(installed):
    _, _, _, reports, transfers = installed
    assert ("os", "done") in reports, reports
    # apt-cacher-ng's transfer log names every file it served: the release's index and
    # the packages, Ganeti's among them.
    assert "dists/bookworm/Release" in transfers or "dists/bookworm/InRelease" in transfers
    assert "/ganeti_" in transfers, transfers[-2000:]


def test_debootstrapped_node_runs_bookworm_with_ganeti(installed):
    vm, _, _, _, _ = installed
    out = run(vm, ". /etc/os-release; echo $VERSION_CODENAME; "
                  "dpkg-query -W -f '${Status}' ganeti drbd-utils")
    assert out.split()[0] == "bookworm", out
    assert out.count("install ok installed") == 2, out
    # dpkg's force-unsafe-io was for the install only
    assert run(vm, "ls /etc/dpkg/dpkg.cfg.d/").split() == [], run(vm, "ls /etc/dpkg/dpkg.cfg.d/")


def test_the_initramfs_holds_this_pcs_drivers_only(installed):
    vm, _, _, _, _ = installed
    out = run(vm, "cat /etc/initramfs-tools/conf.d/ganeti-installer-modules; "
                  "lsinitramfs /boot/initrd.img-$(uname -r) | grep -c '[.]ko'")
    assert "MODULES=dep" in out, out
    assert int(out.split()[-1]) < 300, out      # most: every storage, net and fs driver


def test_debootstrapped_node_is_ganeti_ready(installed):
    vm, cluster, node, _, _ = installed
    checks.ganeti_ready(vm, cluster, node)
