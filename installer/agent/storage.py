"""The plan's storage actions as types: each holds its fields, the ids it names and its
handler, which checks the disk before it acts; one dispatcher (ACTIONS) picks the type.

The plan's JSON shape is plan.schema.json's ($defs/<type>); the fields of each type here are
those of its $defs entry. Partitions the agent creates carry GPT names `gi-<action id>`; a disk
whose partitions all carry such names and whose GPT disk GUID names this cluster
(rules.disk_guid) is ours: this install's is resumed, an earlier one's is torn down and laid
out again (a reinstall, a rebuild). Anything else on the disk (another cluster's install
too) is foreign data: refused, and the disk left untouched, unless the plan says wipe.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Tuple, Type

from installer.agent import diskprobe as probe
from installer.agent import journal, rules
from installer.agent.diskprobe import partition_path
from installer.agent.disks import Disk
from installer.agent.proc import Runner

TYPE_CODES = {"bios_grub": "EF02", "esp": "EF00", "swap": "8200", "linux": "8300",
              "lvm": "8E00"}
ALIGN = 1 << 20
LVM_GUID = "E6D6D379-F507-44C2-A23C-238F2A3DF928"     # GPT's "Linux LVM" type

__all__ = ["ACTIONS", "ForeignData", "Storage", "StorageError", "partition_path", "problems"]


class StorageError(Exception):
    pass


class ForeignData(StorageError):
    """The disk holds data the agent did not create and the plan does not say wipe."""


@dataclass
class Action:
    """One action of the plan's storage list."""

    TYPE: ClassVar[str]
    # field -> the action types the ids in it may name (defined earlier in the list)
    REFS: ClassVar[Dict[str, Tuple[str, ...]]] = {}
    id: str

    @classmethod
    def from_dict(cls, data: dict) -> Action:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise StorageError(f"storage action {data.get('id')!r} ({cls.TYPE}) has no "
                               f"{', '.join(missing)}: the plan does not match its schema")
        return cls(**{n: data[n] for n in names})

    @classmethod
    def named(cls, data: dict) -> Iterator[Tuple[str, Any]]:
        """(field, id) for every id this action names."""
        for name in cls.REFS:
            value = data.get(name)
            for ref in value if isinstance(value, list) else [value]:
                yield name, ref

    def apply(self, st: Storage) -> None:
        raise NotImplementedError


@dataclass
class DiskAction(Action):
    """The chosen disk: blank or ours goes on; foreign data is refused unless `wipe`."""

    TYPE = "disk"
    ptable: str
    match: dict
    wipe: bool

    def apply(self, st: Storage) -> None:
        st.devices[self.id] = st.disk.devnode
        owner = probe.owner(st.run, st.disk.devnode, st.marker, st.vg_name())
        if owner in ("blank", "ours"):
            return
        if owner == "earlier":      # this cluster's earlier install of the node: a reinstall
            st.run.log(f"{st.disk.describe()} holds an earlier install for this cluster: "
                       "tearing it down")
            self.teardown(st)
            return
        if not self.wipe:
            raise ForeignData(
                f"refusing to install on {st.disk.describe()}: it holds data ganeti-installer "
                f"did not create ({owner}); nothing was written. Set storage.wipe = true in "
                f"the cluster file (or `rebuild` the node) to overwrite it")
        self.teardown(st)

    @staticmethod
    def teardown(st: Storage) -> None:
        """Release what holds the disk, top down, then erase every signature: DRBD (it sits
        on the VG's volumes), the VGs on the disk, other device-mapper maps; a signature
        left behind would make the new PV's pvcreate or LVM's scan trip over the old VG."""
        disk = st.disk.devnode
        if probe.drbd_loaded():
            st.run.change(["drbdsetup", "down", "all"])
        vgs = {vg for pv, vg in probe.physical_volumes(st.run) if probe.on_disk(pv, disk)}
        for vg in sorted(vgs):
            st.run.change(["vgchange", "--activate", "n", vg])
        for name in probe.foreign_holders(disk):
            st.run.change(["dmsetup", "remove", "--retry", name])
        for p in probe.layout(st.run, disk):
            st.run.change(["wipefs", "--all", "--force", p["path"]])
        st.run.change(["wipefs", "--all", "--force", disk])
        st.run.change(["sgdisk", "--zap-all", disk])
        st.cleared = True


