"""The agent's disk choice and its refusals, in QEMU: the right disk is chosen, and a disk it
must not touch (foreign data, too small) is left exactly as it was, with the reason reported.

Each VM carries a blank USB stick beside its fixed disk: removable disks are never candidates,
so the choice falls on the fixed disk, whose refusal then names it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from installer.agent import rules
from installer.cluster import config

from .conftest import example_path
from .vm.qemu import VM, make_disk
from .vm.standin import StandinMaster

pytestmark = pytest.mark.vm

CONSOLE = "console=ttyS0,115200n8"
NODE = "node3"


@pytest.fixture(scope="module")
def master(built):
    outdir, _ = built
    base_url = config.load(example_path("cluster.toml")).provisioning.base_url
    with StandinMaster(outdir, base_url) as m:
        yield m


def netboot(built, work: Path, master: StandinMaster, name: str, disks: list[Path],
            stick: Path, *, past_storage: bool = False,
            console: str | None = None) -> list[tuple[str, dict]]:
    """Boot the netboot image until the agent gives up (or, `past_storage`, until its
    storage stage is done); the reports it sent. `console`: a line the console must show
    first."""
    outdir, _ = built
    plan = master.plan(NODE)
    seen = len(master.reports)
    vm = VM(name, work, memory=1024, cpus=2, disks=disks, usb_disks=[stick],
            nics=[f"user,model=virtio-net-pci,mac={plan['node']['mac']}"],
            kernel=str(outdir / "netboot/vmlinuz"), initrd=str(outdir / "netboot/initrd"),
            append=f"{CONSOLE} installer.plan={master.url}/plans/{NODE}.json").start()
    try:
        if console:
            vm.expect(console, timeout=900)
        if past_storage:
            deadline = time.monotonic() + 900
            while not any(r["step"] == "storage" and r["status"] in ("done", "failed")
                          for r in reports(master, seen)):
                assert time.monotonic() < deadline, "the storage stage did not end"
                vm.pump(1)
            return reports(master, seen)
        vm.expect(r"error: install failed", timeout=900)
        deadline = time.monotonic() + 60    # the report is posted after the console line
        while not any(r["status"] == "failed" for r in reports(master, seen)):
            assert time.monotonic() < deadline, "the refusal was not reported"
            vm.pump(0.5)
    finally:
        vm.stop()
    return reports(master, seen)


def reports(master: StandinMaster, since: int) -> list[dict]:
    return [r for path, r in master.reports[since:] if path.endswith(f"/{NODE}/events")]


def same_content(a: Path, b: Path) -> bool:
    """Whether two disk images hold the same bytes as the guest sees them."""
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)]).returncode == 0


def foreign_disk(work: Path) -> Path:
    """A 40 GiB disk whose whole device holds an ext4 file system with a file on it."""
    raw = work / "foreign.raw"
    subprocess.run(["truncate", "-s", "40G", str(raw)], check=True)
    data = work / "data"
    data.mkdir()
    (data / "accounts.txt").write_text("the office's only copy\n")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "office", "-d", str(data), str(raw)],
                   check=True)
    disk = work / "foreign.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], check=True)
    raw.unlink()
    return disk


def copy(disk: Path, dest: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(disk), str(dest)], check=True)
    return dest


def test_foreign_data_is_refused_and_left_byte_identical(built, master, tmp_path):
    disk = foreign_disk(tmp_path)
    before = copy(disk, tmp_path / "before.qcow2")
    stick = make_disk(tmp_path / "stick.qcow2", "1G")
    reports = netboot(built, tmp_path, master, "foreign", [disk], stick)
    chosen = next(r for r in reports if r["step"] == "identify" and r["status"] == "done")
    assert "/dev/vda (40.0 GiB" in chosen["message"], chosen
    failed = next(r for r in reports if r["status"] == "failed")
    assert failed["step"] == "storage", failed
    assert "refusing to install on /dev/vda" in failed["message"]
    assert "ext4" in failed["message"] and "nothing was written" in failed["message"]
    assert same_content(before, disk), "the agent changed a disk it refused"
    assert same_content(make_disk(tmp_path / "blank.qcow2", "1G"), stick)


def test_too_small_disk_is_refused_with_the_sizes(built, master, tmp_path):
    disk = make_disk(tmp_path / "small.qcow2", "20G")
    before = copy(disk, tmp_path / "before.qcow2")
    stick = make_disk(tmp_path / "stick.qcow2", "1G")
    reports = netboot(built, tmp_path, master, "small", [disk], stick)
    failed = next(r for r in reports if r["status"] == "failed")
    assert failed["step"] == "identify", failed
    message = failed["message"]
    assert "/dev/vda (20.0 GiB" in message and "is too small" in message, message
    assert "need 32.5 GiB" in message and "the disk has 20.0 GiB" in message, message
    assert "nothing was written" in message
    assert same_content(before, disk)


# -- issue 16: this cluster's earlier install is the agent's to tear down; others' are not ---

def earlier_install(work: Path, plan: dict, cluster_fqdn: str) -> Path:
    """A 40 GiB disk as an earlier install of the plan's layout left it: gi- partitions, the
    disk GUID of `cluster_fqdn` (another install's half), an ext4 root holding a file."""
    raw = work / f"earlier-{cluster_fqdn}.raw"
    subprocess.run(["truncate", "-s", "40G", str(raw)], check=True)
    argv = ["sgdisk", "--clear", f"--disk-guid={rules.disk_guid(cluster_fqdn, '0f' * 8)}"]
    for a in plan["storage"]["actions"]:
        if a["type"] == "partition":
            n, end = a["number"], f"+{a['size'] // 1024}K" if a["size"] else "0"
            argv += [f"--new={n}:0:{end}", f"--change-name={n}:gi-{a['id']}"]
    subprocess.run(argv + [str(raw)], check=True, stdout=subprocess.DEVNULL)
    start, size = subprocess.run(["partx", "--raw", "--noheadings", "--bytes", "--nr", "4",
                                  "--output", "START,SIZE", str(raw)], capture_output=True,
                                 text=True, check=True).stdout.split()
    data = work / "old-root"
    data.mkdir(exist_ok=True)
    (data / "old-node.txt").write_text("the node before its rebuild\n")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(data), "-E",
                    f"offset={int(start) * 512}", str(raw), f"{int(size) // 1024}k"],
                   check=True)
    disk = work / f"earlier-{cluster_fqdn}.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], check=True)
    raw.unlink()
    return disk


