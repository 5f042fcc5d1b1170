"""Helpers for the tests of `serve`: a rendered OUTDIR without boot loaders or real images, and
the real aiohttp application running on 127.0.0.1 in a thread of the test process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading

from installer.build import dnsmasq, pxe, render
from installer.cluster.config import Cluster
from installer.master import api, connections, handoff, serve
from tests.conftest import cluster_from, example_data

NETBOOT_SIZE = 3 * 1024 * 1024 + 123     # odd, so ranges cross no neat boundary


def render_outdir(outdir: str, data: dict | None = None) -> Cluster:
    """What `build` leaves in OUTDIR, with synthetic images and no loaders (no root tools)."""
    cluster = cluster_from(data or example_data())
    plans = render.render_plans(cluster)
    render.write_plans(plans, outdir)
    pxe.render_entries(cluster, outdir, plans=plans)
    dnsmasq.render_dnsmasq(cluster, outdir)
    artifacts = {}
    for rel, size in (("netboot/vmlinuz", 4096), ("netboot/initrd", NETBOOT_SIZE),
                      (f"images/{cluster.release.name}.tar.zst", 65536)):
        path = os.path.join(outdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data_bytes = os.urandom(size)
        with open(path, "wb") as f:
            f.write(data_bytes)
        digest = hashlib.sha256(data_bytes).hexdigest()
        artifacts[rel] = {"path": rel, "size": size, "sha256": digest, "cached": False}
        if rel.startswith("images/"):
            with open(path + ".sha256", "w") as f:
                f.write(f"{digest}  {os.path.basename(rel)}\n")
    manifest = {"cluster": cluster.fqdn, "artifacts": {
        "kernel": artifacts["netboot/vmlinuz"], "initrd": artifacts["netboot/initrd"]}}
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return cluster


class Server:
    """serve's preparation and application, listening on 127.0.0.1:<free port>."""

    def __init__(self, cluster: Cluster, outdir: str, state_dir: str, on_booted=None):
        self.opts = serve.Options(cluster=cluster, cluster_file="test.toml", outdir=outdir,
                                  state_dir=state_dir, listen=[("127.0.0.1", 0)],
                                  dhcp=False)
        self.on_booted = on_booted
        self.log: list[str] = []

    def __enter__(self) -> Server:
        self.service = serve.prepare(self.opts)
        self.service.on_booted = self.on_booted
        self.service.log = self.log.append
        self.state = self.service.state
        self.loop = asyncio.new_event_loop()
        up = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(up,), daemon=True)
        self.thread.start()
        assert up.wait(10), "the server did not start"
        return self

    def _run(self, up: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        runner = connections.runner(api.make_app(self.service))
        self.loop.run_until_complete(runner.setup())
        listener = self.loop.run_until_complete(
            connections.listen(runner, self.service.gate, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        up.set()
        self.loop.run_forever()
        listener.close()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.service.close()
        self.state.close()

    def snapshot(self) -> tuple:
        """Everything a refused request must leave as it was."""
        nodes = self.state.nodes()
        return (nodes, [self.state.events(n.name) for n in nodes], self.state.unknown(),
                [handoff.boot_form(self.opts.outdir, n.mac) for n in nodes])
