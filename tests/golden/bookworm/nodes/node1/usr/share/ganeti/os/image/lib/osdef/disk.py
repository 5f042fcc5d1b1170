"""Writing an instance image to the instance's disk: a whole disk as it is (raw), converted
(qcow2, with qemu-img from qemu-utils), or a root file system tarball unpacked into one
partition made here (an MBR written by this module, ext4 at 1 MiB, mounted through a loop
device at that offset, so a DRBD device, whose partitions the kernel never lists, works too).

A tarball instance gets no boot loader: it boots with the hypervisor's kernel (kernel_path)
or a boot loader of its own; raw and qcow2 images carry theirs.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import uuid
from typing import Callable, List

SECTOR = 512
PART_START = 1 << 20                   # 1 MiB, where partitioning tools start
MBR_LIMIT = (1 << 32) * SECTOR         # an MBR partition ends below 2 TiB
CHUNK = 1 << 20
# Ganeti runs OS scripts in an environment of its own making: find mkfs and mount anyway.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DiskError(Exception):
    pass


def size_of(path: str) -> int:
    """Bytes of a block device or a regular file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def run(argv: List[str], log: Callable[[str], None]) -> str:
    log("+ " + " ".join(argv))
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PATH": PATH})
    if proc.returncode != 0:
        raise DiskError(f"`{' '.join(argv)}` exited {proc.returncode}: {proc.stdout[-600:]}")
    return proc.stdout


def _fits(what: str, size: int, disk: str) -> None:
    room = size_of(disk)
    if size > room:
        raise DiskError(f"{what} holds {size} bytes, the disk {disk} only {room}: give the "
                        f"instance a disk of at least {-(-size // (1 << 20))} MiB (-s)")


def write_raw(image: str, disk: str, log: Callable[[str], None]) -> None:
    _fits(image, os.path.getsize(image), disk)
    log(f"writing {image} to {disk}")
    with open(image, "rb") as src, open(disk, "r+b") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
        dst.flush()
        os.fsync(dst.fileno())


def write_qcow2(image: str, disk: str, log: Callable[[str], None]) -> None:
    info = json.loads(run(["qemu-img", "info", "--output=json", "-f", "qcow2", image], log))
    _fits(image, int(info["virtual-size"]), disk)
    # -n: write into the existing disk (a device, or a file of the instance's size).
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-n", image, disk], log)


def mbr(disk_size: int) -> bytes:
    """A DOS partition table with one bootable Linux partition from 1 MiB to the end."""
    first = PART_START // SECTOR
    count = min(disk_size, MBR_LIMIT) // SECTOR - first
    if count <= 0:
        raise DiskError(f"a disk of {disk_size} bytes has no room for a partition")
    # CHS fields hold the "beyond 8 GiB" marker; every tool since the 1990s reads the LBAs.
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", first, count)
    return b"\0" * 446 + entry + b"\0" * 48 + b"\x55\xaa"


def write_tarball(image: str, disk: str, fstype: str, hostname: str,
                  log: Callable[[str], None]) -> None:
    size = size_of(disk)
    with open(disk, "r+b") as f:
        f.write(mbr(size))
    part = (min(size, MBR_LIMIT) - PART_START) // 1024 * 1024
    fs_uuid = str(uuid.uuid4())
    run([f"mkfs.{fstype}", "-q", "-F", "-U", fs_uuid, "-E", f"offset={PART_START}", disk,
         f"{part // 1024}k"], log)
    mnt = tempfile.mkdtemp(prefix="image-os-")
    try:
        run(["mount", "-t", fstype, "-o", f"loop,offset={PART_START},sizelimit={part}",
             disk, mnt], log)
        try:
            run(["tar", "-x", "-p", "--numeric-owner", "-f", image, "-C", mnt], log)
            _configure(mnt, fs_uuid, fstype, hostname)
        finally:
            run(["umount", mnt], log)
    finally:
        os.rmdir(mnt)


def _configure(root: str, fs_uuid: str, fstype: str, hostname: str) -> None:
    """What an unpacked root needs to be this instance: its fstab and its name."""
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    with open(os.path.join(etc, "fstab"), "w", encoding="utf-8") as f:
        f.write(f"# Written by the image OS definition.\nUUID={fs_uuid}\t/\t{fstype}\t"
                "errors=remount-ro\t0\t1\n")
    with open(os.path.join(etc, "hostname"), "w", encoding="utf-8") as f:
        f.write(hostname.split(".")[0] + "\n")


def stream(src, dst, size: int = -1) -> int:
    """Copy a stream to another; the byte count."""
    done = 0
    while size < 0 or done < size:
        block = src.read(CHUNK if size < 0 else min(CHUNK, size - done))
        if not block:
            break
        dst.write(block)
        done += len(block)
    return done
