"""One more release end to end: the example cluster on Debian 13 (trixie), built with its own
OS image, installs node3 from blank in QEMU and passes the same checks as bookworm."""

from __future__ import annotations

import pytest

from installer.build import builder as build
from installer.cluster import config

from .conftest import example_data, example_path
from .vm import checks
from .vm.console import login
from .vm.install import boot_disk, netboot_install
from .vm.qemu import make_disk
from .vm.standin import StandinMaster

pytestmark = pytest.mark.vm

RELEASE = "trixie"
NODE = "node3"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    data = example_data()
    data["cluster"]["release"] = RELEASE
    cluster = config.parse(data, example_path("cluster.toml"))     # the host's real mirror
    work = tmp_path_factory.mktemp(RELEASE)
    outdir = work / "out"
    build.build(cluster, str(outdir), progress=lambda msg: print(msg, flush=True))
    node = next(n for n in cluster.nodes if n.name == NODE)
    disk = make_disk(work / f"{NODE}.qcow2", "40G")
    with StandinMaster(outdir, cluster.provisioning.base_url) as master:
        netboot_install(work, outdir, master, node, disk)
        vm = boot_disk(work, node, disk)
        try:
            login(vm, NODE)
            yield vm, cluster, node
        finally:
            vm.stop()


def test_trixie_node_runs_trixie(installed):
    from .vm.console import run
    vm, _, _ = installed
    out = run(vm, ". /etc/os-release; echo $VERSION_CODENAME; dpkg-query -W -f '${Version}' ganeti")
    assert out.split()[0] == RELEASE, out


def test_trixie_node_is_ganeti_ready(installed):
    vm, cluster, node = installed
    checks.ganeti_ready(vm, cluster, node)
