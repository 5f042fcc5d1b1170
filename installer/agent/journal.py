"""The install journal: which steps are done, kept on the node's own root filesystem so that
a power cut followed by a new netboot resumes instead of starting over.

Before the root filesystem exists there is nothing to journal: partitioning and the volume
group are checked against the disk itself. Once root is mounted the journal lives at
JOURNAL under the target, keyed by the plan's hash: a changed plan starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Optional

from installer.agent.files import write_atomically
from installer.agent.proc import CommandFailed, Runner

JOURNAL = "var/lib/ganeti-installer/journal.json"


def plan_hash(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


class Journal:
    def __init__(self, plan: dict):
        self.hash = plan_hash(plan)
        self.done: list = []
        self.path: Optional[str] = None

    def attach(self, target: str) -> None:
        """Start keeping the journal under a mounted target; load what it already holds."""
        self.path = os.path.join(target, JOURNAL)
        data = read(self.path)
        if data and data.get("plan") == self.hash:
            self.done = [s for s in data.get("done", []) if s not in self.done] + self.done
        self._save()

    def is_done(self, step: str) -> bool:
        return step in self.done

    def mark(self, step: str) -> None:
        # Done means durable: a power cut after this must not find the step's files empty
        # (ext4 allocates late, so an unpacked tree can sit in RAM long after tar exits).
        os.sync()
        if step not in self.done:
            self.done.append(step)
        self._save()

    def _save(self) -> None:
        if self.path:
            write_atomically(self.path, json.dumps({"plan": self.hash, "done": self.done}),
                             durable=True)


def read(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return _journal(f.read())
    except (OSError, ValueError):
        return None


def _journal(text: str) -> Optional[dict]:
    """The journal in `text`; None for anything else (a cut mid-write, another file)."""
    data = json.loads(text)
    return data if isinstance(data, dict) else None


def root_done(device: str, plan: dict, run: Runner, step: str = "os") -> bool:
    """Whether the root filesystem on `device` already holds a finished `step` of this plan."""
    if run.read(["blkid", "-p", "--match-tag", "TYPE", "--output", "value", device],
                check=False).strip() != "ext4":
        return False
    data = _read_on(device, run)
    return bool(data and data.get("plan") == plan_hash(plan) and step in data.get("done", []))


def _read_on(device: str, run: Runner) -> Optional[dict]:
    """The journal on the ext4 `device`. A real run mounts it read-only, which replays the
    file system's own journal: a step marked just before a power cut may be there only. A
    dry run must not write even that, so it asks debugfs (which may then miss that step)."""
    if run.dry_run:
        out = run.read(["debugfs", "-R", f"cat /{JOURNAL}", device], check=False)
        try:
            return _journal(out)
        except ValueError:
            return None
    where = tempfile.mkdtemp(prefix="gi-probe-")
    try:
        run.read(["mount", "-o", "ro", device, where])
    except CommandFailed:
        os.rmdir(where)
        return None
    try:
        return read(os.path.join(where, JOURNAL))
    finally:
        run.read(["umount", where], check=False)
        os.rmdir(where)
