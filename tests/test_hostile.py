"""A stranger on the provisioning LAN against a real `serve` application on loopback (issue
13): every refusal a JSON 4xx that changes nothing, every resource bounded, and a legitimate
node's plan and reports answered during and after each attack; and a SIGKILL of `serve`
during a report stream loses no acknowledged report.

Clients bind other loopback addresses (127.0.x.y) to stand for other machines."""

from __future__ import annotations

import http.client
import json
import logging
import random
import resource
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from installer.master import connections, limits
from installer.master import state as st
from tests.conftest import example_path
from tests.serving import Server, render_outdir

# serve's SSH key pair is made with ssh-keygen.
pytestmark = pytest.mark.integration

MAC = "52-54-00-20-02-22"            # node1 of the example
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPnn78oiACkS/RuNEECbmuqN5JM5YuykzKa8sbZ8ACtY"


@pytest.fixture
def server(tmp_path):
    cluster = render_outdir(str(tmp_path / "out"))
    with Server(cluster, str(tmp_path / "out"), str(tmp_path / "state")) as s:
        yield s


@pytest.fixture(autouse=True)
def no_tracebacks(caplog):
    """Nothing a client sends ends in a logged error (aiohttp logs a 500's traceback)."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


class Client:
    """One keep-alive HTTP connection from SOURCE; reconnects when serve closes it."""

    def __init__(self, url: str, source: str = "127.0.0.1", timeout: float = 10):
        where = urlsplit(url)
        self.host, self.port, self.source, self.timeout = where.hostname, where.port, \
            source, timeout
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, str]:
        """(status, JSON body or {}, content type); a second try on a stale connection."""
        for tries in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout,
                                                       source_address=(self.source, 0))
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if tries:
                    raise
                continue
            if resp.will_close:
                self.close()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(data) if "json" in kind else {}, kind
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Node:
    """node1 as its agent would talk: its plan, then reports in order with its token."""

    def __init__(self, url: str, source: str = "127.0.0.1", name: str = "node1",
                 mac: str = MAC):
        self.client, self.name, self.mac = Client(url, source), name, mac
        self.token = ""
        self.index = 0
        self.time = 1000.0

    def fetch_plan(self) -> None:
        status, plan, _ = self.client.call("GET", f"/api/v1/plans/{self.mac}")
        assert status == 200, plan
        self.token = plan["report"]["token"]

    def report(self, step: str, status: str, **kw) -> dict:
        self.time += 1
        body = dict({"step": step, "status": status, "index": self.index, "total": 0,
                     "time": self.time}, **kw)
        code, answer, _ = self.client.call(
            "POST", f"/api/v1/nodes/{self.name}/events", json.dumps(body).encode(),
            {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        assert code == 200, answer
        return answer

    def start(self) -> None:
        self.fetch_plan()
        self.start_reports()

    def start_reports(self) -> None:
        assert self.report("install", "started")["state"] == "installing"

    def works(self) -> None:
        """A report is answered as ever (its plan it took once, at start)."""
        self.index += 1
        assert self.report(f"step{self.index}", "done")["state"] == "installing"


def refused(answer: tuple[int, dict, str], status: int, words: str = "") -> None:
    code, body, kind = answer
    assert code == status, (code, body)
    assert kind.startswith("application/json"), kind
    assert words in body["error"], body["error"]


# -- tokens: a plan once per install cycle, every write with a token ---------------------------

def test_a_second_plan_fetch_is_a_409_and_shown_in_status(server):
    from installer.master import status
    node = Node(server.url, source="127.0.1.5")
    node.fetch_plan()
    rows = server.state.nodes()
    answer = Client(server.url, "127.0.9.9").call("GET", f"/api/v1/plans/{MAC}")
    refused(answer, 409, "the plan of node1 was already taken by 127.0.1.5 at ")
    for words in ("a node resuming after a power cut continues from the plan on its disk",
                  "ganeti-installer reinstall CLUSTER OUTDIR node1"):
        assert words in answer[1]["error"]
    assert "token" not in json.dumps(answer[1])
    assert server.state.nodes() == rows             # no node changed: only the refusal kept
    table = status.table(status.fetch(server.url))  # the admin, on the serving host
    assert "node1: 1 plan fetch(es) refused, the last from 127.0.9.9" in table
    assert "its plan went to 127.0.1.5" in table
    node.start_reports()                            # the node that took it goes on


def test_of_many_fetches_at_once_exactly_one_gets_the_plan(server):
    answers: list[int] = []
    threads = [threading.Thread(target=lambda i=i: answers.append(Client(
        server.url, f"127.0.1.{i + 10}").call("GET", f"/api/v1/plans/{MAC}")[0]))
        for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers) == [200] + [409] * 19
    assert server.state.plan_fetch("node1")["refusals"] == 19


def test_a_report_without_a_token_is_401_before_anything_else(server):
    node = Node(server.url)
    node.start()
    sent = {"step": "os", "status": "started", "index": 0, "total": 0, "time": 2000.0}
    node.client.call("POST", "/api/v1/nodes/node1/events", json.dumps(sent).encode(),
                     {"Authorization": f"Bearer {node.token}"})
    before = server.snapshot()
    stranger = Client(server.url, "127.0.9.9")
    for body in (json.dumps(sent).encode(),                     # a replay: not "duplicate"
                 json.dumps({"step": "plan", "status": "failed", "final": True}).encode(),
                 b"[" * 60_000, b"not json"):
        refused(stranger.call("POST", "/api/v1/nodes/node1/events", body), 401,
                "POST /api/v1/nodes/node1/events needs a token")
    refused(stranger.call("POST", "/api/v1/nodes/nodeX/events", b"{}"), 401, "needs a token")
    assert server.snapshot() == before
    node.works()


STATUS_ROUTES = ["/api/v1/nodes", "/api/v1/nodes/node1", "/api/v1/nodes/node1/events",
                 "/api/v1/isos", "/api/v1/unknown"]


def test_status_routes_need_the_admin_token_off_loopback(server):
    node = Node(server.url)
    node.start()
    stranger = Client(server.url, "127.0.9.9")       # not 127.0.0.1: the network, to serve
    for path in STATUS_ROUTES:
        refused(stranger.call("GET", path), 401, f"GET {path} needs a token")
        for token in ("x" * 43, node.token):
            refused(stranger.call("GET", path, headers={"Authorization": f"Bearer {token}"}),
                    403, "wrong admin token")
        admin = {"Authorization": f"Bearer {server.service.admin_token}"}
        assert stranger.call("GET", path, headers=admin)[0] == 200
        assert Client(server.url, "127.0.0.1").call("GET", path)[0] == 200
    node.works()


def test_a_stranger_cannot_make_serve_reload_its_cluster_file(server, tmp_path):
    """POST /api/v1/reload (rebuild --mac) takes new node MACs: the admin token's alone,
    off loopback and on it; a body, even a large one, is never read; nothing changes."""
    from installer.cluster import macedit
    path = tmp_path / "cluster.toml"
    path.write_text(open(example_path("cluster.toml"), encoding="utf-8").read())
    server.opts.cluster_file = str(path)
    macedit.write(macedit.prepare(str(path), "node2", "52:54:00:20:02:99"))
    node = Node(server.url)
    node.start()
    before = server.snapshot()
    url = "/api/v1/reload"
    for source in ("127.0.9.9", "127.0.0.1"):
        stranger = Client(server.url, source)
        refused(stranger.call("POST", url), 401, f"POST {url} needs a token")
        refused(stranger.call("POST", url, body=b"x" * (256 << 10)), 401, "needs a token")
        for token in ("x" * 43, node.token):
            refused(stranger.call("POST", url, headers={"Authorization": f"Bearer {token}"}),
                    403, "wrong admin token")
        stranger.close()
    assert server.snapshot() == before
    assert server.state.node("node2").mac == "52:54:00:20:02:23"
    node.works()


def test_the_root_password_hash_goes_to_the_nodes_token_only(server):
    node = Node(server.url)
    node.fetch_plan()
    url = "/api/v1/nodes/node1/secrets"
    stranger = Client(server.url, "127.0.9.9")
    refused(stranger.call("GET", url), 401, f"GET {url} needs a token")
    other = server.state.node("node2").token
    refused(stranger.call("GET", url, headers={"Authorization": f"Bearer {other}"}), 403,
            "wrong token for node1")
    mine = {"Authorization": f"Bearer {node.token}"}
    refused(stranger.call("GET", url, headers=mine), 403, "node1 is pending: its secrets go "
                                                          "out only while it installs")
    node.start_reports()
    status, answer, _ = node.client.call("GET", url, headers=mine)
    assert status == 200 and answer["root_password_hash"].startswith("$6$")
    node.works()


# -- every field bounded: a JSON 4xx, and nothing changes ------------------------------------

BAD_REPORTS = [
    (b"[" * 60_000, 400, "nests deeper"),
    (b'{"step": "os", "status": "done", "host_keys": {"a": {"b": {"c": {"d": 1}}}}}', 400,
     "nests deeper"),
    (b'{"step": "os", "status": "done", "index": 18446744073709551616}', 400, "'index'"),
    (b'{"step": "os", "status": "done", "total": -1}', 400, "'total'"),
    (b'{"step": "os", "status": "done", "time": 1' + b"0" * 400 + b"}", 400, "'time'"),
    (b'{"step": "os", "status": "done", "time": 1' + b"0" * 5000 + b"}", 400, "not JSON"),
    (b'{"step": "os", "status": "done", "time": 1e400}', 400, "'time'"),
    (b'{"step": "os", "status": "done", "time": NaN}', 400, "'time'"),
    (b'{"step": "os", "status": "done", "time": -Infinity}', 400, "'time'"),
    (b'{"step": "os", "status": "done", "message": "\\ud800"}', 400, "surrogate"),
    (b'{"step": "os", "status": "done", "usage": {"cpu_s": 1' + b"0" * 400 + b"}}", 400,
     "'usage'"),
    (json.dumps({"step": "s" * 201, "status": "done"}).encode(), 400, "not a step name"),
    (json.dumps({"step": "os", "status": "done", "message": "x" * (limits.MESSAGE + 1)}
                ).encode(), 400, "'message' has"),
    (json.dumps({"step": "os", "status": "done",
                 "host_keys": {f"k{i}": KEY for i in range(limits.HOST_KEYS + 1)}}).encode(),
     400, "'host_keys' has"),
    (b"\xff\xfe{}", 400, "not JSON"),
    (b"x" * (limits.BODY + 1), 413, "larger than"),
]


@pytest.mark.parametrize("body, status, words", BAD_REPORTS,
                         ids=[f"{i}-{w}" for i, (_, _, w) in enumerate(BAD_REPORTS)])
def test_a_report_out_of_bounds_is_a_json_4xx_and_changes_nothing(server, body, status, words):
    node = Node(server.url)
    node.start()
    before = server.snapshot()
    hostile = Client(server.url, "127.0.9.9")
    answer = hostile.call("POST", "/api/v1/nodes/node1/events", body,
                          {"Authorization": f"Bearer {node.token}"})
    refused(answer, status, words)
    assert server.snapshot() == before
    node.works()
    assert not [line for line in server.log if "Traceback" in line]


BAD_REQUESTS = [
    ("GET", "/api/v1/plans/52:54:00:20:02:22:33", 400, "not a MAC"),
    ("GET", "/api/v1/plans/52-54-00-20-02-2g", 400, "not a MAC"),
    ("GET", "/api/v1/plans/%00%ff%2e%2e", 400, "not a MAC"),
    ("GET", "/api/v1/plans/" + "a" * 5000, 400, "not a MAC"),
    ("GET", "/api/v1/plans/" + "a" * 20000, 400, "not a valid HTTP request"),
    ("PUT", f"/api/v1/plans/{MAC}", 405, ""),
    ("DELETE", "/api/v1/nodes/node1", 405, ""),
    ("BREW", "/netboot/initrd", 400, "Invalid method"),
    ("GET", "/api/v1/nodes/node1/events?limit=x", 400, "whole number"),
    ("GET", "/api/v1/nodes/node1/events?after=" + "9" * 40, 400, "whole number"),
    ("GET", "/api/v1/nodes/node1/events?after=%EF%BC%91", 400, "whole number"),
    ("GET", "/" + "../" * 2000 + "etc/passwd", 400, "not a plain relative path"),
]


@pytest.mark.parametrize("method, path, status, words", BAD_REQUESTS,
                         ids=[f"{i}-{m}" for i, (m, _, _, _) in enumerate(BAD_REQUESTS)])
def test_odd_plan_and_other_requests_are_json_4xx(server, method, path, status, words):
    node = Node(server.url)
    node.start()
    before = server.snapshot()
    admin = {"Authorization": f"Bearer {server.service.admin_token}"}  # past the status gate
    refused(Client(server.url, "127.0.9.9").call(method, path, headers=admin), status, words)
    assert server.snapshot() == before
    node.works()


@pytest.mark.parametrize("raw", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    b"POST /api/v1/nodes/node1/events HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
], ids=["tls", "long-header", "many-headers", "negative-length", "nul"])
def test_malformed_http_is_a_json_400_and_logged_once(server, raw):
    node = Node(server.url)
    node.start()
    for _ in range(3):
        with _connect(server, "127.0.9.8") as sock:
            sock.sendall(raw)
            answer = _read_all(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), answer[:200]
        assert b"application/json" in head and "error" in json.loads(body)
    assert len([line for line in server.log if "127.0.9.8" in line]) == 1, server.log
    node.works()


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_too_many_steps_in_one_attempt_are_refused(server, monkeypatch):
    monkeypatch.setattr(limits, "STEPS", 5)
    node = Node(server.url)
    node.start()                        # the first step: install
    for i in range(4):
        node.report(f"s{i}", "done")
    before = server.snapshot()
    refused(node.client.call("POST", "/api/v1/nodes/node1/events", json.dumps(
        {"step": "s9", "status": "done", "time": node.time + 1}).encode(),
        {"Authorization": f"Bearer {node.token}"}), 422, "different steps")
    assert server.snapshot() == before
    node.report("s1", "running")        # a step it has is still reported; new ones are not
    refused(node.client.call("POST", "/api/v1/nodes/node1/events", json.dumps(
        {"step": "s10", "status": "done", "time": node.time + 5}).encode(),
        {"Authorization": f"Bearer {node.token}"}), 422, "different steps")


# -- what a node can grow: events kept to a bound, read in pages -------------------------------

def test_events_are_kept_to_a_bound_and_the_drop_is_shown(server, monkeypatch):
    monkeypatch.setattr(st, "EVENTS_KEEP", 20)
    node = Node(server.url)
    node.start()
    for i in range(49):
        node.report("os", "running", message=f"m{i}")
    status, shown, _ = node.client.call("GET", "/api/v1/nodes/node1")
    assert status == 200 and shown["events_dropped"] == 30
    status, events, _ = node.client.call("GET", "/api/v1/nodes/node1/events")
    assert [e["message"] for e in events] == [f"m{i}" for i in range(29, 49)]
    # Pages: the first 7 after the oldest kept, then the rest; limit is capped.
    first = events[0]["id"]
    _, page, _ = node.client.call("GET", f"/api/v1/nodes/node1/events?after={first}&limit=7")
    assert [e["message"] for e in page] == [f"m{i}" for i in range(30, 37)]
    _, rest, _ = node.client.call(
        "GET", f"/api/v1/nodes/node1/events?after={page[-1]['id']}&limit=99999999")
    assert [e["message"] for e in rest] == [f"m{i}" for i in range(37, 49)]
    monkeypatch.setattr(limits, "PAGE", 3)
    _, capped, _ = node.client.call("GET", "/api/v1/nodes/node1/events?after=0&limit=100")
    assert len(capped) == 3
    node.works()


# -- connections: capped per address and in all, timed out, logged once -----------------------

def _connect(server: Server, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", urlsplit(server.url).port), timeout=10,
                                    source_address=(source, 0))
    return sock


def _was_refused(sock: socket.socket) -> dict:
    head, _, body = _read_all(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429"), head
    return json.loads(body)


def test_connections_per_address_are_capped_and_logged_once(server):
    node = Node(server.url)
    node.start()
    held = [_connect(server, "127.0.7.1") for _ in range(limits.PER_ADDRESS)]
    try:
        time.sleep(0.2)
        for _ in range(5):
            with _connect(server, "127.0.7.1") as extra:
                assert "per address" in _was_refused(extra)["error"]
        assert len([line for line in server.log if "127.0.7.1" in line]) == 1, server.log
        node.works()                    # from another address, as ever
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while server.service.gate.count > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    with _connect(server, "127.0.7.1") as again:    # closed ones count no more
        again.sendall(b"GET /manifest.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(again).startswith(b"HTTP/1.1 200")


def test_the_reserve_is_left_for_known_nodes(server):
    gate = server.service.gate
    gate.total, gate.reserve = 40, 10
    node = Node(server.url, source="127.0.6.1")
    node.start()                        # its token worked: a node's address
    assert "127.0.6.1" in gate.known
    node.client.close()
    held = [_connect(server, f"127.0.5.{i // 10 + 1}") for i in range(30)]
    try:
        time.sleep(0.2)
        with _connect(server, "127.0.5.99") as stranger:
            assert "at most 30 for this address" in _was_refused(stranger)["error"]
        node.works()                    # it gets in all the same
    finally:
        for sock in held:
            sock.close()


def test_a_half_sent_request_head_is_dropped_after_the_header_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "HEADER_TIMEOUT", 1.0)
    cluster = render_outdir(str(tmp_path / "out"))
    with Server(cluster, str(tmp_path / "out"), str(tmp_path / "state")) as server:
        idle = _connect(server, "127.0.4.1")
        half = _connect(server, "127.0.4.2")
        half.sendall(b"GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        for sock in (idle, half):
            assert _read_all(sock) == b""       # closed by serve, nothing answered
            sock.close()
        assert time.monotonic() - started < 5
        Node(server.url).start()


def test_a_body_that_never_comes_is_a_408(server, monkeypatch):
    monkeypatch.setattr(limits, "BODY_TIMEOUT", 1.0)
    node = Node(server.url)
    node.start()
    before = server.snapshot()
    with _connect(server, "127.0.4.3") as slow:
        slow.sendall(b"POST /api/v1/nodes/node1/events HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + node.token.encode() +
                     b"\r\nContent-Length: 1000\r\n\r\n{\"step\": ")
        head, _, body = _read_all(slow).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and "did not come" in json.loads(body)["error"]
    assert server.snapshot() == before
    node.works()


def test_the_open_file_limit_is_raised_to_the_hard_one(monkeypatch):
    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda what, lim: calls.append(lim))
    said: list[str] = []
    assert limits.raise_open_files(said.append) == 4096
    assert calls == [(4096, 4096)] and "raised from 1024 to 4096" in said[0]
    assert limits.total_connections(4096) == limits.TOTAL
    assert limits.total_connections(1024) == 1024 - limits.FILES


# -- fuzz: 20,000 generated requests, no 500, no traceback -------------------------------------

FUZZ = 20_000


def _fuzz_value(rng: random.Random, depth: int = 0):
    pick = rng.randrange(14)
    if pick == 0:
        return rng.choice([2**64, -(2**63), 10**400 if rng.random() < 0.5 else 10**30, 0, -1])
    if pick == 1:
        return rng.choice([float("nan"), float("inf"), -1e308, 1e-320, 0.5])
    if pick == 2:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x10000),
                                       0xD800, 0, 0x1F600])) for _ in range(rng.randrange(30)))
    if pick == 3:
        return "x" * rng.choice([0, 201, 5000, limits.MESSAGE + 1])
    if pick == 4 and depth < 6:
        return [_fuzz_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if pick == 5 and depth < 6:
        return {rng.choice(["ed25519", "a" * 40, "", "k"]): _fuzz_value(rng, depth + 1)}
    if pick == 6:
        return rng.choice([True, False, None])
    if pick == 7:
        return KEY
    if pick == 8:
        return rng.choice(["os", "install", "boot", "plan", "x/y", "-bad"])
    if pick == 9:
        return rng.choice(["started", "running", "done", "failed", "installed", "booted"])
    return rng.randrange(-5, 10**6)


FIELDS = ["step", "status", "message", "index", "total", "time", "final", "host_keys",
          "usage", "extra"]


def _fuzz_report(rng: random.Random) -> bytes:
    pick = rng.randrange(10)
    if pick == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if pick == 1:
        return rng.choice([b"[", b"{"]) * rng.randrange(1, 3000)
    body = {k: _fuzz_value(rng) for k in rng.sample(FIELDS, rng.randrange(len(FIELDS)))}
    if rng.random() < 0.5:
        body.setdefault("step", "os")
        body.setdefault("status", "running")
    text = json.dumps(body, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    if pick == 2:
        text = text[:rng.randrange(len(text) + 1)]
    return text.encode("utf-8", "surrogatepass")


def _fuzz_path(rng: random.Random) -> str:
    macs = [MAC, MAC.upper(), MAC.replace("-", ":"), MAC.replace("-", "%3A"),
            "52-54-00-20-02", "zz-zz-zz-zz-zz-zz", "%00", "%ff%fe", "..%2f..%2fetc",
            "a" * rng.choice([1, 100, 3000]), "52-54-00-aa-bb-" + f"{rng.randrange(256):02x}"]
    return "/api/v1/plans/" + rng.choice(macs) + rng.choice(["", "/", "?x=1", "#", "%"])


def test_fuzz_20000_requests_no_500_and_no_traceback(server):
    rng = random.Random(13)
    node = Node(server.url)
    node.start()
    client = Client(server.url, "127.0.8.1", timeout=30)
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for i in range(FUZZ):
        if rng.random() < 0.35:
            answer = client.call("GET", _fuzz_path(rng))
        else:
            auth = rng.choice([f"Bearer {node.token}"] * 4 + ["Bearer x", "Basic a", "",
                                                             "Bearer " + "t" * 4000])
            name = rng.choice(["node1"] * 6 + ["node2", "nodeX", "%2e%2e", "n" * 300])
            answer = client.call("POST", f"/api/v1/nodes/{name}/events", _fuzz_report(rng),
                                 {"Authorization": auth} if auth else {})
        statuses[answer[0]] = statuses.get(answer[0], 0) + 1
        assert answer[0] < 500, (i, answer)
        assert time.monotonic() - started < 300, f"only {i} requests in 300 s"
    assert sum(statuses.values()) == FUZZ
    assert not [line for line in server.log if "Traceback" in line]
    node.works()
    print(f"{FUZZ} requests in {time.monotonic() - started:.1f} s: {sorted(statuses.items())}")


# -- slow clients: 1,500 idle or half-sent connections while 40 nodes report --------------------

NODES, IDLE, REPORTS = 40, 1500, 10


def _raise_own_open_files(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"the open-file limit is {hard}: this test needs {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _many_nodes_data() -> dict:
    from tests.conftest import example_data
    data = example_data()
    template = data["nodes"][-1]
    data["nodes"] = data["nodes"][:1] + [
        dict(template, name=f"n{i:02d}", mac=f"52:54:00:99:00:{i:02x}",
             ip=f"192.168.20.{100 + i}") for i in range(NODES)]
    return data


def test_slow_clients_do_not_stop_installing_nodes(tmp_path):
    _raise_own_open_files(4 * IDLE + 1024)
    cluster = render_outdir(str(tmp_path / "out"), _many_nodes_data())
    with Server(cluster, str(tmp_path / "out"), str(tmp_path / "state")) as server:
        nodes = [Node(server.url, f"127.0.3.{i + 1}", f"n{i:02d}", f"52-54-00-99-00-{i:02x}")
                 for i in range(NODES)]
        for node in nodes:
            node.start()
        slow = _slow_clients(server)
        try:
            latencies = _nodes_report(nodes)
            refused_while = server.service.gate.refused
        finally:
            for sock in slow:
                sock.close()
        for node in nodes:              # nothing lost: every acknowledged report stored
            events = server.state.events(node.name)
            assert len(events) == 1 + REPORTS, node.name
        assert max(latencies) < 10, max(latencies)
        latencies.sort()
        print(f"{len(slow)} slow connections ({refused_while} refused at the gate); "
              f"{len(latencies)} reports, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")


def _slow_clients(server: Server) -> list[socket.socket]:
    """IDLE connections from 30 addresses: half send nothing, half half a request head."""
    socks = []
    for i in range(IDLE):
        sock = _connect(server, f"127.0.2.{i % 30 + 1}")
        if i % 2:
            sock.sendall(b"POST /api/v1/nodes/n00/events HTTP/1.1\r\nHost: x\r\nContent-Le")
        socks.append(sock)
    return socks


def _nodes_report(nodes: list[Node]) -> list[float]:
    """Every node posts REPORTS reports at once with the others; the time each took."""
    latencies: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run(node: Node) -> None:
        try:
            for i in range(REPORTS):
                node.index = i + 1
                began = time.monotonic()
                node.report(f"stage{i}", "done")
                with lock:
                    latencies.append(time.monotonic() - began)
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)
    threads = [threading.Thread(target=run, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:3]
    assert len(latencies) == len(nodes) * REPORTS
    return latencies


def test_a_refused_address_is_logged_once_per_interval():
    now = [0.0]
    said: list[str] = []
    gate = connections.Gate(total=10, per_address=2, reserve=2, log=said.append, every=60,
                            clock=lambda: now[0])
    assert gate.admit("10.0.0.9") is None and gate.admit("10.0.0.9") is None
    for _ in range(100):
        assert "per address" in gate.admit("10.0.0.9")
    assert len(said) == 1 and gate.refused == 100
    now[0] = 61
    gate.admit("10.0.0.9")
    assert len(said) == 2
    gate.release("10.0.0.9")
    assert gate.admit("10.0.0.9") is None and gate.count == 2
    for i in range(6):
        assert gate.admit(f"10.0.1.{i}") is None
    assert "at most 8" in gate.admit("10.0.2.1")
    gate.know("10.0.2.1")
    assert gate.admit("10.0.2.1") is None           # the reserve is a node's


# -- kill -9 of serve during a report stream: no acknowledged report lost ----------------------

def test_a_sigkill_during_a_report_stream_loses_no_acknowledged_report(tmp_path):
    from tests.conftest import example_path
    from tests.test_serve import Serve, free_port
    render_outdir(str(tmp_path / "out"))
    port = free_port()
    argv = [example_path("cluster.toml"), str(tmp_path / "out"), "--state",
            str(tmp_path / "state"), "--listen", f"127.0.0.1:{port}", "--no-dhcp", "--no-join"]
    first = Serve(argv)
    first.wait_serving()
    url = f"http://127.0.0.1:{port}"
    node = Node(url)
    node.start()
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        for i in range(1900):          # below the events kept per node
            if stop.is_set():
                return
            try:
                node.report("os", "running", message=f"r{i}")
            except (OSError, AssertionError, http.client.HTTPException):
                return
            acked.append(f"r{i}")
    sender = threading.Thread(target=stream)
    sender.start()
    time.sleep(1.5)
    first.proc.kill()                   # SIGKILL: no chance to finish anything
    first.finish(20)
    stop.set()
    sender.join(30)
    assert len(acked) > 20, first.output
    second = Serve(argv)
    try:
        second.wait_serving()
        client, stored, after = Client(url), [], 0
        for _ in range(10):             # pages of at most limits.PAGE
            status, page, _ = client.call("GET", f"/api/v1/nodes/node1/events?after={after}")
            assert status == 200
            if not page:
                break
            stored += [e["message"] for e in page]
            after = page[-1]["id"]
        assert not set(acked) - set(stored), f"{len(set(acked) - set(stored))} lost"
    finally:
        code, out = second.stop()
    assert "Traceback" not in out and "Traceback" not in first.output
    print(f"{len(acked)} reports acknowledged before the SIGKILL, all stored")
