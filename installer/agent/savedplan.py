"""The node's plan, kept on its own disk: the master hands a plan (and its report token) out
once per install cycle, so a netboot after a power cut resumes with the plan it kept.

The plan is saved as soon as the journal exists, in the journal's place on the new root file
system (mode 0600: it holds the token), and again whenever that file system is made anew;
and on the ESP, which the OS image write does not touch (root's copy is gone while the image
is written). It is found again read-only: the running system's own copy (first-boot mode),
then the partitions the agent made (GPT names gi-root, gi-esp) on any local disk, mounted
read-only, holding a plan for one of this machine's MACs.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, List, Optional, Tuple

from installer.agent import planschema, rules
from installer.agent.files import write_atomically
from installer.agent.proc import CommandFailed, Runner

PLAN = "var/lib/ganeti-installer/plan.json"
ESP = "boot/efi"
ESP_PLAN = "ganeti-installer/plan.json"     # on the ESP (mounted umask=0077 once installed)
ROOT_LABEL = rules.GPT_NAME_PREFIX + rules.ROOT
# Where a kept plan lies on each kind of partition the agent made.
KEPT = {ROOT_LABEL: PLAN, rules.GPT_NAME_PREFIX + rules.ESP: ESP_PLAN}
# How each is mounted to read it: ext4's noload replays no journal (ro alone would write to
# a disk that may turn out not to be ours).
MOUNT = {ROOT_LABEL: ["-t", "ext4", "-o", "ro,noload"],
         rules.GPT_NAME_PREFIX + rules.ESP: ["-t", "vfat", "-o", "ro"]}


def save(plan: dict, target: str, log: Callable[[str], None] = print) -> None:
    text = json.dumps(plan)
    write_atomically(os.path.join(target, PLAN), text, 0o600, durable=True)
    if os.path.ismount(os.path.join(target, ESP)):
        try:
            _write_esp(os.path.join(target, ESP, ESP_PLAN), text)
        except OSError as e:    # the root copy is kept: only a cut in the OS write is hurt
            log(f"warning: cannot keep the plan on the ESP ({e}): a power cut while the OS "
                "image is written will need ganeti-installer reinstall for this node")


def _write_esp(path: str, text: str) -> None:
    """Replace PATH on the ESP, durably. No chmod: FAT has no modes (vfat refuses most with
    EPERM); the installed system mounts the ESP umask=0077, root's alone."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".new", "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".new", path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def forget(target: str) -> None:
    """At the install's end: no kept plan outlives its install, so a later reinstall that
    the master refuses never resumes an earlier, finished one with its stale token."""
    for path in (os.path.join(target, PLAN), os.path.join(target, ESP, ESP_PLAN)):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def find(macs: List[str], run: Optional[Runner] = None, *, running_root: str = "/",
         log: Callable[[str], None] = print) -> Optional[dict]:
    """A saved plan for one of MACS, or None."""
    run = run or Runner(log=lambda line: None)
    plan = _plan_in(os.path.join(running_root, PLAN), macs)
    if plan is not None:
        log(f"resuming with the plan kept in {os.path.join(running_root, PLAN)}")
        return plan
    for device, label in partitions(run):
        plan = _read_on(device, label, run, macs)
        if plan is not None:
            log(f"resuming with the plan kept on {device}")
            return plan
    return None


def partitions(run: Runner) -> List[Tuple[str, str]]:
    """(device, GPT name) of every gi-root and gi-esp partition on this machine's disks:
    the roots first."""
    out = run.read(["lsblk", "--raw", "--paths", "--noheadings", "--output",
                    "PATH,PARTLABEL"], check=False)
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1] in KEPT:
            found.append((fields[0], fields[1]))
    return sorted(found, key=lambda kept: kept[1] != ROOT_LABEL)


def _read_on(device: str, label: str, run: Runner, macs: List[str]) -> Optional[dict]:
    where, path = tempfile.mkdtemp(prefix="gi-plan-"), KEPT[label]
    try:
        run.read(["mount"] + MOUNT[label] + [device, where])
    except CommandFailed:
        os.rmdir(where)
        return None
    try:
        return _plan_in(os.path.join(where, path), macs)
    finally:
        run.read(["umount", where], check=False)
        os.rmdir(where)


def _plan_in(path: str, macs: List[str]) -> Optional[dict]:
    """The plan at PATH if it is a whole, valid plan for one of MACS and carries a token."""
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or planschema.check(plan):
        return None
    if plan["node"]["mac"] not in macs or not plan["report"].get("token"):
        return None
    return plan