@dataclass
class Partition(Action):
    """A GPT partition; the first one lays out all of them in one sgdisk, unless the table
    already holds exactly the plan's partitions (a resumed install)."""

    TYPE = "partition"
    REFS = {"device": ("disk",)}
    device: str
    number: int
    size: Optional[int]
    flag: str

    def apply(self, st: Storage) -> None:
        wanted = st.of_type(Partition)
        if self is wanted[0] and (st.cleared or not self.matches(st, wanted)):
            self.make_all(st, wanted)
        st.devices[self.id] = partition_path(st.disk.devnode, self.number)

    @staticmethod
    def matches(st: Storage, wanted: List[Partition]) -> bool:
        have = probe.layout(st.run, st.disk.devnode)
        if len(have) != len(wanted):
            return False
        for p, a in zip(have, wanted):  # noqa: B905 (no strict= on 3.9; lengths equal)
            if p.get("partlabel") != rules.GPT_NAME_PREFIX + a.id:
                return False
            if p["number"] != a.number or \
                    (a.size is not None and abs(p["size"] - a.size) > ALIGN):
                return False
        return True

    @staticmethod
    def make_all(st: Storage, wanted: List[Partition]) -> None:
        disk = st.disk.devnode
        # --clear first in the same run: a new protective MBR and empty GPT (both copies),
        # then the partitions; one sgdisk, which syncs and re-reads the table once.
        argv = ["sgdisk", "--clear", f"--disk-guid={st.marker}"]
        for a in wanted:
            end = f"+{a.size // 1024}K" if a.size else "0"
            n = a.number
            argv += [f"--new={n}:0:{end}", f"--typecode={n}:{TYPE_CODES[a.flag]}",
                     f"--change-name={n}:{rules.GPT_NAME_PREFIX}{a.id}"]
        st.run.change(argv + [disk])
        # sgdisk asks the kernel to re-read the table; partx makes sure (util-linux, no parted).
        st.run.change(["partx", "--update", disk])
        st.run.change(["udevadm", "settle"])
        if not st.run.dry_run:
            wait_for([partition_path(disk, a.number) for a in wanted])


@dataclass
class LvmVolgroup(Action):
    """The VG on its partitions; kept when it is there already, refused when a VG of that
    name lives on another disk."""

    TYPE = "lvm_volgroup"
    REFS = {"devices": ("partition",)}
    name: str
    devices: List[str]

    def apply(self, st: Storage) -> None:
        pvs = [st.devices[d] for d in self.devices]
        st.devices[self.id] = f"/dev/{self.name}"
        have = probe.volume_groups(st.run)
        if st.cleared:      # torn down: what a dry run still reads on the disk is gone
            have = {(vg, pv) for vg, pv in have if not probe.on_disk(pv, st.disk.devnode)}
        if all((self.name, pv) in have for pv in pvs):
            return
        if any(vg == self.name for vg, _ in have):
            raise StorageError(f"a volume group '{self.name}' already exists on another disk "
                               f"({', '.join(pv for vg, pv in have if vg == self.name)}); "
                               "remove it or name another storage.vg")
        for pv in pvs:
            st.run.change(["pvcreate", "--force", "--force", "--yes", pv])
        st.run.change(["vgcreate", self.name] + pvs)


MKFS: Dict[str, Callable[[str, str], List[str]]] = {
    "ext4": lambda label, dev: ["mkfs.ext4", "-F", "-q", "-L", label, dev],
    "vfat": lambda label, dev: ["mkfs.vfat", "-F", "32", "-n", "EFI", dev],
    "swap": lambda label, dev: ["mkswap", "--label", "swap", dev],
}


