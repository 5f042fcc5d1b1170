"""The instance image `build` makes (`[[instance_image.images]] build = "bookworm"`), written
by the image OS definition's `create` as Ganeti runs it, boots as a PC: the disk then holds a
partition table, the image's own GRUB in the MBR and the root with its grub.cfg, and QEMU
(SeaBIOS, the disk alone) boots it through GRUB and the kernel to a login prompt on the
serial console, the one `gnt-instance console` shows.

Here on a disk file on the host, booted under TCG: inside the VM test cluster the same create
runs on a DRBD device (tests/test_cluster_vm.py checks that disk), but a boot there would be
an emulator inside an emulator.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from installer.build import images
from installer.cluster import config

from .conftest import example_path
from .test_osdef import create_env, osdef, run_os, variant  # noqa: F401 (osdef: a fixture)
from .vm.qemu import VM

pytestmark = pytest.mark.vm

MiB = 1 << 20
RELEASE = "bookworm"


@pytest.fixture(scope="module")
def built_tarball() -> images.Artifact:
    """The cached image (minutes on a cold cache, as the cluster test's build would)."""
    apt = config.load(example_path("cluster.toml")).apt      # the host's real mirror
    return images.build_instance_image(RELEASE, mirror=apt.mirror,
                                       security_mirror=apt.security_mirror, proxy=apt.proxy,
                                       progress=lambda msg: print(msg, flush=True))


def test_a_built_image_boots_to_a_login_prompt(osdef, tmp_path, built_tarball):  # noqa: F811
    folder = tmp_path / "images"
    name = "debian-12-x86_64.tar"
    (folder / name).symlink_to(built_tarball.path)
    (folder / f"{name}.sha256").write_text(f"{built_tarball.sha256}  {name}\n")
    variant(osdef, "deb", 'IMAGE_NAME="debian-12"\nIMAGE_TYPE="tarball"\n', tmp_path)
    disk = tmp_path / "disk0.raw"
    with open(disk, "wb") as f:
        f.truncate(2048 * MiB)
    loop = subprocess.run(["losetup", "--find", "--show", str(disk)], check=True,
                          capture_output=True, text=True).stdout.strip()
    try:
        done = run_os(osdef, "create", create_env(Path(loop), "deb"))
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    with open(disk, "rb") as f:
        mbr = f.read(512)
    assert b"GRUB" in mbr[:440], "no GRUB boot code in the MBR"
    grub_cfg, resolv = _from_partition(disk, tmp_path / "mnt")
    assert resolv == "../run/systemd/resolve/stub-resolv.conf"     # DHCP's DNS, not the build's
    uuid = subprocess.run(["blkid", "-p", "-O", str(MiB), "-o", "value", "-s", "UUID",
                           str(disk)], capture_output=True, text=True).stdout.strip()
    assert f"root=UUID={uuid}" in grub_cfg and "console=ttyS0" in grub_cfg, grub_cfg

    qcow = tmp_path / "disk0.qcow2"       # the test VMs' disks are qcow2
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(qcow)],
                   check=True)
    disk.unlink()
    vm = VM("instance", tmp_path / "vm", memory=512, disks=[qcow], nics=[]).start()
    try:
        vm.expect(r"GNU GRUB", timeout=300)
        vm.expect(r"Linux version \S+-cloud-amd64", timeout=300)
        vm.expect(r"testvm login:", timeout=600)
    finally:
        vm.stop()


def _from_partition(disk: Path, mnt: Path) -> tuple[str, str]:
    """From the root file system in partition 1 (at 1 MiB), mounted read-only: grub.cfg and
    where /etc/resolv.conf points."""
    mnt.mkdir()
    subprocess.run(["mount", "-o", f"ro,loop,offset={MiB}", str(disk), str(mnt)], check=True)
    try:
        return (mnt / "boot/grub/grub.cfg").read_text(), os.readlink(mnt / "etc/resolv.conf")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
