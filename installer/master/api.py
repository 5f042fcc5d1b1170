"""The master's HTTP side (aiohttp): plans by MAC, progress reports, status, and the artifacts.

    GET  /api/v1/plans/<mac>            an armed node's plan with its token and the master's
                                        SSH key: once per install cycle, then 409 (recorded)
    POST /api/v1/nodes/<name>/events    a report (Authorization: Bearer <node token>)
    GET  /api/v1/nodes/<name>/secrets   the root password hash (node token, while installing)
    GET  /api/v1/nodes[/<name>[/events]]  status for admins (admin token, or from loopback):
                                        never a token (events: a page, ?after=<id>&limit=<n>)
    GET  /api/v1/unknown                MACs that asked for a plan or an entry, not in the file
    POST /api/v1/nodes/<name>/reinstall back to pending and the install entry (admin token)
    POST /api/v1/reload                 take the cluster file's new node MACs (admin token)
    GET  /api/v1/isos                   the cluster's ISOs and their state on each node
    POST /api/v1/isos                   {"files": [...], "copy": false, "rate_mbps": 900}: add
                                        ISOs (admin token)
    DELETE /api/v1/isos/<name>          remove an ISO from every node (admin token)
    GET  /<netboot|images|tftp|agent>/… and /manifest.json: files, with ranges and checksums

Every refusal is a JSON object {"error": "..."} with a 4xx status, and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from installer.cluster import layout
from installer.cluster.errors import InstallerError
from installer.master import artifacts, connections, handoff, limits, reports
from installer.master.commits import GroupCommit
from installer.master.nodes import NodeRow, NodeState
from installer.master.state import NO_FETCH, State

AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
# A file this large fills the link for a while: its packets queue behind a report's answer,
# not in front (Linux's TC_PRIO_BULK, the lowest band of pfifo_fast, Debian's default qdisc).
BULK_BYTES = 1 << 20
TC_PRIO_BULK = 2
# The per-MAC entry paths a loader asks for; a MAC with no entry there is an unknown machine.
ENTRY = re.compile(r"tftp/(?:ipxe/|pxelinux\.cfg/01-|grub/grub\.cfg-01-)"
                   r"([0-9a-f]{2}(?:-[0-9a-f]{2}){5})(?:\.ipxe)?")


@dataclass
class Service:
    """What the handlers share. on_booted(state, node) runs in a worker thread once a node
    reports booted (the join, installer/join.py); None: nodes stay booted."""
    outdir: str
    state: State
    serve_key: str
    admin_token: str
    on_booted: Callable[[State, NodeRow], None] | None = None
    log: Callable[[str], None] = print
    checksums: artifacts.Checksums = field(init=False)
    pool: ThreadPoolExecutor = field(init=False)
    commits: GroupCommit = field(init=False)
    joins: ThreadPoolExecutor = field(init=False)
    running: set = field(init=False, default_factory=set)
    gate: connections.Gate = field(init=False)
    isos: Any = None        # the ISO job (isoservice.IsoService); None: no ISO routes work
    reload: Any = None      # async () -> dict (reload.Reloader); None: no reload

    def __post_init__(self):
        # Connections by client address (its log is the service's, even a later one).
        self.gate = connections.Gate(log=lambda line: self.log(line))
        self.checksums = artifacts.Checksums(self.outdir)
        # Status reads, checksums, the admin's writes and unknown MACs: a few threads, so
        # that one waiting for the disk does not hold up the others.
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="api")
        # Reports: written in groups, one fsync for all that arrive together.
        self.commits = GroupCommit(self.state)
        # Joins take minutes and one at a time (the hook's lock): their own thread, which
        # serve can stop without waiting on the API's.
        self.joins = ThreadPoolExecutor(1, thread_name_prefix="join")

    def close(self) -> None:
        """Finish what the threads have begun, then stop them (the state stays open)."""
        self.pool.shutdown()
        self.commits.close()
        self.joins.shutdown()

    def queue_join(self, node: NodeRow) -> None:
        if self.on_booted is not None:
            future = self.joins.submit(_join, self, node)
            self.running.add(future)
            future.add_done_callback(self.running.discard)


# aiohttp 3.9 brought typed application keys; Debian 12's python3-aiohttp is 3.8.4, and the
# master installed from an `usb --all` stick runs serve on it: a plain string key there.
SERVICE: Any = web.AppKey("service", Service) if hasattr(web, "AppKey") else "service"


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(service: Service) -> web.Application:
    # client_max_size: the largest body any route reads (a report).
    app = web.Application(client_max_size=reports.LIMIT, middlewares=[_json_errors])
    app[SERVICE] = service
    app.on_response_prepare.append(_queue_band)
    app.router.add_get("/api/v1/plans/{mac}", get_plan)
    app.router.add_get("/api/v1/nodes", get_nodes)
    app.router.add_get("/api/v1/nodes/{name}", get_node)
    app.router.add_get("/api/v1/nodes/{name}/events", get_events)
    app.router.add_post("/api/v1/nodes/{name}/events", post_event)
    app.router.add_post("/api/v1/nodes/{name}/reinstall", post_reinstall)
    app.router.add_get("/api/v1/nodes/{name}/secrets", get_secrets)
    app.router.add_post("/api/v1/reload", post_reload)
    app.router.add_get("/api/v1/unknown", get_unknown)
    app.router.add_get("/api/v1/isos", get_isos)
    app.router.add_post("/api/v1/isos", post_isos)
    app.router.add_delete("/api/v1/isos/{name}", delete_iso)
    app.router.add_route("*", "/api/{rest:.*}", no_such_api)
    app.router.add_get("/{path:.*}", get_file)     # HEAD too
    return app


@web.middleware
async def _json_errors(request: web.Request, handler):
    """aiohttp's own refusals (405, 413, ...) as JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error(e.status, f"{e.reason}: {request.method} {request.path}")


