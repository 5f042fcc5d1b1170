"""A node's disks as the agent's read-only tools see them, for unit tests without a VM.

FakeNode stands in for `subprocess.run`: it answers the reads the agent makes (partx, wipefs,
pvs, vgs, blkid, debugfs, sfdisk, blockdev, efibootmgr, dpkg-query) from a described disk
state, in the output format of the real tools, and fails loudly on any other command, so a
new read or a change that escapes the dry run shows up as a test failure. Whether these
formats are the tools' is shown in the VM tests, which run the same code on real disks.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field

from installer.agent import journal, rules
from installer.agent.diskprobe import partition_path

GiB, MiB = 1 << 30, 1 << 20
GPT = ("gpt", "gpt", "PMBR")    # wipefs on a GPT disk: both headers, then the protective MBR


@dataclass
class DiskState:
    """What one disk holds: partitions (number, size, GPT name) and signatures by device."""

    devnode: str
    parts: list[tuple[int, int, str]] = field(default_factory=list)
    signatures: dict[str, list[str]] = field(default_factory=dict)    # device -> wipefs TYPEs
    fstypes: dict[str, str] = field(default_factory=dict)             # device -> blkid TYPE
    files: dict[str, dict[str, str]] = field(default_factory=dict)    # device -> {path: text}
    ptuuid: str = ""                                                  # the GPT disk GUID


def marker(plan: dict) -> str:
    """The disk GUID an install of `plan` writes."""
    return rules.disk_guid(plan["cluster"]["name"], journal.plan_hash(plan))


def ours(devnode: str, plan: dict, *, journal_done: list[str] | None = None) -> DiskState:
    """A disk laid out by an earlier install of `plan` (cut after mkfs): every partition with
    its gi- name and planned size, the plan's disk GUID, the file systems made, and root's
    journal if given."""
    state = DiskState(devnode, ptuuid=marker(plan))
    for a in plan["storage"]["actions"]:
        if a["type"] == "partition":
            state.parts.append((a["number"], a["size"] or 40 * GiB, f"gi-{a['id']}"))
    fs = {"esp": "vfat", "swap": "swap", "root": "ext4", "pv0": "LVM2_member"}
    for number, _, name in state.parts:
        dev = partition_path(devnode, number)
        if name[3:] in fs:
            state.fstypes[dev] = fs[name[3:]]
            state.signatures[dev] = [fs[name[3:]]]
    state.signatures[devnode] = list(GPT)
    if journal_done is not None:
        root = partition_path(devnode, 4)
        state.files[root] = {f"/{journal.JOURNAL}": json.dumps(
            {"plan": journal.plan_hash(plan), "done": journal_done})}
    return state


def partuuid(disk: str, number: int) -> str:
    """A partition's GPT GUID on the fake disk: made up, but fixed per partition."""
    return f"{number:08x}-0000-4000-8000-{len(disk):012x}"


class FakeNode:
    """`subprocess.run` over DiskStates and LVM's view (vg, pv) pairs."""

    def __init__(self, *disks: DiskState, vgs: list[tuple[str, str]] = (),
                 installed: list[str] = (), free: tuple[int, int] | None = None):
        self.disks = {d.devnode: d for d in disks}
        self.vgs, self.installed, self.free = list(vgs), list(installed), free
        self.ran: list[list[str]] = []
        self.efi = "BootCurrent: 0001\nBootOrder: 0001,0002\nBoot0001* UEFI PXEv4\n"

    def _device(self, dev: str) -> tuple[DiskState | None, str]:
        for d in self.disks.values():
            if dev == d.devnode or any(dev == partition_path(d.devnode, n) for n, _, _ in d.parts):
                return d, dev
        return None, dev

    def answer(self, argv: list[str]) -> tuple[int, str]:
        cmd, dev = argv[0], argv[-1]
        disk, _ = self._device(dev)
        if argv[:2] == ["partx", "--raw"] and "NR,UUID,NAME" in argv:
            return 0, "".join(f"{n} {partuuid(dev, n)} {name}\n" for n, _, name in disk.parts) \
                if disk else ""
        if argv[:2] == ["partx", "--raw"]:
            return 0, "".join(f"{n} {size} {name}\n" for n, size, name in disk.parts) \
                if disk else ""
        if cmd == "wipefs" and "--all" not in argv:
            return 0, "".join(f"{t}\n" for t in (disk.signatures.get(dev, []) if disk else []))
        if cmd == "pvs":
            return 0, "".join(f"  {pv} {vg}\n" for vg, pv in self.vgs)
        if cmd == "vgs":
            return 0, "".join(f"  {vg} {pv}\n" for vg, pv in self.vgs)
        if argv[:2] == ["blkid", "-p"]:
            tag = argv[argv.index("--match-tag") + 1]
            if tag == "PTUUID":
                value = disk.ptuuid if disk and dev == disk.devnode else ""
                return (0, value + "\n") if value else (2, "")
            fstype = disk.fstypes.get(dev, "") if disk else ""
            value = fstype if tag == "TYPE" else (f"uuid-of-{dev[5:]}" if fstype else "")
            return (0, value + "\n") if value else (2, "")
        if cmd == "debugfs":
            path = argv[2].split(" ", 1)[1]
            text = (disk.files.get(dev, {}) if disk else {}).get(path)
            return 0, text or ""
        if argv[:2] == ["sfdisk", "--list-free"] and self.free:
            start, sectors = self.free
            return 0, (f"Disk {dev}: 60 GiB\nUnits: sectors of 1 * 512 = 512 bytes\n\n"
                       f"   Start       End   Sectors  Size\n"
                       f"{start} {start + sectors - 1} {sectors} {sectors * 512 // GiB}G\n")
        if argv[:2] == ["blockdev", "--getss"]:
            return 0, "512\n"
        if cmd == "efibootmgr":
            return 0, self.efi

        if cmd == "dpkg-query" or argv[::2][:2] == ["chroot", "dpkg-query"]:  # or on / itself
            return 0, "".join(f"{p} install ok installed\n" for p in self.installed)
        raise AssertionError(f"the fake node does not know the command {argv}: a dry run "
                             f"may only run reads it knows")

    def run(self, argv, *, input=None, env=None, stdout=None, stderr=None,
            universal_newlines=None, text=None, timeout=None, check=False, **kw):
        argv = list(argv)
        self.ran.append(argv)
        code, out = self.answer(argv)
        result = subprocess.CompletedProcess(argv, code, out, "")
        if check and code:
            raise subprocess.CalledProcessError(code, argv, out, "")
        return result
