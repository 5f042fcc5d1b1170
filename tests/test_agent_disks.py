"""The install disk the agent chooses, over a table of the disk layouts offices have: never a
USB stick, never the boot medium, the disk the plan names by serial, WWN or by-path link, else
the largest fixed disk; and an error naming every disk found and why it was passed over."""

from __future__ import annotations

import re

import pytest

from installer.agent.disks import Disk, DiskError, choose

GiB = 1 << 30
MIN = 32 * GiB      # the bundled example's min_disk, rounded: swap, root and a 20 GiB VG
PATH = "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"


def sata(dev: str, gib: int, serial: str = "", wwn: str = "", **kw) -> Disk:
    links = [PATH] if dev == "/dev/sda" else [f"/dev/disk/by-path/pci-0000:00:1f.2-ata-{dev[-1]}"]
    return Disk(dev, gib * GiB, serial=serial, wwn=wwn, by_path=links[0], model="WDC_WD5000",
                bus="ata", links=links, **kw)


def usb(dev: str, gib: int, serial: str = "USBSTICK1") -> Disk:
    return Disk(dev, gib * GiB, serial=serial, model="Cruzer", bus="usb", removable=True)


def nvme(dev: str, gib: int, serial: str = "S4EWNX0N") -> Disk:
    return Disk(dev, gib * GiB, serial=serial, model="Samsung SSD 970", bus="nvme")


class Refused(str):
    """The DiskError's message, as a pattern."""


# (case, disks, the plan's selector, boot medium, the disk chosen or the error's pattern)
LAYOUTS = [
    ("one blank fixed disk", [sata("/dev/sda", 500)], {}, set(), "/dev/sda"),
    ("a USB stick beside the disk", [sata("/dev/sda", 250), usb("/dev/sdb", 64)], {}, set(),
     "/dev/sda"),
    ("a USB stick larger than the disk", [sata("/dev/sda", 120), usb("/dev/sdb", 256)], {},
     set(), "/dev/sda"),
    ("only a USB stick", [usb("/dev/sdb", 64)], {}, set(),
     Refused(r"no disk matches the plan's selector \{\}: found /dev/sdb \(64.0 GiB, Cruzer, usb, "
     r"serial USBSTICK1\); passed over: /dev/sdb .*: removable")),
    ("NVMe beside SATA: the larger", [nvme("/dev/nvme0n1", 512), sata("/dev/sda", 1000)], {},
     set(), "/dev/sda"),
    ("NVMe beside SATA, the plan names the NVMe by serial",
     [nvme("/dev/nvme0n1", 512), sata("/dev/sda", 1000, serial="WD-1")],
     {"serial": "S4EWNX0N"}, set(), "/dev/nvme0n1"),
    ("two disks: the larger", [sata("/dev/sda", 250), sata("/dev/sdb", 500)], {}, set(),
     "/dev/sdb"),
    ("two disks, the smaller named by serial",
     [sata("/dev/sda", 250, serial="WD-A"), sata("/dev/sdb", 500, serial="WD-B")],
     {"serial": "WD-A"}, set(), "/dev/sda"),
    ("two disks, the smaller named by WWN",
     [sata("/dev/sda", 250, wwn="0x50014ee2b1"), sata("/dev/sdb", 500, wwn="0x50014ee2b2")],
     {"wwn": "0x50014ee2b1"}, set(), "/dev/sda"),
    ("two disks, the smaller named by its by-path link",
     [sata("/dev/sda", 250), sata("/dev/sdb", 500)], {"path": PATH}, set(), "/dev/sda"),
    ("the boot medium is passed over even when fixed and larger",
     [sata("/dev/sda", 250), sata("/dev/sdb", 1000)], {}, {"/dev/sdb"}, "/dev/sda"),
    ("a read-only disk is passed over",
     [sata("/dev/sda", 1000, read_only=True), sata("/dev/sdb", 500)], {}, set(), "/dev/sdb"),
    ("a USB stick named by serial is still refused",
     [sata("/dev/sda", 250), usb("/dev/sdb", 64, serial="USB-9")], {"serial": "USB-9"}, set(),
     Refused(r"no disk matches the plan's selector \{'serial': 'USB-9'\}: .*passed over: "
             r"/dev/sdb .*: removable")),
    ("a serial no disk has", [sata("/dev/sda", 250, serial="WD-A")], {"serial": "WD-Z"}, set(),
     Refused(r"no disk matches the plan's selector \{'serial': 'WD-Z'\}: found /dev/sda "
             r"\(250.0 GiB, WDC_WD5000, ata, serial WD-A\)$")),
    ("no disk at all", [], {}, set(), Refused(r"found no disks at all")),
    ("a disk too small for swap, root and the VG", [sata("/dev/sda", 20)], {}, set(),
     Refused(r"/dev/sda \(20.0 GiB.*\) is too small: .* need 32.0 GiB \(34359738368 bytes\), "
             r"the disk has 20.0 GiB .*nothing was written")),
]


@pytest.mark.parametrize("disks, match, boot, expected",
                         [row[1:] for row in LAYOUTS], ids=[row[0] for row in LAYOUTS])
def test_choose(disks, match, boot, expected):
    if not isinstance(expected, Refused):
        assert choose(disks, match, MIN, boot).devnode == expected
    else:
        with pytest.raises(DiskError) as e:
            choose(disks, match, MIN, boot)
        assert re.search(expected, str(e.value)), str(e.value)


def test_the_choice_does_not_depend_on_the_order_udev_lists_disks():
    disks = [sata("/dev/sda", 250), nvme("/dev/nvme0n1", 1000), usb("/dev/sdb", 2000)]
    assert {choose(order, {}, MIN).devnode for order in (disks, disks[::-1])} == {"/dev/nvme0n1"}