async def _blocking(svc: Service, fn, *args):
    """Run the SQLite and file work of a request in the API's own threads, in one hop: the
    loop that streams images to other nodes stays free, and file work waits in another pool."""
    return await asyncio.get_running_loop().run_in_executor(svc.pool, fn, *args)


async def _answer(svc: Service, fn, *args) -> web.Response:
    """fn(*args) in the API threads: its JSON-able result, or its refusal."""
    try:
        return web.json_response(await _blocking(svc, fn, *args))
    except reports.Refused as e:
        return error(e.status, e.message)


class BulkFile(web.FileResponse):
    """A file large enough (an image) to leave in the bulk band."""


async def _queue_band(request: web.Request, response: web.StreamResponse) -> None:
    """Large files leave in the bulk band, everything else (a keep-alive connection may carry
    both) in the default one: a node's plan or report answer does not wait behind 40 netboot
    images in the master's NIC queue."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        band = TC_PRIO_BULK if isinstance(response, BulkFile) else 0
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, band)


# -- plans ----------------------------------------------------------------------------------

async def get_plan(request: web.Request) -> web.Response:
    """The plan of an armed node, once per install cycle: the first fetch takes it (and its
    token); every later one is refused and recorded, in the commit thread (one transaction:
    of two fetches at once, one wins). The plan file is read on the loop (a small file)."""
    svc: Service = request.app[SERVICE]
    address = request.remote or "?"
    try:
        node, plan = plan_for_mac(svc, request.match_info["mac"])
        taken, node, fetch = await asyncio.wrap_future(svc.commits.submit(
            svc.state.take_plan, node.name, address, time.time()))
    except UnknownMac as e:
        await _blocking(svc, svc.state.record_unknown, e.mac, "plan")
        svc.log(f"plan asked for by unknown MAC {e.mac}")
        return error(e.status, e.message)
    except reports.Refused as e:
        return error(e.status, e.message)
    except (sqlite3.Error, InstallerError) as e:    # nothing handed out: the agent asks again
        svc.log(f"the state database did not record a plan fetch: {e}")
        return error(503, f"the master could not record the plan fetch ({e}): check the "
                          "disk of serve's --state directory; the agent asks again")
    if not taken:
        if fetch["noted"]:      # as often as an event is made: a flood is not a log flood
            svc.log(f"{node.name}: plan fetch from {address} refused ({node.state})")
        return error(409, refusal(node, fetch))
    plan["report"]["token"] = node.token
    svc.log(f"plan of {node.name} sent to {address}")
    return web.json_response(plan)


def refusal(node: NodeRow, fetch: dict) -> str:
    """Why a plan fetch was refused, who took the plan, what a resuming node does, and how
    to re-arm."""
    said = []
    if node.state != NodeState.PENDING:
        said.append(f"{node.name} is {node.state}: its plan goes out only while it is armed "
                    "for install (pending)")
    if fetch["taken_at"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(fetch["taken_at"]))
        said.append(f"the plan of {node.name} was already taken by {fetch['taken_by']} at "
                    f"{when} (a plan goes out once per install cycle); a node resuming after "
                    "a power cut continues from the plan on its disk")
    said.append(f"to install {node.name} afresh, re-arm it: ganeti-installer reinstall "
                f"CLUSTER OUTDIR {node.name}")
    return "; ".join(said)


class UnknownMac(reports.Refused):
    def __init__(self, mac: str):
        super().__init__(404, f"no node with MAC {mac} in the cluster file: to install this "
                              f"machine add it under [[nodes]] with mac = \"{mac}\", run "
                              "ganeti-installer render and restart serve")
        self.mac = mac


def plan_for_mac(svc: Service, raw: str) -> tuple[NodeRow, dict]:
    """The node with this MAC and its plan without a token, or Refused (UnknownMac: not in
    the cluster)."""
    mac = raw.lower().replace("-", ":")
    if not handoff.MAC.fullmatch(mac):
        raise reports.Refused(400, f"'{raw[:40]}' is not a MAC address: ask for "
                                   "/api/v1/plans/52-54-00-12-34-56 (the booting NIC's MAC)")
    node = svc.state.node_by_mac(mac)
    if node is None:
        raise UnknownMac(mac)
    try:
        return node, _plan_for(svc, node)
    except InstallerError as e:
        raise reports.Refused(500, str(e)) from None


def _plan_for(svc: Service, node: NodeRow) -> dict:
    """OUTDIR/plans/<name>.json with the master's key added and the root password hash taken
    out (GET .../secrets hands it to the node's token)."""
    return rendered_plan(svc.outdir, svc.serve_key, node, keep_hash=False)


def stick_plan(outdir: str, serve_key: str, node: NodeRow) -> dict:
    """The plan an install stick carries: as served, with the node's token and the root
    password hash inline (no master to ask during the install; the stick is a secret)."""
    plan = rendered_plan(outdir, serve_key, node, keep_hash=True)
    plan["report"]["token"] = node.token
    return plan


def rendered_plan(outdir: str, serve_key: str, node: NodeRow, *, keep_hash: bool) -> dict:
    """OUTDIR/plans/<name>.json with the serving host's key in root's authorized_keys."""
    path = os.path.join(outdir, layout.plan_path(node.name))
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
    except (OSError, ValueError) as e:
        raise InstallerError(f"cannot read {path} ({e}): run ganeti-installer render") from None
    if plan.get("node", {}).get("mac") != node.mac:
        raise InstallerError(f"{path} is not for {node.mac}: OUTDIR is from another cluster "
                             "file; run ganeti-installer render, then restart serve")
    root = plan["users"]["root"]
    if root.get("password_hash") and not keep_hash:   # not in plain HTTP: asked with the token
        plan["users"]["root"] = {"password_hash": None,
                                 "password_hash_url": f"{plan['report']['url']}/secrets"}
    files = plan["files"]
    keys = next((f for f in files if f["path"] == AUTHORIZED_KEYS), None)
    if keys is None:
        keys = {"path": AUTHORIZED_KEYS, "mode": "0600", "content": ""}
        files.append(keys)
    content = keys["content"]
    if content and not content.endswith("\n"):
        content += "\n"
    keys["content"] = content + serve_key + "\n"
    return plan


# -- reports --------------------------------------------------------------------------------

async def post_event(request: web.Request) -> web.Response:
    """A node's report: no token, no further look (401 before the body is read)."""
    svc: Service = request.app[SERVICE]
    token, refusal = _bearer(request, NODE_TOKEN)
    if refusal is not None:
        return refusal
    try:
        body = await asyncio.wait_for(request.read(), limits.BODY_TIMEOUT)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"the report is larger than {reports.LIMIT // 1024} KiB: shorten "
                          "its message")
    except TimeoutError:        # a body sent a byte at a time holds nothing for long
        resp = error(408, f"the report's body did not come within {limits.BODY_TIMEOUT:g} s")
        resp.force_close()
        return resp
    name = request.match_info["name"]
    try:
        report, outcome = await asyncio.wrap_future(svc.commits.submit(take_report, svc, name,
                                                                       token, body))
    except reports.Refused as e:
        svc.log(f"{name}: refused report ({e.status}): {e.message}")
        return error(e.status, e.message)
    except sqlite3.Error as e:      # nothing recorded: the agent sends it again
        svc.log(f"{name}: the state database did not take a report: {e}")
        return error(500, f"the master could not record the report ({e}): check the disk "
                          "of serve's --state directory; the agent sends it again")
    after = outcome.node
    if request.remote:              # a node's token worked: it may use the reserve
        svc.gate.know(request.remote)
    if not outcome.duplicate:       # logged once committed, not while holding the lock
        svc.log(f"{name}: {report.step} {report.status} -> {after.state}")
    if outcome.booted:
        svc.queue_join(after)
    return web.json_response({"node": name, "state": after.state,
                              "attempt": after.attempt, "duplicate": outcome.duplicate})