@dataclass
class Format(Action):
    """A file system on a partition; kept when root holds this plan's finished OS."""

    TYPE = "format"
    REFS = {"volume": ("partition",)}
    volume: str
    fstype: str

    def apply(self, st: Storage) -> None:
        dev = st.devices[self.volume]
        st.devices[self.id] = dev
        if st.resuming() and self.fstype == probe.fstype(st.run, dev):
            st.kept.append(self.id)
            return
        st.run.change(MKFS[self.fstype](self.volume, dev))


@dataclass
class Mount(Action):
    """A file system mounted under the target, unless it is mounted there already."""

    TYPE = "mount"
    REFS = {"device": ("format",)}
    device: str
    path: str

    def apply(self, st: Storage) -> None:
        dev = st.devices[self.device]
        where = os.path.join(st.target, self.path.lstrip("/"))
        if not st.run.dry_run:
            os.makedirs(where, exist_ok=True)
            if os.path.ismount(where):
                return
        st.run.change(["mount", dev, where])


ACTIONS: Dict[str, Type[Action]] = {
    cls.TYPE: cls for cls in (DiskAction, Partition, LvmVolgroup, Format, Mount)}


def parse(actions: List[dict]) -> List[Action]:
    """The plan's storage actions as their types (the plan is checked already)."""
    out = []
    for data in actions:
        cls = ACTIONS.get(data.get("type", ""))
        if cls is None:
            raise StorageError(f"storage action {data.get('id')!r} has the unknown type "
                               f"{data.get('type')!r}: the plan does not match its schema")
        out.append(cls.from_dict(data))
    return out


def problems(actions: List[dict]) -> List[str]:
    """Ids used twice, and ids named before they are defined or of a type the field does not
    take (a mount names a format, a format a partition...)."""
    seen: Dict[Any, Any] = {}      # id -> type, of the actions so far
    out = []
    for i, data in enumerate(actions):
        where = f"plan.storage.actions[{i}]"
        cls = ACTIONS.get(data.get("type", ""))
        if cls is not None:
            out += _reference_problems(where, cls, data, seen)
        if data.get("id") in seen:
            out.append(f"{where}: id {data.get('id')!r} is used twice")
        seen[data.get("id")] = data.get("type")
    return out


def _reference_problems(where: str, cls: Type[Action], data: dict, seen: dict) -> List[str]:
    out = []
    for name, ref in cls.named(data):
        if ref not in seen:
            out.append(f"{where}: refers to {ref!r}, which no earlier action defines")
        elif seen[ref] not in cls.REFS[name]:
            out.append(f"{where}.{name}: {ref!r} is a {seen[ref]} action; a {cls.TYPE} "
                       f"names a {' or '.join(cls.REFS[name])} there")
    return out


