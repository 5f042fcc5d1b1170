"""The one error a join ends with: a kind the caller can act on and a message a person can.

The node's state message is "<kind>: <message>"; `kind` picks the next step.
"""

from __future__ import annotations

import enum


class JoinKind(enum.StrEnum):
    """Why a join failed; the value is what the node's message starts with."""
    UNREACHABLE = "unreachable"         # no SSH connection to the node or the master
    PASSWORD = "password"               # ssh wanted a password or refused our key: never typed
    HOST_KEY = "host-key"               # a host showed a key it did not report (or none pinned)
    VERSION = "version"                 # Ganeti missing on the node, or a version too far apart
    ALREADY_MEMBER = "already-member"   # `gnt-node add` without --readd for a member
    NOT_MEMBER = "not-member"           # `gnt-node add --readd` for a node the cluster lacks
    VERIFY = "verify"                   # `gnt-cluster verify` names the node (or did not run)
    TIMEOUT = "timeout"                 # a command gave no end within its time
    FAILED = "failed"                   # anything else, with the command's last output


class JoinError(Exception):
    def __init__(self, kind: JoinKind, message: str, *, output: str = "", details=None):
        if not isinstance(kind, JoinKind):
            raise TypeError(f"JoinError kind {kind!r} is not a JoinKind")
        self.kind, self.message, self.output, self.details = kind, message, output, details
        super().__init__(message)