def take_report(svc: Service, name: str, token: str,
                body: bytes) -> tuple[reports.Report, reports.Outcome]:
    """Check and record one report: the node, its token, the body, the order; or Refused."""
    node_token(svc, name, token)
    report = reports.parse(body)
    flip = lambda n: handoff.set_boot(svc.outdir, n.mac, "local")  # noqa: E731
    try:
        outcome = reports.record(svc.state, name, report, on_installed=flip)
    except InstallerError as e:     # the PXE flip failed: nothing recorded, the agent retries
        raise reports.Refused(500, str(e)) from None
    return report, outcome


def node_token(svc: Service, name: str, token: str) -> NodeRow:
    """The node whose token this is, or Refused (404 no such node, 403 wrong token)."""
    node = svc.state.node(name)
    if node is None:
        raise reports.Refused(404, f"no node '{name}' in the cluster file")
    if not secrets.compare_digest(token, node.token):
        raise reports.Refused(403, f"wrong token for {name}: use report.token of the plan "
                                   "the node got (a reinstall gives a new one)")
    return node


NODE_TOKEN = ("use 'Authorization: Bearer <token>' with the token of the node's plan "
              "(report.token)")
ADMIN_TOKEN = ("use 'Authorization: Bearer <admin token>' (admin.token in serve's --state "
               "directory; ganeti-installer status --state DIR sends it), or ask from the "
               "serving host itself on 127.0.0.1 or ::1")