def wait_for(paths: List[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > deadline:
            raise StorageError(f"partitions did not appear: {paths}")
        time.sleep(0.2)


class Storage:
    """Carries out the storage actions of a plan on one chosen disk, in order."""

    def __init__(self, plan: dict, disk: Disk, runner: Runner, target: str,
                 keep_root: Callable[[str], bool] = lambda dev: False):
        self.plan, self.disk, self.run, self.target = plan, disk, runner, target
        self.actions = parse(plan["storage"]["actions"])
        self.by_id = {a.id: a for a in self.actions}
        self.devices: Dict[str, str] = {}       # action id -> the device it made
        self.keep_root = keep_root      # whether root holds this plan's finished OS
        self.kept: List[str] = []
        self._resuming: Optional[bool] = None
        self.cleared = False            # the disk was torn down (a dry run reads it as was)
        # The disk's GPT GUID: this cluster, this plan (rules.disk_guid).
        self.marker = rules.disk_guid(plan["cluster"]["name"], journal.plan_hash(plan))

    def vg_name(self) -> str:
        return next((a.name for a in self.of_type(LvmVolgroup)), "")

    def of_type(self, cls: type) -> list:
        return [a for a in self.actions if isinstance(a, cls)]

    def apply(self, report: Callable[[str], object]) -> None:
        for action in self.actions:
            report(f"{action.TYPE}/{action.id}")
            action.apply(self)

    def owner(self) -> str:
        return probe.owner(self.run, self.disk.devnode, self.marker, self.vg_name())

    def resuming(self) -> bool:
        """Whether root already holds this plan's OS: then no filesystem is made again, since
        the installed fstab names the UUIDs of the ESP and swap as well as root's."""
        if self.cleared:
            return False
        if self._resuming is None:
            fmt = self.by_id[self._root_mount().device]
            device = self.devices.get(fmt.volume) if isinstance(fmt, Format) else None
            self._resuming = device is not None and self.keep_root(device)
        return self._resuming

    def _root_mount(self) -> Mount:
        return next(a for a in self.of_type(Mount) if a.path == "/")

    def root_device(self) -> str:
        return self.devices[self._root_mount().device]

    def root_uuid(self) -> str:
        return self.uuid(self._root_mount().device)

    def uuid(self, action_id: str) -> str:
        dev = self.devices[action_id]
        if self.run.dry_run:    # its mkfs did not run: a new file system has no UUID yet
            return probe.uuid(self.run, dev, check=False) or f"<UUID of {dev}>"
        return probe.uuid(self.run, dev)

    def unmount(self) -> None:
        """Everything under the target, to write the root file system's blocks."""
        self.run.change(["umount", "--recursive", self.target])

    def mount(self) -> None:
        for action in self.of_type(Mount):
            action.apply(self)

    # -- first-boot mode: the OS is installed; the free space after it becomes the VG --------

    def claim_free(self, report: Callable[[str], object], min_size: int) -> None:
        """Make the plan's LVM partition in the disk's largest free block, then the VG."""
        pv = next(a for a in self.of_type(Partition) if a.flag == "lvm")
        label = rules.GPT_NAME_PREFIX + pv.id
        report(f"partition/{pv.id}")
        disk = self.disk.devnode
        found = [p for p in probe.layout(self.run, disk) if p["partlabel"] == label]
        if not found:
            self._append(label, min_size)
            found = [p for p in probe.layout(self.run, disk) if p["partlabel"] == label]
            if not self.run.dry_run and not found:
                raise StorageError(f"sfdisk made no partition {label} on {disk}")
            if found:
                wait_for([found[0]["path"]])
        self.devices[pv.id] = found[0]["path"] if found else f"{disk}?"
        for action in self.of_type(LvmVolgroup):
            report(f"lvm_volgroup/{action.id}")
            action.apply(self)

    def _append(self, label: str, min_size: int) -> None:
        """The partition named `label` in the largest free block, if that holds min_size."""
        disk = self.disk.devnode
        start, sectors = probe.largest_free(self.run, disk)
        size = sectors * probe.sector_size(self.run, disk)
        if size < min_size:
            raise StorageError(
                f"{self.disk.describe()} has {size / (1 << 30):.1f} GiB free after the "
                f"installed system; volume group '{self.of_type(LvmVolgroup)[0].name}' "
                f"needs at least {min_size / (1 << 30):.1f} GiB; nothing was written")
        # sfdisk, not sgdisk: util-linux is on every installed system, gdisk is not.
        # --no-reread: the disk is in use (it holds /); partx adds the new partition.
        self.run.change(["sfdisk", "--append", "--no-reread", "--no-tell-kernel", disk],
                        input=f"start={start}, size={sectors}, type={LVM_GUID}, "
                              f"name={label}\n")
        number = next(p["number"] for p in probe.layout(self.run, disk)
                      if p["partlabel"] == label) if not self.run.dry_run else 0
        self.run.change(["partx", "--add", "--nr", str(number), disk])
        self.run.change(["udevadm", "settle"])
