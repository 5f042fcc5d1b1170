"""`serve`: the master's service for one cluster, from a rendered (or built) OUTDIR.

Starts, in order: the state (SQLite in the state directory, the node table synced with the
cluster file), the PXE entries made to agree with the state, the HTTP API and artifacts
(aiohttp), and dnsmasq. Any failure stops what was started and names the fix. SIGTERM and
SIGINT stop dnsmasq, then HTTP. A later `serve` on the same state directory goes on where
this one stopped: nodes, events and tokens are in the database.

The join hook (installer.master.join.hook.JoinHook, unless --no-join) runs in a worker thread when a
node reports booted from its own disk; it moves the node through state.set_state(name,
NodeState.JOINING | JOINED | FAILED, message). Without it nodes stay booted. Stopping serve ends
a running join's commands (ssh to the nodes) instead of waiting minutes for them; the node
stays "joining", and the next serve joins it again, with every node still "booted".
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from installer.cluster import layout
from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError
from installer.master import (
    api,
    connections,
    dhcp,
    handoff,
    isoservice,
    limits,
    reload,
    statedir,
)
from installer.master.join import running
from installer.master.join.hook import JoinHook
from installer.master.nodes import NodeRow, NodeState
from installer.master.state import State, open_state


@dataclass
class Options:
    cluster: Cluster
    cluster_file: str
    outdir: str
    state_dir: str
    listen: list[tuple[str, int]]   # (address, port): every one is listened on
    dhcp: bool = True
    join: bool = True               # bootstrap and join nodes that report booted


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InstallerError(f"--listen '{text}' is not ADDRESS:PORT: write e.g. "
                             "--listen 10.99.0.1:8080 (0.0.0.0:8080 for every interface)")
    return host.strip("[]"), int(port)


def listen_addresses(cluster: Cluster, given: list[str] | None) -> list[tuple[str, int]]:
    """--listen's addresses (repeated, or a comma list); by default where the cluster file
    says nodes come: the provisioning address (netbooting nodes) and the address booted
    nodes report to (the master's management address, or a separate serving host's
    management_address), and 127.0.0.1 for the admin's status on the serving host. Not
    every address: a stranger on another network has no door."""
    if given:
        found = [parse_listen(one) for text in given for one in text.split(",") if one.strip()]
        return list(dict.fromkeys(found))
    prov = cluster.provisioning
    report_host = cluster.boot_report_url.removeprefix("http://").rpartition(":")[0]
    return list(dict.fromkeys((host, prov.http_port)
                              for host in (prov.address, report_host, "127.0.0.1")))


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_outdir(outdir: str) -> None:
    """serve needs what render writes; images only once a node boots."""
    for rel in (layout.PLANS, layout.TFTP, layout.DNSMASQ_MODE):
        if not os.path.exists(os.path.join(outdir, rel)):
            raise InstallerError(f"{outdir} has no {rel}: run ganeti-installer render (or "
                                 f"build) CLUSTER {outdir} first")
    for rel in ("netboot/vmlinuz", "netboot/initrd"):
        if not os.path.isfile(os.path.join(outdir, rel)):
            log(f"warning: {outdir}/{rel} is missing: nodes cannot netboot until "
                "ganeti-installer build has made the images")


def sync_pxe(state: State, outdir: str) -> None:
    """Installed nodes boot their disk, the others install: the state decides, not the last
    render (which sets every node to install)."""
    for node in state.nodes():
        want = "local" if node.on_disk else "install"
        try:
            now = handoff.boot_form(outdir, node.mac)
        except InstallerError:
            now = None      # half flipped: set it whole
        if now != want:
            handoff.set_boot(outdir, node.mac, want)
            log(f"{node.name} is {node.state}: its PXE entry is now '{want}'")


def prepare(opts: Options) -> api.Service:
    """Everything before the first socket: fails without starting anything."""
    check_outdir(opts.outdir)
    statedir.prepare(opts.state_dir)
    state = open_state(opts.state_dir)
    try:
        state.sync_nodes(opts.cluster)
        sync_pxe(state, opts.outdir)
        key = statedir.serve_key(opts.state_dir, f"ganeti-installer@{opts.cluster.fqdn}")
        admin = statedir.admin_token(opts.state_dir)
    except BaseException:
        state.close()
        raise
    isos = isoservice.IsoService(state, opts.state_dir, opts.cluster, log=log)
    hook = JoinHook(opts.cluster, opts.state_dir, before_verify=isos.to_node) \
        if opts.join else None
    service = api.Service(opts.outdir, state, key, admin, on_booted=hook, log=log)
    service.isos = isos
    service.reload = reload.Reloader(opts, state, sync_pxe, log=log,
                                     run=lambda fn, *a: asyncio.get_running_loop().run_in_executor(
                                         service.pool, fn, *a))
    for node in opts.cluster.nodes:     # booted nodes report from these: the reserve is theirs
        service.gate.know(node.ip)
    return service


def requeue_joins(state: State) -> list[NodeRow]:
    """The nodes to join at start: booted while no serve ran, or "joining" when the last one
    stopped (booted again, as they reported)."""
    for node in state.nodes():
        if node.state == NodeState.JOINING:
            state.set_state(node.name, NodeState.BOOTED, "the join starts again")
    return [n for n in state.nodes() if n.state == NodeState.BOOTED]


def run(opts: Options, *, ready: Callable[[str], None] | None = None) -> int:
    service = prepare(opts)
    try:
        return asyncio.run(_serve(opts, service, ready or (lambda url: None)))
    finally:
        service.close()
        service.state.close()


async def _serve(opts: Options, service: api.Service, ready: Callable[[str], None]) -> int:
    service.gate.total = limits.total_connections(limits.raise_open_files(log))
    log(f"connections: at most {service.gate.total} ({service.gate.reserve} of them only for "
        f"nodes), {service.gate.per_address} per client address")
    runner = connections.runner(api.make_app(service))
    await runner.setup()
    daemon = None
    listeners: list[asyncio.Server] = []
    try:
        for host, port in opts.listen:
            listeners.append(await _listen(runner, service, host, port))
        urls = [_url(host, server) for (host, _), server in zip(opts.listen, listeners,
                                                                  strict=True)]
        if service.on_booted is not None:
            for node in requeue_joins(service.state):
                service.queue_join(node)
        if opts.dhcp:
            daemon = dhcp.Dnsmasq(opts.outdir, opts.state_dir,
                                  opts.cluster.provisioning.interface,
                                  cluster_file=opts.cluster_file,
                                  on_line=_dnsmasq_line(service))
            await daemon.start()
            service.reload.dnsmasq = daemon
        log(f"serving {opts.cluster.fqdn} from {opts.outdir} at {' and '.join(urls)}; state "
            f"in {opts.state_dir}; DHCP/TFTP: "
            f"{'dnsmasq ' + daemon.conf if daemon else 'off (--no-dhcp)'}")
        ready(urls[0])
        return await _until_stopped(daemon)
    finally:
        if daemon is not None:
            await daemon.stop()
        for listener in listeners:
            listener.close()
        await runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, stop_joins, service)


async def _listen(runner, service: api.Service, host: str, port: int) -> asyncio.Server:
    try:
        return await connections.listen(runner, service.gate, host, port, log=log)
    except OSError as e:
        raise InstallerError(f"cannot listen on {host}:{port}: {e.strerror}: stop the "
                             "program holding that port, or choose another with --listen "
                             "ADDRESS:PORT (and http_port in the cluster file, which the PXE "
                             "entries name)") from None


def _url(host: str, server: asyncio.Server) -> str:
    """The URL a listener answers at (its real port when --listen said 0)."""
    port = server.sockets[0].getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def stop_joins(service: api.Service, timeout: float = 30) -> None:
    """No queued join starts; the running one's commands are ended until it returns (the
    hook leaves its node "joining")."""
    if isinstance(service.on_booted, JoinHook):
        service.on_booted.stop()
    service.joins.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout
    while service.running and time.monotonic() < deadline:
        running.end_all()
        time.sleep(0.1)
    if service.running:
        log(f"a join did not end within {timeout:.0f} s of being stopped")
    if service.isos is not None:        # an iso add would hold the stop for its copy
        service.isos.stop(timeout)


async def _until_stopped(daemon: dhcp.Dnsmasq | None) -> int:
    """0 on SIGTERM/SIGINT; 1 if dnsmasq dies under us (nodes could not boot)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits: list[asyncio.Task] = [asyncio.create_task(stop.wait())]
    if daemon is not None:
        waits.append(asyncio.create_task(daemon.exited()))
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    if stop.is_set():
        log("stopping")
        return 0
    code = daemon.proc.returncode if daemon is not None and daemon.proc is not None else None
    log(f"error: dnsmasq exited with status {code}; nodes cannot PXE boot: "
        "see its messages above, fix the cause and start serve again")
    return 1


def _dnsmasq_line(service: api.Service) -> Callable[[str], None]:
    """Log dnsmasq's lines, and note the MACs it hears from that are not nodes."""
    def note(mac: str) -> None:
        if service.state.node_by_mac(mac) is None:
            service.state.record_unknown(mac, "dhcp")

    def on_line(line: str) -> None:
        log(line)
        match = dhcp.REQUEST.search(line)
        if match:
            service.pool.submit(note, match.group(1))     # SQLite off the loop
    return on_line