def _bearer(request: web.Request, fix: str) -> tuple[str, web.Response | None]:
    """The request's bearer token, or a 401 naming the request and FIX."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        resp = error(401, f"{request.method} {request.path} needs a token: {fix}")
        resp.force_close()      # its body is never read: not kept alive to drain it
        return "", resp
    return token.strip(), None


def _join(svc: Service, node: NodeRow) -> None:
    if svc.on_booted is None:
        return
    try:
        svc.on_booted(svc.state, node)
    except Exception as e:  # noqa: BLE001 - a join bug must not go unnoticed, nor stop serve
        svc.log(f"{node.name}: join failed: {type(e).__name__}: {e}")
        try:
            svc.state.set_state(node.name, NodeState.FAILED, f"join: {type(e).__name__}: {e}")
        except InstallerError as why:   # it got further (joined) before the bug: kept
            svc.log(f"{node.name}: not marked failed: {why}")


# -- status and admin -----------------------------------------------------------------------

# The serving host's own tools (status, reinstall) ask without the admin token. Exactly these
# addresses: Linux takes no packet from 127.0.0.0/8 on a real interface, and the tests play a
# client from the network with another loopback address (127.0.0.2).
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def _admin(request: web.Request, *, loopback: bool) -> web.Response | None:
    """None if the request may have what the admin may (the admin token, or when LOOPBACK
    may, from the serving host); else its 401 or 403."""
    if loopback and request.remote in LOOPBACK:
        return None
    token, refusal = _bearer(request, ADMIN_TOKEN)
    if refusal is not None:
        return refusal
    svc: Service = request.app[SERVICE]
    if not secrets.compare_digest(token, svc.admin_token):
        return error(403, f"{request.method} {request.path}: wrong admin token: it is "
                          "admin.token in serve's --state directory")
    return None


def admin_only(handler):
    """Status routes show MACs, events and messages: the admin's, or the serving host's."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        refusal = _admin(request, loopback=True)    # tested with `is`: an aiohttp 3.8
        return refusal if refusal is not None else await handler(request)  # Response is falsy
    guarded.__doc__ = handler.__doc__
    return guarded


