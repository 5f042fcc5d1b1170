"""What a disk holds now, read with util-linux, blkid and LVM's reports.

Reads only: a dry run runs them too, so the commands it prints are those a real run would
run on this disk. blkid probes the device itself (`-p`): its cache is a file it would write,
and may hold a file system that mkfs or tune2fs has replaced since.
"""

from __future__ import annotations

import os
from typing import List, Set, Tuple

from installer.agent import rules
from installer.agent.proc import Runner


def partition_path(disk: str, number: int) -> str:
    # /dev/nvme0n1 -> /dev/nvme0n1p1, /dev/vda -> /dev/vda1
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def layout(run: Runner, disk: str) -> List[dict]:
    """The disk's partitions read from its partition table (no udev needed)."""
    out = run.read(["partx", "--raw", "--bytes", "--noheadings", "--output", "NR,SIZE,NAME",
                    disk], check=False)
    parts = []
    for line in out.splitlines():
        fields = line.split(" ", 2) + [""]
        number, size, name = int(fields[0]), int(fields[1]), fields[2].strip()
        parts.append({"number": number, "size": size, "partlabel": name,
                      "path": partition_path(disk, number)})
    return parts


def signatures(run: Runner, device: str) -> List[str]:
    out = run.read(["wipefs", "--noheadings", "--output", "TYPE", device], check=False)
    return [line.strip() for line in out.splitlines() if line.strip()]


# What an install of ours leaves: GPT on the disk; vfat, swap, ext4 and an LVM PV on its
# partitions. Anything else (an mdraid member, a LUKS header, NTFS) someone else put there.
DISK_SIGNATURES = {"gpt", "PMBR"}
MADE = {"vfat", "swap", "ext4", "LVM2_member"}


def owner(run: Runner, disk: str, marker: str = "", vg: str = "") -> str:
    """Whose the disk is: 'blank'; 'ours' (this install's: every partition named by the
    agent, the disk GUID `marker`); 'earlier' (an earlier install for this cluster: same
    names, the marker's cluster half, no VG on it but `vg`); else what was found there."""
    parts = layout(run, disk)
    found = signatures(run, disk)
    if not parts and not found:
        return "blank"
    named = parts and all((p.get("partlabel") or "").startswith(rules.GPT_NAME_PREFIX)
                          for p in parts)
    guid = disk_guid(run, disk) if named else ""
    if named and marker and guid == marker.lower():
        return "ours"
    others = sorted({g for pv, g in physical_volumes(run) if on_disk(pv, disk) and g != vg})
    kinds = {p["path"]: signatures(run, p["path"]) for p in parts}
    strange = (set(found) - DISK_SIGNATURES) | ({k for ks in kinds.values() for k in ks} - MADE)
    if named and marker and rules.same_cluster(guid, marker) and not others and not strange:
        return "earlier"
    what = [f"{disk}: {', '.join(found)}"] if found else []
    for p in parts:
        what.append(f"{p['path']}: {', '.join(kinds[p['path']]) or 'partition'} "
                    f"({p['partlabel'] or 'no name'})")
    if others:
        what.append(f"volume group {', '.join(others)}")
    elif named and not strange:
        what.append("another cluster's install, or one older than the disk marker")
    return "; ".join(what)


def disk_guid(run: Runner, disk: str) -> str:
    """The GPT disk GUID, lower case; '' for none (blkid exits 2)."""
    return run.read(["blkid", "-p", "--match-tag", "PTUUID", "--output", "value", disk],
                    check=False).strip().lower()


def on_disk(device: str, disk: str) -> bool:
    """Whether a device path is the disk or one of its partitions (/dev/sda1 is on
    /dev/sda, /dev/sdaa1 is not)."""
    if not device.startswith(disk):
        return False
    rest = device[len(disk):]
    if rest == "":
        return True
    if disk[-1].isdigit():          # nvme0n1p2, loop1p1: never nvme0n12 or loop10
        return rest[:1] == "p" and rest[1:].isdigit()
    return rest.isdigit()


def drbd_loaded(proc: str = "/proc/drbd") -> bool:
    """Whether the drbd module is loaded (a first-boot agent on a node that ran Ganeti)."""
    return os.path.exists(proc)


def foreign_holders(disk: str, sys_block: str = "/sys/class/block") -> List[str]:
    """Device-mapper names holding a partition of the disk that are not LVM's (dm-crypt,
    kpartx maps): LVM's go with vgchange, these need dmsetup."""
    names = []
    base = os.path.basename(disk)
    parts = [p for p in _listdir(os.path.join(sys_block, base)) if p.startswith(base)]
    for part in parts:
        for holder in _listdir(os.path.join(sys_block, base, part, "holders")):
            dm = os.path.join(sys_block, holder, "dm")
            if _read(os.path.join(dm, "uuid")).startswith("LVM-"):
                continue
            names.append(_read(os.path.join(dm, "name")) or holder)
    return sorted(set(names))


def _listdir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def physical_volumes(run: Runner) -> List[Tuple[str, str]]:
    """(PV, VG) of every physical volume LVM sees that belongs to a VG."""
    out = run.read(["pvs", "--noheadings", "--options", "pv_name,vg_name"], check=False)
    return [(f[0], f[1]) for f in (line.split() for line in out.splitlines()) if len(f) == 2]


def volume_groups(run: Runner) -> Set[Tuple[str, str]]:
    """(VG, PV) pairs, one per physical volume of every VG."""
    out = run.read(["vgs", "--noheadings", "--options", "vg_name,pv_name"], check=False)
    return {(f[0], f[1]) for f in (line.split() for line in out.splitlines()) if len(f) == 2}


def fstype(run: Runner, device: str) -> str:
    return run.read(["blkid", "-p", "--match-tag", "TYPE", "--output", "value", device],
                    check=False).strip()


def uuid(run: Runner, device: str, *, check: bool = True) -> str:
    return run.read(["blkid", "-p", "--match-tag", "UUID", "--output", "value", device],
                    check=check).strip()


def largest_free(run: Runner, disk: str) -> Tuple[int, int]:
    """(first sector, sectors) of the disk's largest free block, from `sfdisk -F`."""
    out = run.read(["sfdisk", "--list-free", disk])
    blocks = [(int(f[0]), int(f[2])) for f in (line.split() for line in out.splitlines())
              if len(f) == 4 and all(x.isdigit() for x in f[:3])]
    return max(blocks, key=lambda b: b[1]) if blocks else (0, 0)


def sector_size(run: Runner, disk: str) -> int:
    return int(run.read(["blockdev", "--getss", disk]).strip() or 512)
