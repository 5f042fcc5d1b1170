"""serve's join hook: a node that reports booted from its own disk joins the cluster.

The master node bootstraps the cluster when it boots (the paper's gnt-cluster init); every
other node waits for that, then joins with gnt-node add (--readd when the cluster has it
already, as after a rebuild) and gets the cluster's ISOs before the verify. One Ganeti
change at a time: the hook holds a lock, as the master's job queue would serialise them
anyway. Every line Ganeti prints goes to the node's
event log; the node ends "joined" (verify names no error of it) or "failed" with the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from installer.cluster.config import Cluster
from installer.master.join.joiner import Joiner, JoinError
from installer.master.nodes import NodeRow, NodeState
from installer.master.state import State

STOPPED = "serve stopped during the join; it runs again when serve starts"


class JoinHook:
    def __init__(self, cluster: Cluster, state_dir: str, *,
                 before_verify: Callable[[str], None] | None = None, **joiner_options):
        self.cluster, self.state_dir, self.options = cluster, state_dir, joiner_options
        # The node's name once Ganeti has it, before the join's verify (its ISOs).
        self.before_verify = before_verify
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def stop(self) -> None:
        """serve is stopping: no join starts, and one whose commands serve ends is left
        "joining" (not failed) for the next serve to run again."""
        self.stopping.set()

    def __call__(self, state: State, node: NodeRow) -> None:
        with self.lock:
            if not self.stopping.is_set():
                self._turn(state, node)

    def _turn(self, state: State, node: NodeRow) -> None:
        now = state.node(node.name)
        # The report's node may have waited here while the master's turn joined it.
        if now is None or now.state != NodeState.BOOTED:
            return
        self._join(state, node.name)
        if node.name != self.cluster.master or not self._master_joined(state):
            return
        for waiting in state.nodes():       # booted before the cluster existed
            if waiting.state == NodeState.BOOTED and waiting.name != self.cluster.master \
                    and not self.stopping.is_set():
                self._join(state, waiting.name)

    def _stopped(self, state: State, name: str, error: Exception) -> bool:
        """A failure from serve ending the join's commands: noted, the node stays joining."""
        if self.stopping.is_set():
            state.note(name, f"{STOPPED} ({type(error).__name__}: {error})")
        return self.stopping.is_set()

    def _master_joined(self, state: State) -> bool:
        master = state.node(self.cluster.master)
        return master is not None and master.state == NodeState.JOINED

    def _join(self, state: State, name: str) -> None:
        row, node = state.require(name, "join"), self.cluster.node(name)
        is_master = name == self.cluster.master
        if not is_master and not self._master_joined(state):
            state.note(name, f"waiting for the master {self.cluster.master} to bootstrap "
                             "the cluster")
            return
        joiner = Joiner(self.cluster, self.state_dir,
                        log=lambda who, line: state.note(who, line),
                        before_verify=lambda added: self._give(state, added.name),
                        **self.options)
        try:
            if is_master:
                state.set_state(name, NodeState.JOINING, "gnt-cluster init")
                result = joiner.bootstrap(node, row.host_keys)
            else:
                readd = node.fqdn in joiner.members()
                state.set_state(name, NodeState.JOINING,
                                "gnt-node add" + (" --readd" if readd else ""))
                result = joiner.join(node, row.host_keys, readd)
        except JoinError as e:
            if not self._stopped(state, name, e):
                state.set_state(name, NodeState.FAILED, f"{e.kind}: {e.message}")
            return
        except Exception as e:  # noqa: BLE001 - any failure once serve ended the commands
            if not self._stopped(state, name, e):
                raise
            return
        warnings = result.verify.warnings
        state.set_state(name, NodeState.JOINED, "gnt-cluster verify: no errors" +
                        (f", {len(warnings)} warnings" if warnings else ""))

    def _give(self, state: State, name: str) -> None:
        """What the node gets before its verify; a failure is noted, and the verify then
        says what it costs (an instance's missing CD image fails it)."""
        if self.before_verify is None or self.stopping.is_set():
            return
        try:
            self.before_verify(name)
        except Exception as e:  # noqa: BLE001 - the verify judges the node
            state.note(name, f"before the verify: {type(e).__name__}: {e}")