@admin_only
async def get_nodes(request: web.Request) -> web.Response:
    svc: Service = request.app[SERVICE]
    return await _answer(svc, node_list, svc.state)


def node_list(state: State) -> list[dict]:
    """Every node as status shows it: its row and who took its plan in this cycle."""
    fetches = state.plan_fetches()
    return [dict(n.public(), plan=fetches.get(n.name, dict(NO_FETCH))) for n in state.nodes()]


@admin_only
async def get_node(request: web.Request) -> web.Response:
    svc: Service = request.app[SERVICE]
    return await _answer(svc, node_status, svc.state, request.match_info["name"])


def node_status(state: State, name: str) -> dict:
    node = state.node(name)
    if node is None:
        raise reports.Refused(404, f"no node '{name}' in the cluster file")
    return dict(node.public(), plan=state.plan_fetch(name), host_keys=node.host_keys,
                steps=state.steps(name), events_dropped=state.events_dropped(name))


@admin_only
async def get_events(request: web.Request) -> web.Response:
    """?after=<id>&limit=<n>: the page of events after that one; without after, the latest."""
    svc: Service = request.app[SERVICE]
    try:
        after, limit = _page(request.query)
    except reports.Refused as e:
        return error(e.status, e.message)
    return await _answer(svc, node_events, svc.state, request.match_info["name"], after, limit)


def _page(query) -> tuple[int | None, int]:
    """after (None: the latest) and limit (capped at limits.PAGE) of a page of events."""
    def number(key: str) -> int | None:
        text = query.get(key)
        if text is None:
            return None
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise reports.Refused(400, f"'{key}' must be a whole number, e.g. "
                                       "?after=120&limit=100")
        return int(text)
    limit = number("limit")
    return number("after"), min(limits.PAGE, limits.PAGE if limit is None else limit)


def node_events(state: State, name: str, after: int | None = None,
                limit: int = limits.PAGE) -> list[dict]:
    if state.node(name) is None:
        raise reports.Refused(404, f"no node '{name}' in the cluster file")
    return state.events(name, limit=limit, after=after)


@admin_only
async def get_unknown(request: web.Request) -> web.Response:
    svc: Service = request.app[SERVICE]
    return await _answer(svc, svc.state.unknown)


async def post_reinstall(request: web.Request) -> web.Response:
    svc: Service = request.app[SERVICE]
    refusal = _admin(request, loopback=False)
    if refusal is not None:
        return refusal
    return await _answer(svc, reinstall_node, svc, request.match_info["name"])


async def post_reload(request: web.Request) -> web.Response:
    """The cluster file's new node MACs, taken without a restart; the body is not read."""
    svc: Service = request.app[SERVICE]
    refusal = _admin(request, loopback=False)
    if refusal is not None:
        return refusal
    if svc.reload is None:
        return error(503, "this serve cannot reload its cluster file: restart it")
    try:
        return web.json_response(await svc.reload())
    except reports.Refused as e:
        svc.log(f"reload refused ({e.status}): {e.message}")
        return error(e.status, e.message)


async def get_secrets(request: web.Request) -> web.Response:
    """The root password hash for the node's own token, while it installs: the plan, which
    travels in plain HTTP to whoever asks first, does not carry it."""
    svc: Service = request.app[SERVICE]
    token, refusal = _bearer(request, NODE_TOKEN)
    if refusal is not None:
        return refusal
    return await _answer(svc, node_secrets, svc, request.match_info["name"], token)


