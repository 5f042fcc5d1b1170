"""The master's HTTP API and artifacts with real HTTP clients against the real aiohttp
application on 127.0.0.1: plans by MAC, reports with tokens, every refusal (a clear JSON
message and no change), a whole simulated install with the agent's own client, the PXE
handoff and back, restarts, ranges, checksums and path traversal."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from installer.agent import client, clock
from installer.agent.client import Reporter
from installer.agent.install import usage
from installer.cluster import layout
from installer.master import handoff, reports
from tests.conftest import CommitFails
from tests.serving import NETBOOT_SIZE, Server, render_outdir
from tests.test_state import joined as joined_node

# The master's SSH key pair is made with ssh-keygen for every served outdir.
pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPnn78oiACkS/RuNEECbmuqN5JM5YuykzKa8sbZ8ACtY"
MAC = "52:54:00:20:02:22"            # node1 of the example
DASHED = MAC.replace(":", "-")


@pytest.fixture
def outdir(tmp_path):
    out = tmp_path / "out"
    return render_outdir(str(out)), out


@pytest.fixture
def server(outdir, tmp_path):
    cluster, out = outdir
    with Server(cluster, str(out), str(tmp_path / "state")) as s:
        yield s


def plan(server, mac=DASHED) -> dict:
    resp = requests.get(f"{server.url}/api/v1/plans/{mac}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def post(server, name, report: dict, token=None, headers=None) -> requests.Response:
    headers = headers or ({"Authorization": f"Bearer {token}"} if token else {})
    return requests.post(f"{server.url}/api/v1/nodes/{name}/events", json=report,
                         headers=headers, timeout=10)


def report(step, status, index=0, total=6, time=1000.0, **kw) -> dict:
    return dict({"step": step, "status": status, "message": "", "index": index,
                 "total": total, "time": time, "final": False}, **kw)


def refused(resp: requests.Response, status: int, words: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    assert words in resp.json()["error"], resp.json()["error"]


def raw_get(server, path: str) -> tuple[int, bytes]:
    """A request line sent as written: no client-side normalisation of '..' or '%2e'."""
    where = urlsplit(server.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


# -- plans ----------------------------------------------------------------------------------

def test_a_plan_by_mac_carries_the_token_and_the_masters_key(server):
    got = plan(server)
    node = server.state.node("node1")
    assert got["node"]["name"] == "node1"
    assert got["report"] == {"url": "http://10.99.0.1:8080/api/v1/nodes/node1",
                             "boot_url": "http://192.168.20.222:8080/api/v1/nodes/node1",
                             "token": node.token}
    keys = next(f for f in got["files"] if f["path"] == "/root/.ssh/authorized_keys")
    lines = keys["content"].splitlines()
    assert lines[-1] == server.service.serve_key and lines[-1].startswith("ssh-ed25519 ")
    assert lines[-1].endswith("ganeti-installer@cluster.project.edu")
    assert len(lines) == 2          # the cluster file's key is still there
    # No password hash in plain HTTP: the agent asks for it with its token.
    assert got["users"] == {"root": {
        "password_hash": None,
        "password_hash_url": "http://10.99.0.1:8080/api/v1/nodes/node1/secrets"}}
    assert "$6$" not in json.dumps(got)
    # The other forms of the MAC name the same node (re-armed: a plan goes out once).
    server.state.reinstall("node1")
    again = plan(server, MAC.upper())["report"]["token"]
    assert again == server.state.node("node1").token != node.token
    # The plan on disk stays token-less.
    assert node.token not in (server.opts.outdir + "/plans/node1.json") and \
        node.token not in open(os.path.join(server.opts.outdir, "plans/node1.json")).read()


def test_the_agent_takes_the_masters_clock_with_its_plan(server):
    """A node with a flat CMOS battery sets its clock from this (installer/agent/clock.py)."""
    got, date = client.fetch_plan(f"{server.url}/api/v1/plans/{DASHED}")
    assert got["node"]["mac"] == MAC
    assert abs(clock.master_time(date) - time.time()) < 5


def test_a_plan_rendered_again_is_served_as_rendered(server):
    """serve keeps each plan's body; a render while it runs must not leave a stale plan."""
    assert plan(server)["node"]["name"] == "node1"
    path = os.path.join(server.opts.outdir, "plans/node1.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data["hostname"] = "rendered-again"
    with open(path + ".new", "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(path + ".new", path)
    server.state.reinstall("node1")     # a plan goes out once per install cycle
    got = plan(server)
    assert got["hostname"] == "rendered-again"
    assert got["report"]["token"] == server.state.node("node1").token


def test_a_plan_file_gone_is_a_500_naming_the_fix(server):
    os.remove(os.path.join(server.opts.outdir, "plans/node1.json"))
    refused(requests.get(f"{server.url}/api/v1/plans/{DASHED}", timeout=10), 500,
            "run ganeti-installer render")


def test_the_plan_url_in_the_pxe_entry_is_the_api(server):
    entry = (open(os.path.join(server.opts.outdir, f"tftp/ipxe/{DASHED}.ipxe")).read())
    assert f"installer.plan=http://10.99.0.1:8080/api/v1/plans/{DASHED}" in entry


def test_an_unknown_mac_gets_no_plan_and_is_listed(server):
    before = server.state.nodes()
    for _ in range(2):
        resp = requests.get(f"{server.url}/api/v1/plans/52-54-00-99-00-01", timeout=10)
        refused(resp, 404, 'add it under [[nodes]] with mac = "52:54:00:99:00:01"')
        assert "token" not in resp.text
    unknown = requests.get(f"{server.url}/api/v1/unknown", timeout=10).json()
    assert [(u["mac"], u["count"], u["source"]) for u in unknown] == \
        [("52:54:00:99:00:01", 2, "plan")]
    assert server.state.nodes() == before


def test_a_pxe_entry_asked_for_an_unknown_mac_lists_it(server):
    refused(requests.get(f"{server.url}/tftp/ipxe/52-54-00-99-00-02.ipxe", timeout=10), 404,
            "no file")
    assert requests.get(f"{server.url}/api/v1/unknown", timeout=10).json()[0]["source"] == "pxe"


def test_not_a_mac(server):
    before = server.snapshot()
    refused(requests.get(f"{server.url}/api/v1/plans/node1", timeout=10), 400,
            "is not a MAC address")
    assert server.snapshot() == before


# -- refusals: each a clear JSON message and no change ----------------------------------------

def test_report_refusals(server):
    token = plan(server)["report"]["token"]
    assert post(server, "node1", report("install", "started", time=500), token).ok
    before = server.snapshot()
    good = report("os", "started", 3)
    refused(post(server, "node1", good), 401,
            "POST /api/v1/nodes/node1/events needs a token: use 'Authorization: Bearer")
    refused(post(server, "node1", good, "x" * 43), 403, "wrong token for node1")
    refused(post(server, "node1", good, headers={"Authorization": "Basic eDp5"}), 401,
            "Authorization: Bearer")
    refused(post(server, "nodeX", good, token), 404, "no node 'nodeX'")
    refused(requests.post(f"{server.url}/api/v1/nodes/node1/events", data=b"{\"step\": ",
                          headers={"Authorization": f"Bearer {token}"}, timeout=10),
            400, "not JSON")
    refused(post(server, "node1", dict(good, index="3"), token), 400,
            "'index' must be an integer")
    big = dict(good, message="x" * (reports.LIMIT + 1))
    refused(post(server, "node1", big, token), 413, "larger than 64 KiB")
    refused(post(server, "node1", report("identify", "done", 1, time=400), token), 422,
            "older than the install attempt")
    assert post(server, "node1", report("os", "started", 3, time=600), token).ok
    before = server.snapshot()
    refused(post(server, "node1", report("identify", "done", 1, time=700), token), 422,
            "index 1 after 3")
    refused(post(server, "node1", report("boot", "booted", time=700,
                                         host_keys={"ed25519": KEY}), token), 422,
            "only after 'install installed'")
    assert server.snapshot() == before
    # A big report under the limit (hook output) is fine.
    assert post(server, "node1", report("hook/post-install/10-x", "done", time=701,
                                        message="y" * 60000), token).ok


def test_a_report_the_database_cannot_commit_is_a_500_and_changes_nothing(server):
    token = plan(server)["report"]["token"]
    before = server.snapshot()
    real, server.state.db = server.state.db, CommitFails(server.state.db)
    try:
        resp = post(server, "node1", report("install", "started", time=500), token)
    finally:
        server.state.db = real
    refused(resp, 500, "could not record the report (disk I/O error)")
    assert server.snapshot() == before
    assert post(server, "node1", report("install", "started", time=500), token).ok


def test_reports_for_a_node_that_never_started_are_422(server):
    token = plan(server)["report"]["token"]
    before = server.snapshot()
    refused(post(server, "node1", report("os", "started", 3), token), 422,
            "no install has started")
    assert server.snapshot() == before


def test_the_admin_endpoints_never_show_a_token(server):
    plan(server)
    tokens = [n.token for n in server.state.nodes()]
    for path in ("/api/v1/nodes", "/api/v1/nodes/node1", "/api/v1/nodes/node1/events",
                 "/api/v1/unknown"):
        resp = requests.get(server.url + path, timeout=10)
        assert resp.status_code == 200 and not any(t in resp.text for t in tokens)
    refused(requests.get(f"{server.url}/api/v1/nodes/nodeX/events", timeout=10), 404,
            "no node 'nodeX'")
    refused(requests.get(f"{server.url}/api/v2/nodes", timeout=10), 404, "no API GET")


def test_reinstall_needs_the_admin_token(server):
    joined_node(server.state, "node1")
    before = server.snapshot()
    url = f"{server.url}/api/v1/nodes/node1/reinstall"
    refused(requests.post(url, timeout=10), 401, "admin token")     # loopback or not
    node_token = server.state.node("node1").token
    refused(requests.post(url, headers={"Authorization": f"Bearer {node_token}"}, timeout=10),
            403, "wrong admin token")
    refused(requests.post(f"{server.url}/api/v1/nodes/nodeX/reinstall", timeout=10,
                          headers={"Authorization": f"Bearer {server.service.admin_token}"}),
            404, "no node 'nodeX'")
    assert server.snapshot() == before


# -- a whole install ---------------------------------------------------------------------------

def active_entries(outdir, mac) -> dict[str, str]:
    return {kind: open(os.path.join(outdir, rel)).read()
            for kind, rel in layout.active_paths(mac).items()}


def entries(outdir, mac, form) -> dict[str, str]:
    return {kind: open(os.path.join(outdir, layout.entry_path(mac, form, kind))).read()
            for kind in layout.KINDS}


def agent_install(server, mac=DASHED, start=1000.0) -> dict:
    """The agent's side: its plan by MAC, then its reports through its own client."""
    got = plan(server, mac)
    rep = Reporter(got["report"]["url"].replace("http://10.99.0.1:8080", server.url),
                   got["report"]["token"], log=lambda line: None, sleep=lambda s: None)
    clock = iter(range(10_000))
    tick = lambda: start + next(clock)  # noqa: E731
    import installer.agent.client as client_module
    real = client_module.time.time
    client_module.time.time = tick
    try:
        stages = ["identify", "storage", "os", "configure", "bootloader", "finish"]
        assert rep.event("install", "started", "agent", 0, len(stages))
        for i, stage in enumerate(stages, start=1):
            assert rep.event(stage, "started", "", i, len(stages))
            if stage == "storage":
                assert rep.event("storage/vg-ganeti", "running")
            assert rep.event(stage, "done", "", i, len(stages))
        assert rep.event("install", "installed", "", 6, 6, final=True,
                         host_keys={"ed25519": KEY}, usage=usage())     # as the agent sends
    finally:
        client_module.time.time = real
    assert rep.outbox == []
    return got


def test_a_whole_install_flips_pxe_to_local_and_reinstall_flips_it_back(server):
    out = server.opts.outdir
    assert active_entries(out, MAC) == entries(out, MAC, "install")
    joined = []
    server.service.on_booted = lambda state, node: (
        state.set_state(node.name, "joining", "gnt-node add"),
        state.set_state(node.name, "joined", "in the cluster"), joined.append(node.name))
    first = agent_install(server)
    node = server.state.node("node1")
    assert node.state == "installed" and node.host_keys == {"ed25519": KEY}
    assert active_entries(out, MAC) == entries(out, MAC, "local")
    assert "LOCALBOOT 0" in active_entries(out, MAC)["pxelinux"]
    served = requests.get(f"{server.url}/tftp/ipxe/{DASHED}.ipxe", timeout=10).text
    assert served == entries(out, MAC, "local")["ipxe"]
    # An installed node's plan (and token) is not handed out any more.
    refused(requests.get(f"{server.url}/api/v1/plans/{DASHED}", timeout=10), 409,
            "node1 is installed: its plan goes out only while it is armed for install")
    # Reports after installed, without a new install started, are out of order.
    refused(post(server, "node1", report("os", "done", 3, time=5000), node.token), 422,
            "it is installed")
    # The node boots its disk and says so: the join hook runs.
    resp = post(server, "node1", report("boot", "booted", time=6000, total=0, final=True,
                                        host_keys={"ed25519": KEY}), node.token)
    assert resp.ok and resp.json()["state"] == "booted"
    wait_state(server, "node1", "joined")
    assert joined == ["node1"]
    events = requests.get(f"{server.url}/api/v1/nodes/node1/events", timeout=10).json()
    assert [(e["step"], e["status"]) for e in events][:2] == [("install", "started"),
                                                              ("identify", "started")]
    assert [(e["step"], e["status"]) for e in events][-5:] == [
        ("install", "installed"), ("plan", "refused"), ("boot", "booted"),
        ("join", "joining"), ("join", "joined")]
    assert events[-5]["message"].startswith("agent: CPU ")
    assert events[-4]["message"] == "plan fetch from 127.0.0.1 refused (installed, taken by " \
                                    "127.0.0.1)" and events[-4]["authenticated"] is False
    # Reinstall: pending, install entries, a new token; the old one is refused.
    resp = requests.post(f"{server.url}/api/v1/nodes/node1/reinstall", timeout=10,
                         headers={"Authorization": f"Bearer {server.service.admin_token}"})
    assert resp.ok and resp.json()["state"] == "pending"
    assert active_entries(out, MAC) == entries(out, MAC, "install")
    refused(post(server, "node1", report("install", "started", time=7000),
                 first["report"]["token"]), 403, "wrong token")
    second = agent_install(server, start=8000.0)
    assert second["report"]["token"] != first["report"]["token"]
    assert server.state.node("node1").attempt == 2
    assert active_entries(out, MAC) == entries(out, MAC, "local")


def test_a_joined_node_reboots_with_the_clusters_rsa_key(server):
    """gnt-node add gives the node the master's rsa key; its own ed25519 key stays, and
    that is what tells the joined node from another disk."""
    server.service.on_booted = lambda state, node: (
        state.set_state(node.name, "joining", "gnt-node add"),
        state.set_state(node.name, "joined", ""))
    agent_install(server)
    token = server.state.node("node1").token
    keys = {"ed25519": KEY, "rsa": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCnode"}
    server.state.db.execute("UPDATE nodes SET host_keys = ? WHERE name = 'node1'",
                            (json.dumps(keys),))
    assert post(server, "node1", report("boot", "booted", time=9000, total=0, final=True,
                                        host_keys=keys), token).ok
    wait_state(server, "node1", "joined")
    cluster_rsa = dict(keys, rsa="ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCcluster")
    assert post(server, "node1", report("boot", "booted", time=9100, total=0, final=True,
                                        host_keys=cluster_rsa), token).ok
    assert server.state.node("node1").state == "joined"
    other = dict(cluster_rsa, ed25519=KEY.replace("ACtY", "ACtZ"))
    refused(post(server, "node1", report("boot", "booted", time=9200, total=0, final=True,
                                         host_keys=other), token), 422, "differ")


def wait_state(server, name: str, state: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while server.state.node(name).state != state:
        assert time.monotonic() < deadline, server.state.node(name)
        time.sleep(0.05)


def test_a_join_that_raises_marks_the_node_failed(server):
    def broken(state, node):
        raise RuntimeError("gnt-node add: prompt")
    server.service.on_booted = broken
    agent_install(server)
    token = server.state.node("node1").token
    assert post(server, "node1", report("boot", "booted", time=9000, total=0,
                                        host_keys={"ed25519": KEY}), token).ok
    wait_state(server, "node1", "failed")
    assert "gnt-node add: prompt" in server.state.node("node1").message


def test_a_join_that_raises_after_joining_leaves_the_node_joined(server):
    def joins_then_breaks(state, node):
        state.set_state(node.name, "joining", "gnt-node add")
        state.set_state(node.name, "joined", "in the cluster")
        raise RuntimeError("after the join")
    server.service.on_booted = joins_then_breaks
    agent_install(server)
    token = server.state.node("node1").token
    assert post(server, "node1", report("boot", "booted", time=9000, total=0,
                                        host_keys={"ed25519": KEY}), token).ok
    wait_state(server, "node1", "joined")
    deadline = time.monotonic() + 10
    while not any("not marked failed" in line for line in server.log):
        assert time.monotonic() < deadline, server.log[-5:]
        time.sleep(0.05)
    assert server.state.node("node1").state == "joined"
    assert any("cannot go from joined to failed" in line for line in server.log)


def test_a_restart_in_the_middle_of_an_install_loses_nothing(outdir, tmp_path):
    cluster, out = outdir
    state_dir = str(tmp_path / "state")
    sent = [report("install", "started", 0, time=100)] + \
        [report(s, st, i, time=101 + n) for n, (s, st, i) in enumerate(
            [("identify", "started", 1), ("identify", "done", 1), ("storage", "started", 2),
             ("storage", "done", 2), ("os", "started", 3), ("os", "done", 3)])]
    with Server(cluster, str(out), state_dir) as s1:
        token = plan(s1)["report"]["token"]
        key = s1.service.serve_key
        for r in sent[:4]:
            assert post(s1, "node1", r, token).ok
        tokens = {n.name: n.token for n in s1.state.nodes()}
    with Server(cluster, str(out), state_dir) as s2:
        assert {n.name: n.token for n in s2.state.nodes()} == tokens
        assert s2.service.serve_key == key
        assert s2.state.plan_fetch("node1")["taken_by"] == "127.0.0.1"     # kept too
        refused(requests.get(f"{s2.url}/api/v1/plans/{DASHED}", timeout=10), 409,
                "node1 is installing: its plan goes out only while it is armed")
        for r in sent[4:]:
            assert post(s2, "node1", r, token).ok
        assert post(s2, "node1", report("install", "installed", 6, time=200, final=True,
                                        host_keys={"ed25519": KEY}), token).ok
        events = [(e["step"], e["status"]) for e in s2.state.events("node1")]
        assert events == [(r["step"], r["status"]) for r in sent[:4]] + [("plan", "refused")] + \
            [(r["step"], r["status"]) for r in sent[4:]] + [("install", "installed")]
        assert s2.state.node("node1").state == "installed"
    # A third start finds the node installed and keeps its entry local, even after a new
    # render put every entry back to install.
    render_outdir(str(out))
    with Server(cluster, str(out), state_dir) as s3:
        assert handoff.boot_form(str(out), MAC) == "local"
        assert s3.state.node("node1").state == "installed"


# -- artifacts --------------------------------------------------------------------------------

def test_a_range_request_returns_exactly_those_bytes(server):
    with open(os.path.join(server.opts.outdir, "netboot/initrd"), "rb") as f:
        whole = f.read()
    resp = requests.get(f"{server.url}/netboot/initrd", headers={"Range": "bytes=1000-2999"},
                        timeout=10)
    assert resp.status_code == 206 and resp.content == whole[1000:3000]
    assert resp.headers["Content-Range"] == f"bytes 1000-2999/{NETBOOT_SIZE}"
    tail = requests.get(f"{server.url}/netboot/initrd", headers={"Range": "bytes=-100"},
                        timeout=10)
    assert tail.status_code == 206 and tail.content == whole[-100:]
    resp = requests.get(f"{server.url}/netboot/initrd", timeout=10)
    assert resp.status_code == 200 and resp.content == whole
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(whole).hexdigest()
    assert resp.headers["Accept-Ranges"] == "bytes"
    etag = resp.headers["ETag"]
    assert resp.headers["Last-Modified"]
    again = requests.get(f"{server.url}/netboot/initrd", headers={"If-None-Match": etag},
                         timeout=10)
    assert again.status_code == 304
    head = requests.head(f"{server.url}/netboot/initrd", timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == NETBOOT_SIZE
    assert head.content == b""


@pytest.mark.parametrize("rel, ctype", [
    ("manifest.json", "application/json"),
    ("images/bookworm.tar.zst", "application/zstd"),
    ("images/bookworm.tar.zst.sha256", "text/plain; charset=utf-8"),
    (f"tftp/ipxe/{DASHED}.ipxe", "text/plain; charset=utf-8"),
    (f"tftp/pxelinux.cfg/01-{DASHED}", "text/plain; charset=utf-8"),
    (f"tftp/grub/grub.cfg-01-{DASHED}", "text/plain; charset=utf-8"),
    ("netboot/vmlinuz", "application/octet-stream"),
])
def test_content_types(server, rel, ctype):
    resp = requests.get(f"{server.url}/{rel}", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == ctype


def test_the_image_checksum_comes_from_its_sha256_file(server):
    resp = requests.get(f"{server.url}/images/bookworm.tar.zst", timeout=10)
    assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(resp.content).hexdigest()
    sidecar = requests.get(f"{server.url}/images/bookworm.tar.zst.sha256", timeout=10).text
    assert sidecar.split()[0] == resp.headers["X-Checksum-Sha256"]


def server_side_priority(client: http.client.HTTPConnection) -> int:
    """SO_PRIORITY of serve's end of the client's connection, as the kernel holds it (the
    server runs in this process: its socket is one of our file descriptors)."""
    here = client.sock.getsockname()
    for fd in os.listdir("/proc/self/fd"):
        try:        # other threads open and close descriptors meanwhile
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(fd))) as sock:
                if sock.type == socket.SOCK_STREAM and sock.getpeername() == here:
                    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY)
        except OSError:
            continue        # gone, not a socket, listening or unconnected
    raise AssertionError(f"no server socket connected to {here}")


def test_images_leave_in_the_bulk_band_and_api_answers_do_not(server):
    """On a link full of netboot images the master's queue (pfifo_fast) sends a report's
    answer first: large files go out at TC_PRIO_BULK, the rest, even on the same keep-alive
    connection, at the default priority."""
    where = urlsplit(server.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    for path, priority in (("/netboot/initrd", 2), ("/api/v1/nodes", 0),
                           (f"/tftp/ipxe/{DASHED}.ipxe", 0), ("/netboot/initrd", 2),
                           (f"/api/v1/plans/{DASHED}", 0)):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, path
        assert server_side_priority(conn) == priority, path
    conn.close()


@pytest.fixture
def traps(server, tmp_path):
    """Secrets outside OUTDIR and symbolic links inside it that point at them."""
    out = server.opts.outdir
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-OUTSIDE")
    os.symlink(str(secret), os.path.join(out, "netboot", "leak"))
    os.symlink(os.path.join(out, "plans", "node1.json"), os.path.join(out, "netboot", "plan"))
    os.symlink(str(tmp_path), os.path.join(out, "images", "up"))
    return server


@pytest.mark.parametrize("path, statuses", [
    ("/plans/node1.json", (403,)),
    ("/nodes/node1/etc/hosts", (404,)),
    ("/dnsmasq/dnsmasq.conf", (404,)),
    ("/netboot/../plans/node1.json", (400, 403, 404)),
    ("/netboot/%2e%2e/plans/node1.json", (400, 403, 404)),
    ("/netboot/%2E%2E/%2E%2E/secret.txt", (400, 403, 404)),
    ("/netboot/..%2fplans%2fnode1.json", (400, 403, 404)),
    ("/../../etc/passwd", (400, 403, 404)),
    ("//etc/passwd", (400, 404)),
    ("/netboot/leak", (404,)),
    ("/netboot/plan", (404,)),
    ("/images/up/secret.txt", (404,)),
    ("/tftp/ipxe/", (400, 404)),
    ("/tftp/entries/../../state/state.db", (400, 403, 404)),
])
def test_no_file_outside_the_served_trees(traps, path, statuses):
    status, body = raw_get(traps, path)
    assert status in statuses, (path, status, body)
    assert b"SECRET-OUTSIDE" not in body and b"root:" not in body
    assert b"password_hash" not in body and b"plan_version" not in body
    assert json.loads(body)["error"]


def test_a_plan_fetch_the_database_cannot_record_hands_out_nothing(server):
    """The token goes out only once its fetch is on disk: else a 503 (the agent asks
    again) and the node stays armed."""
    real, server.state.db = server.state.db, CommitFails(server.state.db)
    try:
        resp = requests.get(f"{server.url}/api/v1/plans/{DASHED}", timeout=10)
    finally:
        server.state.db = real
    refused(resp, 503, "could not record the plan fetch")
    assert server.state.node("node1").token not in resp.text
    assert server.state.plan_fetch("node1")["taken_at"] == 0
    assert plan(server)["report"]["token"] == server.state.node("node1").token
