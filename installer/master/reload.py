"""serve takes a node's new MAC from its cluster file while it runs (`POST /api/v1/reload`,
which `rebuild --mac` sends once it has rewritten the file and rendered OUTDIR again).

Only new MACs are taken: a file that differs from the running one in anything else is
refused (restart serve for that), and so is a file that no longer validates, or an OUTDIR
whose plans are not rendered for the new MACs; serve then goes on with the file it has, and
nothing changes. Taken, in this order: the node table synced (the node pending with a new
token, the old MAC forgotten), the old MAC's PXE entries removed (unless another node has
that MAC now: swapped MACs) and the new one's set from the state, and dnsmasq restarted if
its configuration changed since it started (it reads its dhcp-host lines only at start).
serve never renders: the files come from build's side.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from installer.cluster import config, layout
from installer.cluster.errors import ConfigInvalid, InstallerError, escape
from installer.master import handoff, reports
from installer.master.state import State


class Reloader:
    """serve's reload: one at a time. `dnsmasq` is set by serve once it has started one."""

    def __init__(self, opts: Any, state: State, sync_pxe: Callable[[State, str], None],
                 log: Callable[[str], None], run: Callable[..., Any]):
        self.opts, self.state, self.sync_pxe, self.log = opts, state, sync_pxe, log
        self.run = run          # run(fn, *args): awaitable, in serve's API threads
        self.dnsmasq: Any = None
        self.lock = asyncio.Lock()

    async def __call__(self) -> dict:
        async with self.lock:
            answer = await self.run(self.take_file)
            answer["dnsmasq"] = "off" if self.dnsmasq is None else "unchanged"
            if self.dnsmasq is not None and self.dnsmasq.stale():
                try:
                    await self.dnsmasq.restart()
                except InstallerError as e:
                    raise reports.Refused(500, f"the new MACs are taken, but dnsmasq did not "
                                               f"start again: {e}") from None
                answer["dnsmasq"] = "restarted"
                self.log("dnsmasq restarted with the new MACs")
            return answer

    def take_file(self) -> dict:
        """The cluster file again: its new MACs taken, or Refused and nothing changed."""
        path = self.opts.cluster_file
        try:
            new = config.load(path)
        except ConfigInvalid as e:
            shown = "; ".join(str(x) for x in e.errors[:3])
            raise reports.Refused(422, f"{path} does not validate ({shown}): serve goes on "
                                       "with the cluster file it started with; fix the file "
                                       "and reload again") from None
        moved = mac_changes(self.opts.cluster, new)
        for m in moved:
            rendered(self.opts.outdir, m["node"], m["new"], path)
        if moved:
            try:
                self.state.sync_nodes(new)
                held = {n.mac for n in new.nodes}      # swapped MACs: another's now
                for m in moved:
                    if m["old"] not in held:
                        handoff.forget(self.opts.outdir, m["old"])
                self.sync_pxe(self.state, self.opts.outdir)
            except (OSError, InstallerError) as e:
                raise reports.Refused(500, f"taking {path} failed half way ({e}): run "
                                           "ganeti-installer render and restart serve") from None
            self.opts.cluster = new
        for m in moved:
            self.log(f"{m['node']}: new MAC {m['new']} from {escape(path)} (was {m['old']}): "
                     "pending, with a new token")
        return {"file": path, "changed": moved}


def mac_changes(old: config.Cluster, new: config.Cluster) -> list[dict]:
    """[{"node", "key", "old", "new"}] for each node whose MAC differs; Refused (409) if the
    files differ in anything else."""
    if [n.name for n in old.nodes] != [n.name for n in new.nodes] or \
            replace(new, nodes=tuple(replace(n, mac=o.mac) for n, o in
                                     zip(new.nodes, old.nodes, strict=True))) != old:
        raise reports.Refused(409, f"{new.file} changed in more than node MACs: a running "
                                   "serve takes only a node's new MAC (rebuild --mac); for "
                                   "any other change run ganeti-installer render and restart "
                                   "serve")
    return [{"node": n.name, "key": f"nodes[{n.index}].mac", "old": o.mac, "new": n.mac}
            for n, o in zip(new.nodes, old.nodes, strict=True) if n.mac != o.mac]


def rendered(outdir: str, name: str, mac: str, path: str) -> None:
    """Refused (409) unless OUTDIR holds NAME's plan and PXE entries for MAC."""
    plan = os.path.join(outdir, layout.plan_path(name))
    try:
        with open(plan, encoding="utf-8") as f:
            ok = json.load(f)["node"]["mac"] == mac
        ok = ok and all(os.path.isfile(os.path.join(outdir, layout.entry_path(mac, form, kind)))
                        for form in layout.FORMS for kind in layout.KINDS)
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise reports.Refused(409, f"{outdir} is not rendered for {name}'s new MAC {mac} in "
                                   f"{path}: rebuild --mac renders it; by hand, run "
                                   "ganeti-installer render and restart serve")