def node_secrets(svc: Service, name: str, token: str) -> dict:
    node = node_token(svc, name, token)
    if node.state != NodeState.INSTALLING:
        raise reports.Refused(403, f"{name} is {node.state}: its secrets go out only while "
                                   "it installs (after its 'install started' report)")
    path = os.path.join(svc.outdir, layout.plan_path(name))
    try:
        with open(path, encoding="utf-8") as f:
            hashed = json.load(f)["users"]["root"]["password_hash"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise reports.Refused(500, f"cannot read {path} ({e}): run ganeti-installer "
                                   "render") from None
    svc.log(f"{name}: root password hash sent")
    return {"node": name, "root_password_hash": hashed}


def reinstall_node(svc: Service, name: str) -> dict:
    if svc.state.node(name) is None:
        raise reports.Refused(404, f"no node '{name}' in the cluster file")
    try:
        node = reinstall(svc.state, svc.outdir, name)
    except InstallerError as e:
        raise reports.Refused(500, str(e)) from None
    svc.log(f"{name}: marked for reinstall")
    return {"node": name, "state": node.state}


def reinstall(state: State, outdir: str, name: str) -> NodeRow:
    """Pending, new token, install entry: together or not at all."""
    return state.reinstall(name, before_commit=lambda node: handoff.set_boot(outdir, node.mac,
                                                                         "install"))


# -- ISOs ------------------------------------------------------------------------------------

@admin_only
async def get_isos(request: web.Request) -> web.Response:
    svc: Service = request.app[SERVICE]
    return await _answer(svc, svc.state.isos)


async def post_isos(request: web.Request) -> web.Response:
    """Runs until every node has the ISOs or failed (minutes for large ones)."""
    svc: Service = request.app[SERVICE]
    refusal = _admin(request, loopback=False)      # serve reads the files it names as root
    if refusal is not None:
        return refusal
    try:
        body = await request.json()
        files, copy, rate = body["files"], body.get("copy", False), body.get("rate_mbps")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files) or \
                not isinstance(copy, bool) or not (rate is None or type(rate) is int and
                                                   0 < rate <= 100_000):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return error(400, 'send {"files": ["/abs/path.iso", ...], "copy": false, '
                          '"rate_mbps": 900}')
    return await _iso_job(svc, lambda: svc.isos.add(files, copy=copy, rate_mbps=rate))


async def delete_iso(request: web.Request) -> web.Response:
    svc: Service = request.app[SERVICE]
    refusal = _admin(request, loopback=False)
    if refusal is not None:
        return refusal
    name = request.match_info["name"]
    return await _iso_job(svc, lambda: svc.isos.remove(name))


async def _iso_job(svc: Service, job: Callable[[], dict]) -> web.Response:
    """In a thread of its own (it takes long); bad input is a 400 naming the fix."""
    if svc.isos is None:
        return error(503, "this serve has no ISO service")
    loop = asyncio.get_running_loop()
    try:
        return web.json_response(await loop.run_in_executor(None, job))
    except InstallerError as e:
        return error(400, str(e))


async def no_such_api(request: web.Request) -> web.Response:
    return error(404 if request.method in ("GET", "HEAD", "POST") else 405,
                 f"no API {request.method} {request.path}: see GET /api/v1/nodes, "
                 "/api/v1/unknown, /api/v1/plans/<mac>, POST /api/v1/nodes/<name>/events")


# -- artifacts ------------------------------------------------------------------------------

async def get_file(request: web.Request) -> web.StreamResponse:
    svc: Service = request.app[SERVICE]
    rel = request.match_info["path"]
    try:
        path = artifacts.resolve(svc.outdir, rel)
    except artifacts.Refused as e:
        if e.status == 404:
            await _note_unknown_entry(svc, rel)
        return error(e.status, e.message)
    headers = {"Content-Type": artifacts.content_type(rel)}
    digest = await _blocking(svc, svc.checksums.sha256, rel, path)
    if digest:
        headers["X-Checksum-Sha256"] = digest
    if rel.startswith("tftp/"):
        headers["Cache-Control"] = "no-cache"      # entries flip between install and local
    large = os.path.getsize(path) >= BULK_BYTES
    return (BulkFile if large else web.FileResponse)(path, headers=headers)


async def _note_unknown_entry(svc: Service, rel: str) -> None:
    match = ENTRY.fullmatch(rel)
    if match:
        await _blocking(svc, _note_unknown, svc, match.group(1).replace("-", ":"))


def _note_unknown(svc: Service, mac: str) -> None:
    if svc.state.node_by_mac(mac) is None:
        svc.state.record_unknown(mac, "pxe")
        svc.log(f"PXE entry asked for by unknown MAC {mac}")
