"""What a disk holds now, read with util-linux, blkid and LVM's reports.

Reads only: a dry run runs them too, so the commands it prints are those a real run would
run on this disk. blkid probes the device itself (`-p`): its cache is a file it would write,
and may hold a file system that mkfs or tune2fs has replaced since.
"""

from __future__ import annotations

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


def owner(run: Runner, disk: str) -> str:
    """'blank', 'ours' (every partition named by the agent) or what foreign data was found."""
    parts = layout(run, disk)
    found = signatures(run, disk)
    if not parts and not found:
        return "blank"
    if parts and all((p.get("partlabel") or "").startswith(rules.GPT_NAME_PREFIX)
                     for p in parts):
        return "ours"
    what = [f"{disk}: {', '.join(found)}"] if found else []
    for p in parts:
        kinds = ", ".join(signatures(run, p["path"])) or "partition"
        what.append(f"{p['path']}: {kinds} ({p['partlabel'] or 'no name'})")
    return "; ".join(what)


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
