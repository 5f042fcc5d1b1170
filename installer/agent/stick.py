"""The install stick, from the node's side: found by its FAT volume's UUID (pyudev), mounted
read-only, and the plan for this PC read from it, by its MAC or by the node the GRUB entry
named. Read-only, and mounted: disks.choose never takes a removable disk or one holding a
mounted file system, so the stick is never written.

Kernel command line: installer.plan=usb:<UUID> (the plan by this PC's MAC, from the stick's
index) or installer.plan=usb:<UUID>:<node> (a GRUB menu entry per node).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple

from installer.agent import rules

WAIT = 120.0    # seconds for the stick's partition to show up: USB storage enumerates late


class StickError(Exception):
    pass


def parse(source: str) -> Tuple[str, Optional[str]]:
    """(FAT UUID, node or None) of a usb:<UUID>[:<node>] plan source."""
    fs_uuid, _, node = source[len(rules.STICK_SCHEME):].partition(":")
    if not fs_uuid:
        raise StickError(f"{rules.PLAN_ARG}={source} names no stick: write "
                         f"{rules.PLAN_ARG}=usb:<FAT UUID, e.g. 1A2B-3C4D>[:<node>]")
    return fs_uuid.upper(), node or None


def _partitions(fs_uuid: str) -> List[str]:
    import pyudev  # node side only

    context = pyudev.Context()
    return [d.device_node for d in context.list_devices(subsystem="block")
            if d.properties.get("ID_FS_UUID", "").upper() == fs_uuid and d.device_node]


def find(fs_uuid: str, *, wait: float = WAIT, log: Callable[[str], None] = print,
         partitions: Callable[[str], List[str]] = _partitions,
         sleep: Callable[[float], None] = time.sleep) -> str:
    """The stick's partition; waits for USB storage to show up, saying so once."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        found = partitions(fs_uuid)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            raise StickError(f"no install stick with the file system {fs_uuid} after "
                             f"{int(wait)} s: plug in the stick this PC booted from (its "
                             f"{rules.STICK_LABEL} volume), or boot it from the master's PXE")
        if not said:
            log(f"waiting for the install stick (FAT volume {fs_uuid})")
            said = True
        sleep(2)


def _mounted(path: str) -> bool:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return any(line.split()[1] == path for line in f if len(line.split()) > 1)
    except OSError:
        return False


def mount(device: str) -> str:
    """Mount the stick read-only at rules.STICK_MOUNT (once); the mount point."""
    if not _mounted(rules.STICK_MOUNT):
        os.makedirs(rules.STICK_MOUNT, exist_ok=True)
        done = subprocess.run(["mount", "-t", "vfat", "-o", "ro,noexec,nodev,nosuid", device,
                               rules.STICK_MOUNT], capture_output=True, text=True)
        if done.returncode != 0:
            raise StickError(f"cannot mount the install stick {device} read-only: "
                             f"{done.stderr.strip()}")
    return rules.STICK_MOUNT


def choose(index: Dict[str, str], macs: List[str], node: Optional[str]) -> str:
    """The node to install: the one named, or the one whose MAC this PC has."""
    if node:
        if node not in index.values():
            raise StickError(f"the stick holds no plan for {node}: it has "
                             f"{', '.join(sorted(index.values())) or 'none'}")
        return node
    mine = [index[m] for m in macs if m in index]
    if not mine:
        raise StickError(f"none of this PC's MACs ({', '.join(macs) or 'none'}) is in the "
                         f"stick's index ({', '.join(sorted(index)) or 'empty'}): choose the "
                         "node in the stick's boot menu, or add this PC to the cluster file "
                         "and make the stick again")
    return mine[0]


def load_plan(source: str, macs: List[str], *, log: Callable[[str], None] = print,
              root: Optional[str] = None) -> dict:
    """The plan for this PC from the stick named by `source` (root: an already-mounted
    stick, for tests)."""
    fs_uuid, node = parse(source)
    if root is None:
        root = mount(find(fs_uuid, log=log))
    folder = os.path.join(root, rules.STICK_DIR)
    try:
        with open(os.path.join(folder, "index.json"), encoding="utf-8") as f:
            index = json.load(f)
        name = choose(index, macs, node)
        with open(os.path.join(folder, "plans", f"{name}.json"), encoding="utf-8") as f:
            plan = json.load(f)
    except (OSError, ValueError) as e:
        raise StickError(f"the install stick {fs_uuid} holds no readable plan ({e}): make "
                         "it again with ganeti-installer usb") from None
    log(f"plan of {name} from the install stick {fs_uuid}")
    return plan
