"""The node's plan, kept on its own disk: the master hands a plan (and its report token) out
once per install cycle, so a netboot after a power cut resumes with the plan it kept.

The plan is saved as soon as the journal exists, in the journal's place on the new root file
system (mode 0600: it holds the token), and again whenever that file system is made anew (the
OS image overwrites it). It is found again read-only: the running system's own copy (first-boot
mode), then the root partitions the agent made (GPT name gi-root) on any local disk, mounted
read-only, holding a plan for one of this machine's MACs.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, List, Optional

from installer.agent import planschema, rules
from installer.agent.files import write_atomically
from installer.agent.proc import CommandFailed, Runner

PLAN = "var/lib/ganeti-installer/plan.json"
ROOT_LABEL = rules.GPT_NAME_PREFIX + rules.ROOT


def save(plan: dict, target: str) -> None:
    write_atomically(os.path.join(target, PLAN), json.dumps(plan), 0o600, durable=True)


def find(macs: List[str], run: Optional[Runner] = None, *, running_root: str = "/",
         log: Callable[[str], None] = print) -> Optional[dict]:
    """A saved plan for one of MACS, or None."""
    run = run or Runner(log=lambda line: None)
    plan = _plan_in(os.path.join(running_root, PLAN), macs)
    if plan is not None:
        log(f"resuming with the plan kept in {os.path.join(running_root, PLAN)}")
        return plan
    for device in root_partitions(run):
        plan = _read_on(device, run, macs)
        if plan is not None:
            log(f"resuming with the plan kept on {device}")
            return plan
    return None


def root_partitions(run: Runner) -> List[str]:
    """Every partition named gi-root on this machine's disks."""
    out = run.read(["lsblk", "--raw", "--paths", "--noheadings", "--output",
                    "PATH,PARTLABEL"], check=False)
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1] == ROOT_LABEL:
            found.append(fields[0])
    return found


def _read_on(device: str, run: Runner, macs: List[str]) -> Optional[dict]:
    where = tempfile.mkdtemp(prefix="gi-plan-")
    try:
        run.read(["mount", "-o", "ro", device, where])
    except CommandFailed:
        os.rmdir(where)
        return None
    try:
        return _plan_in(os.path.join(where, PLAN), macs)
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
