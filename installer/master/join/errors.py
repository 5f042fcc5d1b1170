"""The one error a join ends with: a kind the caller can act on and a message a person can.

Kinds (the node's state message is the error's message; `kind` picks the next step):
    unreachable     no SSH connection to the node or the master (refused, no route, timeout)
    password        ssh wanted a password or refused our key: a password is never typed
    host-key        the key a host showed is not the one it reported (or the pin is missing)
    version         Ganeti missing on the node, or a version the master cannot talk to
    already-member  `gnt-node add` without --readd for a node the cluster has
    not-member      `gnt-node add --readd` for a node the cluster does not have
    verify          `gnt-cluster verify` reports errors about the node (or did not run)
    timeout         a command gave no end within its time
    failed          anything else, with the command's last output
"""

from __future__ import annotations

KINDS = ("unreachable", "password", "host-key", "version", "already-member", "not-member",
         "verify", "timeout", "failed")


class JoinError(Exception):
    def __init__(self, kind: str, message: str, *, output: str = "", details=None):
        assert kind in KINDS, kind
        self.kind, self.message, self.output, self.details = kind, message, output, details
        super().__init__(message)
