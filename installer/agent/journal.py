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
import subprocess
import tempfile
from typing import Optional

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
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"plan": self.hash, "done": self.done}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # The rename is durable only once its directory is: without this, ext4 commits it
        # up to five seconds later, and a power cut in that window loses the step.
        fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def root_done(device: str, plan: dict, step: str = "os") -> bool:
    """Whether the root filesystem on `device` already holds a finished `step` of this plan."""
    probe = subprocess.run(["blkid", "--match-tag", "TYPE", "--output", "value", device],
                           stdout=subprocess.PIPE, universal_newlines=True)
    if probe.stdout.strip() != "ext4":
        return False
    where = tempfile.mkdtemp(prefix="gi-probe-")
    if subprocess.run(["mount", "-o", "ro", device, where]).returncode != 0:
        os.rmdir(where)
        return False
    try:
        data = read(os.path.join(where, JOURNAL))
    finally:
        subprocess.run(["umount", where])
        os.rmdir(where)
    return bool(data and data.get("plan") == plan_hash(plan) and step in data.get("done", []))
