"""Finding the install disk by udev properties, never by a guessed /dev/sdX.

Candidates are whole, writable, non-removable disks that are not the boot medium. The plan's
selector picks one by serial, WWN or by-path link; without one, the largest candidate wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Set

IGNORED_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "drbd")


class DiskError(Exception):
    """No disk fits the plan; the message lists what was found and why it was passed over."""


@dataclass
class Disk:
    devnode: str
    size: int
    serial: str = ""
    wwn: str = ""
    by_path: str = ""
    model: str = ""
    bus: str = ""
    removable: bool = False
    read_only: bool = False
    links: List[str] = field(default_factory=list)

    def describe(self) -> str:
        gib = self.size / (1 << 30)
        what = ", ".join(x for x in (self.model, self.bus, f"serial {self.serial}"
                                     if self.serial else "") if x)
        return f"{self.devnode} ({gib:.1f} GiB{', ' + what if what else ''})"


def _from_udev(device) -> Disk:
    props = device.properties
    attrs = device.attributes

    def attr(name: str) -> str:
        try:
            value = attrs.get(name)
        except KeyError:
            value = None
        return value.decode().strip() if value else ""

    links = list(device.device_links)
    by_path = next((link for link in links if link.startswith("/dev/disk/by-path/")), "")
    return Disk(
        devnode=device.device_node,
        size=int(attr("size") or 0) * 512,
        serial=props.get("ID_SERIAL_SHORT", "") or props.get("ID_SERIAL", ""),
        wwn=props.get("ID_WWN", ""),
        by_path=by_path,
        model=props.get("ID_MODEL", ""),
        bus=props.get("ID_BUS", ""),
        removable=attr("removable") == "1" or props.get("ID_BUS") == "usb",
        read_only=attr("ro") == "1",
        links=links,
    )


def list_disks() -> List[Disk]:
    import pyudev  # node side only: the build host never lists disks

    context = pyudev.Context()
    disks = []
    for device in context.list_devices(subsystem="block", DEVTYPE="disk"):
        if device.sys_name.startswith(IGNORED_PREFIXES) or not device.device_node:
            continue
        disks.append(_from_udev(device))
    return sorted(disks, key=lambda d: d.devnode)


def boot_medium_disks() -> set:
    """Whole disks holding a mounted filesystem: the USB stick we booted from, for one."""
    held: Set[str] = set()
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            sources = [line.split()[0] for line in f if line.startswith("/dev/")]
    except OSError:
        return held
    for source in sources:
        name = os.path.basename(os.path.realpath(source))
        held.add(_whole_disk_of(os.path.realpath(f"/sys/class/block/{name}")))
    return held


def _whole_disk_of(sys_block: str) -> str:
    """/dev/<disk> for a block device's sysfs directory (a partition's parent disk)."""
    if os.path.exists(os.path.join(sys_block, "partition")):
        sys_block = os.path.dirname(sys_block)
    return f"/dev/{os.path.basename(sys_block)}"


def root_disk(disks: List[Disk]) -> Disk:
    """The disk holding the running system's root file system (first-boot mode)."""
    dev = os.stat("/").st_dev
    sys_block = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    devnode = _whole_disk_of(sys_block)
    for d in disks:
        if d.devnode == devnode:
            return d
    raise DiskError(f"the root file system is on {devnode}, which is not a disk the agent can "
                    f"partition (found {'; '.join(d.describe() for d in disks) or 'none'})")


def choose(disks: List[Disk], match: dict, min_size: int,
           exclude: Optional[set] = None) -> Disk:
    """The disk the plan's selector names, or the largest fixed disk; DiskError otherwise."""
    exclude = exclude or set()
    skipped = []
    candidates = []
    for d in disks:
        if d.devnode in exclude:
            skipped.append(f"{d.describe()}: the boot medium")
        elif d.removable:
            skipped.append(f"{d.describe()}: removable")
        elif d.read_only:
            skipped.append(f"{d.describe()}: read-only")
        else:
            candidates.append(d)
    if match.get("serial"):
        candidates = [d for d in candidates if match["serial"] in (d.serial,)]
    elif match.get("wwn"):
        candidates = [d for d in candidates if d.wwn == match["wwn"]]
    elif match.get("path"):
        candidates = [d for d in candidates if match["path"] in d.links + [d.devnode]]
    found = "; ".join([d.describe() for d in disks]) or "no disks at all"
    if not candidates:
        raise DiskError(f"no disk matches the plan's selector {match}: found {found}"
                        + (f"; passed over: {'; '.join(skipped)}" if skipped else ""))
    disk = max(candidates, key=lambda d: d.size)
    if disk.size < min_size:
        raise DiskError(
            f"{disk.describe()} is too small: swap, root and a volume group Ganeti accepts "
            f"(at least 20 GiB) need {min_size / (1 << 30):.1f} GiB "
            f"({min_size} bytes), the disk has {disk.size / (1 << 30):.1f} GiB "
            f"({disk.size} bytes); nothing was written")
    return disk