def test_this_clusters_earlier_install_is_torn_down_and_laid_out(built, master, tmp_path):
    plan = master.plan(NODE)
    disk = earlier_install(tmp_path, plan, plan["cluster"]["name"])
    stick = make_disk(tmp_path / "stick.qcow2", "1G")
    reports = netboot(built, tmp_path, master, "earlier", [disk], stick, past_storage=True,
                      console=r"holds an earlier install for this cluster: tearing it down")
    assert not any(r["status"] == "failed" for r in reports), reports
    assert any(r["step"] == "storage" and r["status"] == "done" for r in reports)
    assert same_content(make_disk(tmp_path / "blank.qcow2", "1G"), stick)


def test_another_clusters_install_is_refused_and_left_byte_identical(built, master, tmp_path):
    disk = earlier_install(tmp_path, master.plan(NODE), "cluster.other.org")
    before = copy(disk, tmp_path / "before.qcow2")
    stick = make_disk(tmp_path / "stick.qcow2", "1G")
    failed = next(r for r in netboot(built, tmp_path, master, "other", [disk], stick)
                  if r["status"] == "failed")
    assert failed["step"] == "storage", failed
    assert "another cluster's install" in failed["message"], failed["message"]
    assert same_content(before, disk), "the agent changed another cluster's disk"


def test_an_ntfs_disk_is_refused_and_left_byte_identical(built, master, tmp_path):
    raw = tmp_path / "ntfs.raw"
    subprocess.run(["truncate", "-s", "40G", str(raw)], check=True)
    subprocess.run(["mkntfs", "-Q", "-F", "-q", "-L", "office", str(raw)], check=True)
    disk = tmp_path / "ntfs.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], check=True)
    raw.unlink()
    before = copy(disk, tmp_path / "before.qcow2")
    stick = make_disk(tmp_path / "stick.qcow2", "1G")
    failed = next(r for r in netboot(built, tmp_path, master, "ntfs", [disk], stick)
                  if r["status"] == "failed")
    assert failed["step"] == "storage" and "ntfs" in failed["message"], failed
    assert same_content(before, disk), "the agent changed an NTFS disk"
