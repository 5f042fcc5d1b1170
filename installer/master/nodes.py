"""A node as the master keeps it: its states, the moves allowed between them, and its row.

    pending ─install started─▶ installing ─install installed─▶ installed
    installed ─boot booted─▶ booted ─join─▶ joining ─▶ joined | failed

Every change of a node's state goes through check() (installer.master.state does it for
every writer: reports, the join, reinstall, a new MAC in the cluster file).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from installer.cluster.errors import InstallerError


class NodeState(enum.StrEnum):
    """A str: state.db, the API's JSON and `status` hold these very strings."""
    PENDING = "pending"         # installs at its next network boot
    INSTALLING = "installing"
    INSTALLED = "installed"     # its PXE entry now boots the disk
    BOOTED = "booted"           # booted its own disk: the join may start
    JOINING = "joining"
    JOINED = "joined"
    FAILED = "failed"


S = NodeState
# From any state: back to pending (reinstall, new hardware in the cluster file) and a new
# install (the agent starts one whenever the node netboots its install entry).
_ALWAYS = frozenset({S.PENDING, S.INSTALLING})
TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {state: _ALWAYS | more for state, more in {
    S.PENDING: set(),
    S.INSTALLING: {S.INSTALLED, S.FAILED},
    S.INSTALLED: {S.BOOTED},
    S.BOOTED: {S.BOOTED, S.JOINING, S.FAILED},      # booted again; the join starts or fails
    S.JOINING: {S.JOINED, S.FAILED, S.BOOTED},      # booted: serve stopped, the join reruns
    S.JOINED: set(),                                # a member that reboots stays joined
    S.FAILED: {S.FAILED, S.BOOTED},                 # a node whose join failed boots again
}.items()}
# Not to install: its plan (and token) is not handed out.
ON_DISK = frozenset({S.INSTALLED, S.BOOTED, S.JOINING, S.JOINED})
# What the join may set (State.set_state): the install's states come from reports only.
JOIN_STATES = (S.BOOTED, S.JOINING, S.JOINED, S.FAILED)


class Forbidden(InstallerError):
    """A state change the table does not allow: names both states and the allowed ones."""

    def __init__(self, name: str, old: NodeState, new: NodeState):
        allowed = ", ".join(s for s in NodeState if s in TRANSITIONS[old])
        super().__init__(f"{name} cannot go from {old} to {new}: from {old} a node goes "
                         f"only to {allowed}")
        self.old, self.new = old, new


def check(name: str, old: NodeState, new: NodeState) -> None:
    if new not in TRANSITIONS[old]:
        raise Forbidden(name, old, new)


@dataclass(frozen=True)
class NodeRow:
    """One node of state.db. `token` is the node's secret: public() leaves it out."""
    name: str
    mac: str
    ip: str
    token: str = field(repr=False)
    state: NodeState
    step: str               # the step of the last report ("join" during the join)
    index: int              # the install's stage, of `total`
    total: int
    attempt: int            # installs begun so far
    attempt_time: float     # the node's clock when its latest install began
    message: str
    host_keys: dict[str, str] = field(hash=False)   # {"ed25519": "ssh-ed25519 AAAA..."}
    updated: float

    def public(self) -> dict:
        """What GET /api/v1/nodes and `status --json` show, in this key order."""
        return {"name": self.name, "mac": self.mac, "ip": self.ip, "state": str(self.state),
                "step": self.step, "index": self.index, "total": self.total,
                "attempt": self.attempt, "updated": self.updated, "message": self.message}

    @property
    def on_disk(self) -> bool:
        return self.state in ON_DISK
