"""serve's ISO job: `iso add`, `iso remove`, and a joining node getting the cluster's ISOs
before its verify. Every input is checked before anything changes (all files readable, names
valid, no name taken by other bytes); then serve keeps its own copy (state directory,
`isos/`), records the ISO, and puts it on every joined node (installer.master.isodist),
recording each node's state as it goes. One ISO job at a time.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

from installer.cluster import sshkeys
from installer.cluster.config import Cluster
from installer.master import isodist, isos, multicast, statedir
from installer.master.isos import Iso, IsoError
from installer.master.join import running
from installer.master.join.remote import Remote
from installer.master.nodes import NodeState
from installer.master.nodeshell import Shell, SshShell
from installer.master.state import State


class IsoService:
    """`shells(names)` reaches nodes (SSH by default); `sender(shells)` says how multicast
    leaves this host, or None for SSH copies only."""

    def __init__(self, state: State, state_dir: str, cluster: Cluster, *,
                 shells: Callable[[Sequence[str]], list[Shell]] | None = None,
                 sender: Callable[[list[Shell]], multicast.Options | None] | None = None,
                 log: Callable[[str], None] = print):
        self.state, self.state_dir, self.cluster, self.log = state, state_dir, cluster, log
        self.shells = shells or self._ssh_shells
        self.sender = sender or (lambda s: multicast.Options(multicast.source_for(s[0].address)))
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def stop(self, timeout: float = 30) -> None:
        """serve is stopping: end the running ISO job's commands (its nodes end failed, at
        no final name; the next iso add completes them) rather than wait for the copy."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        while self.lock.locked() and time.monotonic() < deadline:
            running.end_all()
            time.sleep(0.1)

    def _ssh_shells(self, names: Sequence[str]) -> list[Shell]:
        remote = Remote(statedir.key_path(self.state_dir),
                        sshkeys.known_hosts_path(self.state_dir))
        return [SshShell(n, self.cluster.node(n).ip, isos.ROOT, remote=remote) for n in names]

    def joined(self) -> list[str]:
        return [n.name for n in self.state.nodes() if n.state == NodeState.JOINED]

    # -- iso add --------------------------------------------------------------------------

    def add(self, files: Sequence[str], *, copy: bool = False,
            rate_mbps: int | None = None) -> dict:
        """Check every file, then put each on every joined node. IsoError (nothing changed)
        for bad input; per node results otherwise."""
        with self.lock:
            checked = self._check(files)
            targets = self.joined()
            out = []
            for path, name, sha in checked:
                iso = self._keep(path, name, sha)
                out.append(self._distribute(iso, targets, copy=copy, rate_mbps=rate_mbps))
            return {"isos": out, "ok": all(r["ok"] for i in out for r in i["nodes"])}

    def _check(self, files: Sequence[str]) -> list[tuple[str, str, str]]:
        if not files:
            raise IsoError("name at least one ISO file: ganeti-installer iso add FILE...")
        names: dict[str, str] = {}
        for path in files:
            isos.readable(path)
            name = isos.check_name(os.path.basename(path), path)
            if name in names:
                raise IsoError(f"{path} and {names[name]} would both be {name}: rename one")
            names[name] = path
        checked = []
        for name, path in names.items():
            sha = isos.sha256_of(path)
            known = self.state.iso(name)
            if known is not None and known["sha256"] != sha:
                raise IsoError(f"{path}: the cluster has an ISO {name} with other bytes "
                               f"(sha256 {known['sha256'][:16]}…, this file {sha[:16]}…): "
                               f"remove it first (ganeti-installer iso remove {name}) or "
                               "rename your file")
            checked.append((path, name, sha))
        return checked

    def _keep(self, path: str, name: str, sha: str) -> Iso:
        known = self.state.iso(name)
        if known is not None and os.path.isfile(known["path"]):
            return Iso(name, sha, known["size"], known["path"])
        iso = isos.keep(self.state_dir, path, name, sha)
        self.state.add_iso(iso.name, iso.sha256, iso.size, iso.path)
        return iso

    def _distribute(self, iso: Iso, targets: Sequence[str], *, copy: bool,
                    rate_mbps: int | None = None) -> dict:
        shells = self.shells(targets)
        opts = None if copy or not shells else self.sender(shells)
        if opts is not None and rate_mbps:
            opts = dataclasses.replace(opts, rate_mbps=rate_mbps)
        with tempfile.TemporaryDirectory(dir=isodist.workdir_for(self.state_dir)) as work:
            results = isodist.distribute(iso, shells, multicast_opts=opts, workdir=work,
                                         record=self._recorder(iso.name),
                                         stopping=self.stopping)
        for r in results:
            self.log(f"iso {iso.name}: {r.node}: {'ok' if r.ok else 'FAILED'}: {r.message}")
        return {"name": iso.name, "sha256": iso.sha256, "size": iso.size,
                "nodes": [{"node": r.node, "ok": r.ok, "message": r.message}
                          for r in results]}

    def _recorder(self, name: str) -> isodist.Record:
        return lambda node, state, message: self.state.set_iso_node(name, node, state, message)

    # -- a node that joins -----------------------------------------------------------------

    def to_node(self, node: str) -> None:
        """Every ISO of the cluster to a node Ganeti has just added, before the join's verify
        (which checks an instance's cdrom_image_path on every node); one node: a plain copy
        is as fast as multicast. Lines go to its event log."""
        with self.lock:
            for known in self.state.isos():
                iso = Iso(known["name"], known["sha256"], known["size"], known["path"])
                result = self._distribute(iso, [node], copy=True)["nodes"][0]
                self.state.note(node, f"iso {iso.name}: "
                                f"{'ok' if result['ok'] else 'FAILED'}: {result['message']}",
                                step="iso")

    # -- iso remove -----------------------------------------------------------------------

    def remove(self, name: str) -> dict:
        """From every joined node, then from serve; a node that fails keeps the ISO listed
        (failed, saying why) so that `iso remove` can run again."""
        with self.lock:
            known = self.state.iso(name)
            if known is None:
                have = [i["name"] for i in self.state.isos()]
                raise IsoError(f"the cluster has no ISO {name}: it has "
                               f"{', '.join(have) or 'none'} (ganeti-installer iso list)")
            failed = []
            for shell in self.shells(self.joined()):
                try:
                    shell.run(isos.NodePaths(shell.root, name).remove(), timeout=120)
                    self.state.drop_iso_node(name, shell.node)
                except Exception as e:      # noqa: BLE001 - any node's failure is reported
                    failed.append(shell.node)
                    self.state.set_iso_node(name, shell.node, isodist.FAILED,
                                            f"still there: iso remove failed: {e}; run "
                                            f"ganeti-installer iso remove {name} again")
            if failed:
                return {"name": name, "removed": False, "failed": failed}
            self.state.remove_iso(name)
            isos.forget(self.state_dir, name)
            return {"name": name, "removed": True, "failed": []}
