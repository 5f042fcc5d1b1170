"""The plan's storage actions: one handler per action type, each checking before it acts.

Partitions the agent creates carry GPT names `gi-<action id>`; a disk whose partitions all
carry such names is ours and may be re-partitioned (a resumed install, a rebuild). Any other
signature on the disk is foreign data: refused, and the disk left untouched, unless the plan
says wipe.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional

from installer.agent.disks import Disk
from installer.agent.proc import Runner

LABEL_PREFIX = "gi-"
TYPE_CODES = {"bios_grub": "EF02", "esp": "EF00", "swap": "8200", "linux": "8300",
              "lvm": "8E00"}
ALIGN = 1 << 20
LVM_GUID = "E6D6D379-F507-44C2-A23C-238F2A3DF928"     # GPT's "Linux LVM" type


class StorageError(Exception):
    pass


class ForeignData(StorageError):
    """The disk holds data the agent did not create and the plan does not say wipe."""


def partition_path(disk: str, number: int) -> str:
    # /dev/nvme0n1 -> /dev/nvme0n1p1, /dev/vda -> /dev/vda1
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


class Storage:
    """Carries out the storage actions of a plan on one chosen disk, in order."""

    def __init__(self, plan: dict, disk: Disk, runner: Runner, target: str,
                 keep_root: Callable[[str], bool] = lambda dev: False):
        self.plan, self.disk, self.run, self.target = plan, disk, runner, target
        self.actions = plan["storage"]["actions"]
        self.by_id = {a["id"]: a for a in self.actions}
        self.devices: Dict[str, str] = {}
        self.keep_root = keep_root      # whether root holds this plan's finished OS
        self.kept: List[str] = []
        self._resuming: Optional[bool] = None

    # -- inspection -------------------------------------------------------------------------

    def layout(self) -> List[dict]:
        """The disk's partitions read from its partition table (no udev needed)."""
        out = self.run.read(["partx", "--raw", "--bytes", "--noheadings", "--output",
                             "NR,SIZE,NAME", self.disk.devnode], check=False)
        parts = []
        for line in out.splitlines():
            fields = line.split(" ", 2) + [""]
            number, size, name = int(fields[0]), int(fields[1]), fields[2].strip()
            parts.append({"number": number, "size": size, "partlabel": name,
                          "path": partition_path(self.disk.devnode, number)})
        return parts

    def signatures(self, device: str) -> List[str]:
        out = self.run.read(["wipefs", "--noheadings", "--output", "TYPE", device],
                            check=False)
        return [line.strip() for line in out.splitlines() if line.strip()]

    def owner(self) -> str:
        """'blank', 'ours' or a description of the foreign data found."""
        parts = self.layout()
        found = self.signatures(self.disk.devnode)
        if not parts and not found:
            return "blank"
        if parts and all((p.get("partlabel") or "").startswith(LABEL_PREFIX) for p in parts):
            return "ours"
        what = [f"{self.disk.devnode}: {', '.join(found)}"] if found else []
        for p in parts:
            found = ", ".join(self.signatures(p["path"])) or "partition"
            what.append(f"{p['path']}: {found} ({p['partlabel'] or 'no name'})")
        return "; ".join(what)

    # -- actions ----------------------------------------------------------------------------

    def apply(self, report: Callable[[str], None]) -> None:
        for action in self.actions:
            report(f"{action['type']}/{action['id']}")
            getattr(self, f"do_{action['type']}")(action)

    def do_disk(self, action: dict) -> None:
        self.devices[action["id"]] = self.disk.devnode
        owner = self.owner()
        if owner in ("blank", "ours"):
            return
        if not action["wipe"]:
            raise ForeignData(
                f"refusing to install on {self.disk.describe()}: it holds data ganeti-installer "
                f"did not create ({owner}); nothing was written. Set storage.wipe = true in "
                f"the cluster file (or `rebuild` the node) to overwrite it")
        self.teardown()

    def teardown(self) -> None:
        """Release and erase what is on the disk: VGs on it, then every signature."""
        pvs = self.run.read(["pvs", "--noheadings", "--options", "pv_name,vg_name"],
                            check=False)
        for line in pvs.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].startswith(self.disk.devnode):
                self.run.change(["vgchange", "--activate", "n", fields[1]])
        for p in self.layout():
            self.run.change(["wipefs", "--all", "--force", p["path"]])
        self.run.change(["wipefs", "--all", "--force", self.disk.devnode])
        self.run.change(["sgdisk", "--zap-all", self.disk.devnode])

    def _wanted_partitions(self) -> List[dict]:
        return [a for a in self.actions if a["type"] == "partition"]

    def _matches(self, wanted: List[dict]) -> bool:
        have = self.layout()
        if len(have) != len(wanted):
            return False
        for p, a in zip(have, wanted):
            if p.get("partlabel") != LABEL_PREFIX + a["id"]:
                return False
            if p["number"] != a["number"] or \
                    (a["size"] is not None and abs(p["size"] - a["size"]) > ALIGN):
                return False
        return True

    def do_partition(self, action: dict) -> None:
        wanted = self._wanted_partitions()
        if action is wanted[0] and not self._matches(wanted):
            self._partition(wanted)
        self.devices[action["id"]] = partition_path(self.disk.devnode, action["number"])

    def _partition(self, wanted: List[dict]) -> None:
        disk = self.disk.devnode
        # --clear first in the same run: a new protective MBR and empty GPT (both copies),
        # then the partitions; one sgdisk, which syncs and re-reads the table once.
        argv = ["sgdisk", "--clear"]
        for a in wanted:
            end = f"+{a['size'] // 1024}K" if a["size"] else "0"
            n = a["number"]
            argv += [f"--new={n}:0:{end}", f"--typecode={n}:{TYPE_CODES[a['flag']]}",
                     f"--change-name={n}:{LABEL_PREFIX}{a['id']}"]
        self.run.change(argv + [disk])
        # sgdisk asks the kernel to re-read the table; partx makes sure (util-linux, no parted).
        self.run.change(["partx", "--update", disk])
        self.run.change(["udevadm", "settle"])
        if not self.run.dry_run:
            self._wait_for([partition_path(disk, a["number"]) for a in wanted])

    @staticmethod
    def _wait_for(paths: List[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(p) for p in paths):
            if time.monotonic() > deadline:
                raise StorageError(f"partitions did not appear: {paths}")
            time.sleep(0.2)

    def do_lvm_volgroup(self, action: dict) -> None:
        pvs = [self.devices[d] for d in action["devices"]]
        name = action["name"]
        self.devices[action["id"]] = f"/dev/{name}"
        out = self.run.read(["vgs", "--noheadings", "--options", "vg_name,pv_name"],
                            check=False)
        have = {tuple(line.split()) for line in out.splitlines() if line.strip()}
        if all((name, pv) in have for pv in pvs):
            return
        if any(vg == name for vg, _ in have):
            raise StorageError(f"a volume group '{name}' already exists on another disk "
                               f"({', '.join(pv for vg, pv in have if vg == name)}); remove "
                               "it or name another storage.vg")
        for pv in pvs:
            self.run.change(["pvcreate", "--force", "--force", "--yes", pv])
        self.run.change(["vgcreate", name] + pvs)

    def resuming(self) -> bool:
        """Whether root already holds this plan's OS: then no filesystem is made again, since
        the installed fstab names the UUIDs of the ESP and swap as well as root's."""
        if self._resuming is None:
            fmt = self.by_id[self._root_mount()["device"]]
            device = self.devices.get(fmt["volume"])
            self._resuming = bool(device) and self.keep_root(device)
        return self._resuming

    def _root_mount(self) -> dict:
        return next(a for a in self.actions if a["type"] == "mount" and a["path"] == "/")

    def root_device(self) -> str:
        return self.devices[self._root_mount()["device"]]

    def root_uuid(self) -> str:
        return self.uuid(self._root_mount()["device"])

    def do_format(self, action: dict) -> None:
        dev = self.devices[action["volume"]]
        self.devices[action["id"]] = dev
        fstype = action["fstype"]
        if self.resuming() and fstype == self.fstype(dev):
            self.kept.append(action["id"])
            return
        if fstype == "ext4":
            self.run.change(["mkfs.ext4", "-F", "-q", "-L", action["volume"], dev])
        elif fstype == "vfat":
            self.run.change(["mkfs.vfat", "-F", "32", "-n", "EFI", dev])
        elif fstype == "swap":
            self.run.change(["mkswap", "--label", "swap", dev])

    def do_mount(self, action: dict) -> None:
        dev = self.devices[action["device"]]
        where = os.path.join(self.target, action["path"].lstrip("/"))
        if not self.run.dry_run:
            os.makedirs(where, exist_ok=True)
            if os.path.ismount(where):
                return
        self.run.change(["mount", dev, where])

    def unmount(self) -> None:
        """Everything under the target, to write the root file system's blocks."""
        self.run.change(["umount", "--recursive", self.target])

    def mount(self) -> None:
        for action in self.actions:
            if action["type"] == "mount":
                self.do_mount(action)

    # -- first-boot mode: the OS is installed; the free space after it becomes the VG --------

    def claim_free(self, report: Callable[[str], None], min_size: int) -> None:
        """Make the plan's LVM partition in the disk's largest free block, then the VG."""
        pv = next(a for a in self.actions if a["type"] == "partition" and a["flag"] == "lvm")
        label = LABEL_PREFIX + pv["id"]
        report(f"partition/{pv['id']}")
        found = [p for p in self.layout() if p["partlabel"] == label]
        if not found:
            free = self._largest_free()
            size = free[1] * self._sector()
            if size < min_size:
                raise StorageError(
                    f"{self.disk.describe()} has {size / (1 << 30):.1f} GiB free after the "
                    f"installed system; volume group '{self.plan['storage'].get('vg', 'ganeti')}'"
                    f" needs at least {min_size / (1 << 30):.1f} GiB; nothing was written")
            # sfdisk, not sgdisk: util-linux is on every installed system, gdisk is not.
            # --no-reread: the disk is in use (it holds /); partx adds the new partition.
            disk = self.disk.devnode
            start, sectors = free
            self.run.change(["sfdisk", "--append", "--no-reread", "--no-tell-kernel", disk],
                            input=f"start={start}, size={sectors}, type={LVM_GUID}, "
                                  f"name={label}\n")
            number = next(p["number"] for p in self.layout() if p["partlabel"] == label) \
                if not self.run.dry_run else 0
            self.run.change(["partx", "--add", "--nr", str(number), disk])
            self.run.change(["udevadm", "settle"])
            found = [p for p in self.layout() if p["partlabel"] == label]
            if not self.run.dry_run and not found:
                raise StorageError(f"sfdisk made no partition {label} on {disk}")
            if found:
                self._wait_for([found[0]["path"]])
        self.devices[pv["id"]] = found[0]["path"] if found else f"{self.disk.devnode}?"
        for action in self.actions:
            if action["type"] == "lvm_volgroup":
                report(f"lvm_volgroup/{action['id']}")
                self.do_lvm_volgroup(action)

    def _largest_free(self) -> tuple:
        """(first sector, sectors) of the disk's largest free block, from `sfdisk -F`."""
        out = self.run.read(["sfdisk", "--list-free", self.disk.devnode])
        blocks = [(int(f[0]), int(f[2])) for f in (line.split() for line in out.splitlines())
                  if len(f) == 4 and all(x.isdigit() for x in f[:3])]
        return max(blocks, key=lambda b: b[1]) if blocks else (0, 0)

    def _sector(self) -> int:
        return int(self.run.read(["blockdev", "--getss", self.disk.devnode]).strip() or 512)

    def fstype(self, device: str) -> str:
        return self.run.read(["blkid", "--match-tag", "TYPE", "--output", "value", device],
                             check=False).strip()

    def uuid(self, action_id: str) -> str:
        dev = self.devices[action_id]
        # -p: probe the device itself; blkid's cache may hold a UUID from before mkfs/tune2fs.
        return self.run.read(["blkid", "-p", "--match-tag", "UUID", "--output", "value",
                              dev]).strip()
