"""Writing an instance image to the instance's disk: a whole disk as it is (raw), converted
(qcow2, with qemu-img from qemu-utils), or a root file system tarball unpacked into one
partition made here (an MBR written by this module, ext4 at 1 MiB, mounted through a loop
device at that offset, so a DRBD device, whose partitions the kernel never lists, works too).

A tarball that carries a kernel and GRUB for BIOS (as `build`'s Debian images do) gets that
GRUB in the MBR and its grub.cfg (install_grub). Another tarball gets no boot loader: it boots
with the hypervisor's kernel (kernel_path). Raw and qcow2 images carry theirs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
import uuid
from typing import Callable, Dict, List

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
            if _has_grub(mnt):
                install_grub(disk, mnt, fs_uuid, log)
            else:
                log("the image has no kernel and GRUB of its own: no boot loader written "
                    "(boot it with the hypervisor's kernel_path)")
        finally:
            run(["umount", mnt], log)
    finally:
        os.rmdir(mnt)


def inside(root: str, rel: str) -> str:
    """root/rel, refused if a symlink in the image leads it out of root (a tarball's
    `boot -> /boot` must not make create write into the node's own /boot)."""
    path = os.path.join(root, rel)
    real, top = os.path.realpath(path), os.path.realpath(root)
    if real != top and not real.startswith(top + os.sep):
        raise DiskError(f"the image's /{rel} leads out of its root (to {real}): the "
                        "tarball holds a symlink to an absolute path; fix the image")
    return path


def _has_grub(root: str) -> bool:
    """The unpacked root can boot itself: a kernel, grub-mkimage and GRUB's BIOS modules."""
    return bool(_kernels(root)) and os.path.isfile(os.path.join(root, GRUB_MKIMAGE)) \
        and os.path.isfile(os.path.join(root, GRUB_BIOS, "boot.img"))


GRUB_MKIMAGE = "usr/bin/grub-mkimage"
GRUB_BIOS = "usr/lib/grub/i386-pc"
BOOT_CODE = 440                 # boot.img's bytes before the disk signature and the table
DRIVE_CHECK = 0x66              # boot.img: a jump over the "boot drive is a hard disk" fix-up


def _kernels(root: str) -> List[str]:
    """The root's kernel versions, oldest first."""
    boot = os.path.join(root, "boot")
    names = os.listdir(boot) if os.path.isdir(boot) else []
    versions = [n[len("vmlinuz-"):] for n in names if n.startswith("vmlinuz-")]
    return sorted(versions, key=lambda v: [int(x) if x.isdigit() else x
                                           for x in re.split(r"(\d+)", v)])


def install_grub(disk: str, root: str, fs_uuid: str, log: Callable[[str], None]) -> None:
    """The root's own GRUB for BIOS, as grub-install lays it out but with no device probing
    (which needs the partition as a device of its own: a DRBD device shows none): core.img
    made by the root's grub-mkimage finds the file system by its UUID; boot.img's code goes
    into the MBR before the partition table, core.img into the gap before 1 MiB (where
    boot.img and core.img look for each other by default); the modules and a grub.cfg from
    the root's /etc/default/grub go to /boot/grub. `update-grub` in the instance later
    rewrites that grub.cfg from the same settings."""
    os.makedirs(inside(root, "boot/grub"), exist_ok=True)
    shutil.copytree(inside(root, GRUB_BIOS), inside(root, "boot/grub/i386-pc"),
                    dirs_exist_ok=True)
    early = inside(root, "boot/grub/i386-pc/early.cfg")
    with open(early, "w", encoding="utf-8") as f:
        f.write(f"search.fs_uuid {fs_uuid} root\nset prefix=($root)/boot/grub\n")
    run(["chroot", root, "grub-mkimage", "-O", "i386-pc", "-d", "/" + GRUB_BIOS,
         "-c", "/boot/grub/i386-pc/early.cfg", "-p", "/boot/grub",
         "-o", "/boot/grub/i386-pc/core.img", "biosdisk", "part_msdos", "ext2",
         "search_fs_uuid"], log)
    with open(inside(root, "boot/grub/i386-pc/core.img"), "rb") as f:
        core = f.read()
    if len(core) > PART_START - SECTOR:
        raise DiskError(f"the image's GRUB core is {len(core)} bytes: more than the "
                        f"{PART_START - SECTOR} before the partition")
    with open(inside(root, GRUB_BIOS + "/boot.img"), "rb") as f:
        boot = bytearray(f.read(BOOT_CODE))
    # As grub-bios-setup does for a hard disk: no jump over the fix-up for BIOSes that pass
    # a wrong boot drive.
    boot[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"
    with open(disk, "r+b") as f:
        f.write(boot)
        f.seek(SECTOR)
        f.write(core)
        f.flush()
        os.fsync(f.fileno())
    with open(inside(root, "boot/grub/grub.cfg"), "w", encoding="utf-8") as f:
        f.write(grub_cfg(root, fs_uuid))
    log(f"GRUB written to {disk}, booting {_kernels(root)[-1]}")


def grub_cfg(root: str, fs_uuid: str) -> str:
    """A grub.cfg for the newest kernel, with the root's GRUB settings (terminal, timeout,
    kernel command line) as update-grub would apply them."""
    conf = _shell_assignments(os.path.join(root, "etc/default/grub"))
    version = _kernels(root)[-1]
    cmdline = " ".join(x for x in (conf.get("GRUB_CMDLINE_LINUX", ""),
                                   conf.get("GRUB_CMDLINE_LINUX_DEFAULT", "")) if x)
    lines = ["# Written by the image OS definition at create; update-grub in the instance",
             "# writes it anew from /etc/default/grub.",
             f"set timeout={conf.get('GRUB_TIMEOUT', '5')}", "insmod part_msdos",
             "insmod ext2"]
    terminal = conf.get("GRUB_TERMINAL", "")
    if "serial" in terminal.split():
        lines += [conf.get("GRUB_SERIAL_COMMAND", "serial"), f"terminal_input {terminal}",
                  f"terminal_output {terminal}"]
    lines += [f"search --no-floppy --fs-uuid --set=root {fs_uuid}",
              f"menuentry '{conf.get('GRUB_DISTRIBUTOR', 'Debian')} GNU/Linux, {version}' {{",
              f"    linux /boot/vmlinuz-{version} root=UUID={fs_uuid} ro {cmdline}".rstrip()]
    if os.path.exists(os.path.join(root, f"boot/initrd.img-{version}")):
        lines.append(f"    initrd /boot/initrd.img-{version}")
    return "\n".join(lines + ["}", ""])


def _shell_assignments(path: str) -> dict:
    """KEY=value lines of a shell settings file, unquoted (nothing is run)."""
    out: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) == 1 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0], re.S):
            key, _, value = words[0].partition("=")
            out[key] = value
    return out


def _configure(root: str, fs_uuid: str, fstype: str, hostname: str) -> None:
    """What an unpacked root needs to be this instance: its fstab, its name, and the mount
    points that root tarballs leave out (diskimage-builder's among them)."""
    os.makedirs(inside(root, "etc"), exist_ok=True)
    for point in ("proc", "sys", "dev", "run", "tmp"):
        os.makedirs(inside(root, point), exist_ok=True)
    os.chmod(inside(root, "tmp"), 0o1777)
    with open(inside(root, "etc/fstab"), "w", encoding="utf-8") as f:
        f.write(f"# Written by the image OS definition.\nUUID={fs_uuid}\t/\t{fstype}\t"
                "errors=remount-ro\t0\t1\n")
    with open(inside(root, "etc/hostname"), "w", encoding="utf-8") as f:
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
