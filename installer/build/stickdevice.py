"""Writing the stick image onto a real stick (`usb --device /dev/sdX`), after checking the
device is one: a whole disk, removable or on the USB bus, big enough, and holding nothing
mounted or used as swap. A wrong /dev/sdX is the way to lose a disk: every refusal names the
device and writes nothing.

The checks read sysfs and /proc only (roots injectable for tests): `removable` is what the
kernel says of the medium; a USB disk reader that calls itself fixed is still on the usb bus
(its sysfs path runs through a USB port, what udev's ID_BUS=usb says).
"""

from __future__ import annotations

import os
import stat

from installer.cluster.errors import InstallerError

BLOCK = 4 << 20


def whole_disk(device: str, sys_root: str = "/sys") -> str:
    """The kernel's name of `device` (sdb), which must be a whole disk's block device."""
    try:
        st = os.stat(device)
    except OSError as e:
        raise InstallerError(f"--device {device}: {e.strerror}; name the stick's block "
                             "device, e.g. /dev/sdb (lsblk lists them)") from None
    if not stat.S_ISBLK(st.st_mode):
        raise InstallerError(f"--device {device} is not a block device; name the stick, "
                             "e.g. /dev/sdb (lsblk lists them), or use --output FILE")
    link = f"{sys_root}/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    sys_dir = os.path.realpath(link)
    name = os.path.basename(sys_dir)
    if os.path.exists(os.path.join(sys_dir, "partition")):
        parent = os.path.basename(os.path.dirname(sys_dir))
        raise InstallerError(f"--device {device} is a partition ({name}); name the whole "
                             f"stick, /dev/{parent}; nothing was written")
    return name


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def removable(name: str, sys_root: str = "/sys") -> bool:
    sys_dir = os.path.realpath(f"{sys_root}/block/{name}")
    return _read(os.path.join(sys_dir, "removable")) == "1" or "/usb" in sys_dir


def in_use(name: str, sys_root: str = "/sys", proc_root: str = "/proc") -> list[str]:
    """What holds the disk or one of its partitions: mounts, swap, holders (LVM, RAID)."""
    sys_dir = f"{sys_root}/block/{name}"
    names = {name} | {p for p in _listdir(sys_dir) if p.startswith(name)}
    found = []
    for line in _read(f"{proc_root}/self/mounts").splitlines():
        fields = line.split()
        if len(fields) > 1 and os.path.basename(fields[0]) in names:
            found.append(f"{fields[0]} is mounted on {fields[1]}")
    for line in _read(f"{proc_root}/swaps").splitlines()[1:]:
        if line.split() and os.path.basename(line.split()[0]) in names:
            found.append(f"{line.split()[0]} is in use as swap")
    for part in sorted(names):
        base = sys_dir if part == name else os.path.join(sys_dir, part)
        for holder in _listdir(os.path.join(base, "holders")):
            found.append(f"/dev/{part} is held by {holder}")
    return found


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def check(device: str, size: int, *, sys_root: str = "/sys", proc_root: str = "/proc") -> str:
    """The device's kernel name when the stick image of `size` bytes may go onto it;
    InstallerError naming the device and the reason otherwise."""
    name = whole_disk(device, sys_root)
    if not removable(name, sys_root):
        raise InstallerError(f"--device {device} ({name}) is not removable and not on the USB "
                             "bus: it looks like a fixed disk, not a stick; nothing was "
                             "written (check lsblk's RM and TRAN columns)")
    held = in_use(name, sys_root, proc_root)
    if held:
        raise InstallerError(f"--device {device} is in use: {'; '.join(held)}; unmount it "
                             "(umount, swapoff) and try again; nothing was written")
    capacity = int(_read(f"{sys_root}/block/{name}/size") or 0) * 512
    if capacity < size:
        raise InstallerError(f"--device {device} holds {capacity >> 20} MiB, the stick image "
                             f"needs {size >> 20} MiB: use a bigger stick; nothing was written")
    return name


def write(image: str, device: str, log=print) -> None:
    """Copy the image onto the device and flush it; O_EXCL fails if anything opened it
    meanwhile (the kernel's own check that nothing mounted it)."""
    size = os.path.getsize(image)
    fd = os.open(device, os.O_WRONLY | os.O_EXCL)
    try:
        with open(image, "rb") as src:
            done, said = 0, 0
            for block in iter(lambda: src.read(BLOCK), b""):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
                done += len(block)
                if done * 10 // size > said:
                    said = done * 10 // size
                    log(f"{device}: {said * 10}% written")
        os.fsync(fd)
    finally:
        os.close(fd)
