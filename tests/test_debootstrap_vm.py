"""The debootstrap path: the example cluster with `install.method = "debootstrap"` and its
`apt.proxy` pointing at an apt-cacher-ng on the host's loopback installs node3 from blank in
QEMU, boots its disk and passes the same checks as an image install. This is the way a
release with no OS image (Debian 7, the paper's) is installed."""

from __future__ import annotations

import shutil

import pytest

from installer import build, config

from .conftest import example_data, example_path
from .vm import checks
from .vm.aptcache import apt_cacher
from .vm.console import login, run
from .vm.install import boot_disk, netboot_install
from .vm.qemu import make_disk
from .vm.standin import GUEST_HOST, StandinMaster

pytestmark = pytest.mark.vm

NODE = "node3"


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    work = tmp_path_factory.mktemp("debootstrap")
    with apt_cacher(work) as (port, transfers):
        data = example_data()
        data.setdefault("install", {})["method"] = "debootstrap"
        data.setdefault("apt", {})["proxy"] = f"http://{GUEST_HOST}:{port}"
        cluster = config.parse(data, example_path("cluster.toml"))  # the host's real mirror
        outdir = work / "out"
        # Plans only: the netboot image is the session's (a debootstrap cluster has no OS
        # image, and the guest-side proxy address must not reach the image builds).
        build.build(cluster, str(outdir), images=False, progress=print)
        shutil.copytree(built[0] / "netboot", outdir / "netboot")
        node = next(n for n in cluster.nodes if n.name == NODE)
        disk = make_disk(work / f"{NODE}.qcow2", "40G")
        with StandinMaster(outdir, cluster.provisioning.base_url) as master:
            netboot_install(work, outdir, master, node, disk, timeout=3000)
            reports = master.events(NODE)
        vm = boot_disk(work, node, disk)
        try:
            login(vm, NODE)
            yield vm, cluster, node, reports, transfers.read_text(errors="replace")
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


def test_debootstrapped_node_is_ganeti_ready(installed):
    vm, cluster, node, _, _ = installed
    checks.ganeti_ready(vm, cluster, node)
