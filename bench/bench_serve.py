#!/usr/bin/env python3
"""Serve benchmark: 40 simulated nodes against a real `ganeti-installer serve` on loopback.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_serve.py [--nodes 40] [--size-mib 128] [--reports 30]
                                          [--interval 0.1] [--lan-mbps 1000]
                                          [--veth-mbps 1000] [--lockstep] [--hostile]
                                          [OUTDIR]

1. link: the bandwidth in this run, as N raw TCP connections each sent the netboot initrd by
   sendfile(2) and read by recv_into (no HTTP on either side): loopback, or with --veth-mbps
   (root) a veth pair to a network namespace the benchmark makes, where serve runs, its
   sending side shaped to that rate by tc tbf, as a provisioning LAN's link would be, with
   Debian's default queue (pfifo_fast) before it, as a master's NIC has;
2. boot storm: N nodes fetch the initrd over HTTP at once (requests): aggregate MB/s, and
   its share of the link (target >= 90 %);
   and again with raw-socket readers (a minimal GET, then recv_into): the difference is
   what the requests client itself costs on a host whose cores serve and clients share;
3. install: N nodes each fetch their plan by MAC, all at once, and post REPORTS progress
   reports (one per --interval seconds on average, far faster than a real install;
   --lockstep: all at the same instant): plan and report latency p50/p99 alone; while N
   more downloads of the initrd share a --lan-mbps LAN's bandwidth (default
   1000: a gigabit provisioning LAN); and while they run as fast as loopback goes. The
   downloading clients run as SCHED_IDLE: the CPU they use is a node's own in real life
   (target p99 < 50 ms). Each load is measured twice: with requests, as the agent reports,
   and with lean HTTP clients (a socket and a few lines): the difference is the CPU the
   requests clients take from serve on this host's shared cores.

4. --hostile: instead of 2 and 3, the install alone and then beside a stranger's load (1,500
   idle or half-sent connections from many loopback addresses, junk requests at
   --hostile-rate per second): plan and report p99 with and without it.

OUTDIR: a built OUTDIR whose netboot/initrd is used; without it, a random initrd of
--size-mib MiB. Nodes, clients and serve share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from bench.bench_build import cluster_file  # noqa: E402
from installer.build import (
    dnsmasq,
    pxe,
    render,  # noqa: E402
)
from installer.cluster import config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 1 << 20
MB = 1e6


def make_outdir(path: str, nodes: int, size_mib: int, built: str | None) -> tuple[str, str]:
    """A rendered OUTDIR for an N-node cluster; the initrd from BUILT or random bytes."""
    cfile = cluster_file(nodes, path)
    cluster = config.load(cfile)
    out = os.path.join(path, "out")
    plans = render.render_plans(cluster)
    render.write_plans(plans, out)
    pxe.render_entries(cluster, out, plans=plans)
    dnsmasq.render_dnsmasq(cluster, out)
    os.makedirs(os.path.join(out, "netboot"))
    initrd = os.path.join(out, "netboot", "initrd")
    if built:
        shutil.copyfile(os.path.join(built, "netboot", "initrd"), initrd)
    else:
        with open(initrd, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(CHUNK))
    with open(os.path.join(out, "netboot", "vmlinuz"), "wb") as f:
        f.write(os.urandom(CHUNK))
    return cfile, out


def start_serve(cfile: str, out: str, state: str, link: Link) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:          # free here, and in a new namespace
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*link.prefix, sys.executable, "-m", "installer.cli", "serve",
                             cfile, out, "--state", state, "--listen", f"{link.host}:{port}",
                             "--no-dhcp"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"serve did not start (exit {proc.wait()})")
        if line.startswith("serving "):
            break
    threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()  # drain
    return proc, f"http://{link.host}:{port}"


# -- 1. the link ---------------------------------------------------------------------------

class Link:
    """Where serve listens: loopback, or (mbps > 0) a network namespace behind a veth pair
    whose namespace side sends at most MBPS Mbit/s. prefix runs a command on serve's side."""

    def __init__(self, mbps: float):
        self.mbps, self.host, self.prefix = mbps, "127.0.0.1", ()
        self.ns = f"gi-bench-{os.getpid()}"

    def __enter__(self) -> Link:
        if not self.mbps:
            return self
        ns, host_if, ns_if = self.ns, f"gibh{os.getpid()}", f"gibn{os.getpid()}"
        for argv in (["ip", "netns", "add", ns],
                     ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if,
                      "netns", ns],
                     ["ip", "addr", "add", "10.201.0.1/24", "dev", host_if],
                     ["ip", "link", "set", host_if, "up"],
                     ["ip", "-n", ns, "addr", "add", "10.201.0.2/24", "dev", ns_if],
                     ["ip", "-n", ns, "link", "set", ns_if, "up"],
                     ["ip", "-n", ns, "link", "set", "lo", "up"],
                     # burst: a 64 KiB GSO segment must fit.
                     ["tc", "-n", ns, "qdisc", "add", "dev", ns_if, "root", "handle", "1:",
                      "tbf", "rate", f"{self.mbps:g}mbit", "burst", "256kb", "latency", "20ms"],
                     # The queue a Debian master's NIC has: pfifo_fast, three priority bands.
                     ["tc", "-n", ns, "qdisc", "add", "dev", ns_if, "parent", "1:1",
                      "pfifo_fast"]):
            subprocess.run(argv, check=True)
        self.host, self.prefix = "10.201.0.2", ("ip", "netns", "exec", ns)
        return self

    def __exit__(self, *exc) -> None:
        if self.mbps:
            subprocess.run(["ip", "netns", "del", self.ns], check=False)

    def describe(self) -> str:
        if not self.mbps:
            return "loopback"
        return (f"veth to a namespace, shaped to {self.mbps:g} Mbit/s = {self.mbps / 8:g} MB/s, "
                "pfifo_fast")


SENDER = """
import socket, sys, threading
path, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = socket.socket()
server.bind((host, 0))
server.listen(n)
print(server.getsockname()[1], flush=True)
def send(conn):
    with conn, open(path, "rb") as f:
        conn.sendfile(f)
conns = [server.accept()[0] for _ in range(n)]
threads = [threading.Thread(target=send, args=(c,)) for c in conns]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def raw_link(path: str, n: int, link: Link) -> float:
    """MB/s of N concurrent raw TCP transfers of the file (sendfile → recv_into), sent from
    serve's side of the link."""
    sender = subprocess.Popen([*link.prefix, sys.executable, "-c", SENDER, path, link.host,
                               str(n)], stdout=subprocess.PIPE, text=True)
    port = int(sender.stdout.readline())
    sizes = [0] * n

    def receive(i):
        buf = bytearray(CHUNK)
        with socket.create_connection((link.host, port)) as c:
            while got := c.recv_into(buf):
                sizes[i] += got
    start = time.perf_counter()
    threads = [threading.Thread(target=receive, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    sender.wait(30)
    return sum(sizes) / took / MB


# -- 2. downloads over HTTP ----------------------------------------------------------------

def downloads(url: str, n: int, expect: int, result, idle: bool = False,
              rate: float = 0, forever: bool = False) -> None:
    """N threads fetch the initrd at once; puts (bytes, seconds) in the result queue.
    idle: the clients take only CPU time nothing else wants (SCHED_IDLE), as if they ran on
    their own machines; their reading would otherwise starve serve on a 2-core host.
    rate: bytes/s per client (0: as fast as it goes); TCP then paces serve's sending.
    forever: fetch again and again, until the process is terminated."""
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    sizes = [0] * n
    errors = []

    def fetch(i):
        while True:
            once(i)
            if not forever:
                return

    def once(i):
        start, before = time.perf_counter(), sizes[i]
        with requests.get(f"{url}/netboot/initrd", stream=True, timeout=60) as r:
            if r.status_code != 200:
                errors.append(r.status_code)
                return
            for chunk in r.iter_content(CHUNK // 16 if rate else CHUNK):
                sizes[i] += len(chunk)
                if rate:
                    done = sizes[i] - before
                    time.sleep(max(0.0, done / rate - (time.perf_counter() - start)))
    start = time.perf_counter()
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    short = sum(1 for s in sizes if s % expect)
    result.put((sum(sizes), took, errors, short))


def lean_downloads(url: str, n: int, expect: int, result) -> None:
    """As downloads(), but each node reads with recv_into on a raw socket after a minimal
    GET: what serve can send when the client costs no more than the link's own reader."""
    host, port = url.split("//")[1].split(":")
    sizes = [0] * n

    def fetch(i):
        buf = bytearray(CHUNK)
        with socket.create_connection((host, int(port))) as c:
            c.sendall(f"GET /netboot/initrd HTTP/1.1\r\nHost: {host}\r\n"
                      "Connection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(4096)
            sizes[i] = len(head.split(b"\r\n\r\n", 1)[1])
            while got := c.recv_into(buf):
                sizes[i] += got
    start = time.perf_counter()
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    result.put((sum(sizes), took, [], sum(1 for s in sizes if s != expect)))


# -- 3. plans and reports ------------------------------------------------------------------

def installs(url: str, macs: list[str], reports: int, interval: float, lockstep: bool,
             lean: bool, result) -> None:
    """One thread per node: its plan by MAC, then REPORTS reports; puts the latencies.
    lean: each node on a LeanHttp connection, else on a requests session as the agent."""
    client = LeanHttp if lean else RequestsHttp
    plan_ms, report_ms, bad = [], [], []

    def node(mac):
        t0 = time.perf_counter()
        http = client(url)
        status, body = http.get(f"/api/v1/plans/{mac.replace(':', '-')}")
        plan_ms.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            bad.append(f"plan {status}")
            return
        plan = json.loads(body)
        events = f"/api/v1/nodes/{plan['node']['name']}/events"
        for i in range(reports):
            t0 = time.perf_counter()
            status, body = http.post(events, plan["report"]["token"], report_body(i, reports))
            report_ms.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                bad.append(f"report {status} {body[:100]!r}")
            pause(interval, lockstep)
        http.close()
    threads = [threading.Thread(target=node, args=(m,)) for m in macs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.put((plan_ms, report_ms, bad))


class RequestsHttp:
    """A node's client as the agent's: requests, on one session."""

    def __init__(self, url: str):
        self.url, self.session = url, requests.Session()

    def get(self, path: str) -> tuple[int, bytes]:
        r = self.session.get(self.url + path, timeout=30)
        return r.status_code, r.content

    def post(self, path: str, token: str, body: dict) -> tuple[int, bytes]:
        r = self.session.post(self.url + path, json=body, timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
        return r.status_code, r.content

    def close(self) -> None:
        self.session.close()


class LeanHttp:
    """One keep-alive HTTP/1.1 connection with next to no client code: a node whose CPU is
    its own costs serve's host nothing, and this comes closest to that on shared cores."""

    def __init__(self, url: str):
        self.host, port = url.split("//")[1].split(":")
        self.conn = socket.create_connection((self.host, int(port)))
        self.buf = b""

    def get(self, path: str) -> tuple[int, bytes]:
        return self._request("GET", path)

    def post(self, path: str, token: str, body: dict) -> tuple[int, bytes]:
        return self._request("POST", path, f"Authorization: Bearer {token}\r\n"
                             "Content-Type: application/json\r\n", json.dumps(body).encode())

    def close(self) -> None:
        self.conn.close()

    def _request(self, method: str, path: str, headers: str = "",
                 body: bytes = b"") -> tuple[int, bytes]:
        self.conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                      if k.lower() == "content-length")
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return int(lines[0].split()[1]), rest[:length]

    def _recv(self) -> bytes:
        data = self.conn.recv(65536)
        if not data:
            raise ConnectionError("serve closed the connection")
        return data


def pause(interval: float, lockstep: bool) -> None:
    """Until a node's next report: INTERVAL on average. Real installs drift apart (disks and
    mirrors differ), so each pause is 0.5-1.5 x INTERVAL; lockstep: exactly INTERVAL, every
    node reporting at the same instant for the whole install, a worst case."""
    time.sleep(interval if lockstep else random.uniform(0.5, 1.5) * interval)


def report_body(i: int, reports: int) -> dict:
    """The i-th of an install's REPORTS reports: "install started", then steps done."""
    body = {"step": "install", "status": "started", "index": 0, "total": reports}
    if i:
        body = {"step": f"stage{i}", "status": "done", "index": i, "total": reports}
    return dict(body, time=time.time(), message="x" * 200, final=False)


def both_clients(ctx, url: str, macs: list[str], args) -> None:
    """The 40 installing nodes, once with requests (as the agent) and once with lean clients,
    each in a process of its own; their plan and report latencies printed."""
    for client, lean in (("requests, as the agent", False), ("lean HTTP clients", True)):
        rearm(url, args)
        iq = ctx.Queue()
        nodes = ctx.Process(target=installs, args=(url, macs, args.reports, args.interval,
                                                   args.lockstep, lean, iq))
        nodes.start()
        plan_ms, report_ms, bad = iq.get()
        nodes.join()
        print(f" {client}:")
        latencies(plan_ms, report_ms, bad)


def rearm(url: str, args) -> None:
    """Every node armed for a new install, as `reinstall` does: a plan goes out once per
    install cycle, and each round fetches every plan again."""
    http = RequestsHttp(url)
    try:
        for name in args.names:
            status, body = http.post(f"/api/v1/nodes/{name}/reinstall", args.admin_token, {})
            if status != 200:
                raise SystemExit(f"reinstall of {name} refused: {status} {body[:200]!r}")
    finally:
        http.close()


def latencies(plan_ms: list[float], report_ms: list[float], bad: list[str]) -> None:
    print(f"  plan fetch   x{len(plan_ms):5}: p50 {statistics.median(plan_ms):6.1f} ms, "
          f"p99 {pct(plan_ms, 99):6.1f} ms, max {max(plan_ms):6.1f} ms")
    print(f"  report POST  x{len(report_ms):5}: p50 {statistics.median(report_ms):6.1f} ms, "
          f"p99 {pct(report_ms, 99):6.1f} ms, max {max(report_ms):6.1f} ms "
          f"(target p99 < 50 ms); refused {len(bad)} {bad[:3]}")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench_storm(ctx, url: str, n: int, size: int, link: float, nominal: float) -> None:
    """nominal: the shaped rate in MB/s (0 on loopback), the share of which is printed too."""
    for label, target in (("requests", downloads), ("raw socket readers", lean_downloads)):
        total, took, errors, short = _storm(ctx, target, url, n, size)
        rate = total / took / MB
        of_nominal = f" ({100 * rate / nominal:.0f} % of {nominal:g} MB/s)" if nominal else ""
        print(f"boot storm, {n} x GET /netboot/initrd ({label}): {total / MB:.0f} MB in "
              f"{took:.2f} s = {rate:.0f} MB/s = {100 * rate / link:.0f} % of the link"
              f"{of_nominal} (target >= 90 %); errors {errors or 'none'}, incomplete {short}")


def _storm(ctx, target, url: str, n: int, size: int) -> tuple:
    """target's downloads in a spawned process (its own GIL)."""
    q = ctx.Queue()
    worker = ctx.Process(target=target, args=(url, n, size, q))
    worker.start()
    got = q.get()
    worker.join()
    return got


def bench_install(ctx, url: str, macs: list[str], size: int, args) -> None:
    """Plan and report latency alone, then under two download loads. Each round is a new
    install attempt of the same nodes ("install started" begins one)."""
    n = len(macs)
    lan = args.lan_mbps * 1e6 / 8
    loads = (("no other load", None),
             (f"a {args.lan_mbps:g} Mbit/s LAN's worth of initrd downloads by {n} nodes "
              "(clients SCHED_IDLE, as on their own machines)", (True, lan / n)),
             (f"{n} initrd downloads as fast as loopback goes (clients SCHED_IDLE, as on "
              "their own machines)", (True, 0)))
    for label, load_args in loads:
        load, unused = None, ctx.Queue()      # kept: the child unpickles it
        if load_args:
            load = ctx.Process(target=downloads,
                               args=(url, n, size, unused, *load_args, True))
            load.start()
            time.sleep(1)               # the downloads are under way
        pace = "exactly" if args.lockstep else "on average"
        print(f"install, {n} nodes, a report every {args.interval:g} s each ({pace}), "
              f"under {label}:")
        both_clients(ctx, url, macs, args)
        if load:
            load.terminate()            # it fetches until stopped
            load.join()


# -- 4. a hostile load ----------------------------------------------------------------------

JUNK = [b"GET /api/v1/plans/zz-zz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/v1/plans/52-54-00-ff-ff-ff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/v1/nodes/n1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n"
        b"Content-Length: 9\r\n\r\n[[[[[[[[[",
        b"POST /api/v1/nodes/n1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
        b'{"step": "os", "time": 1e400, "x": [1]}',
        b"GET /api/v1/nodes/n1/events?limit=x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW / HTTP/1.1\r\n\r\n"]


def hostile(url: str, idle: int, rate: float, held_now, sent) -> None:
    """A stranger: IDLE connections from many loopback addresses, half of them with half a
    request head (reopened as serve times them out), and junk requests at RATE per second
    on keep-alive connections. Until terminated; HELD_NOW and SENT (shared integers) say
    how many connections it holds and how many junk requests it sent."""
    host, port = url.split("//")[1].split(":")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))     # IDLE sockets and more
    held: list[socket.socket] = []

    def connect(i: int) -> socket.socket | None:
        source = f"127.0.{100 + i // 50 % 100}.{i % 50 + 1}" if host.startswith("127.") else ""
        try:
            return socket.create_connection((host, int(port)), timeout=5,
                                            source_address=(source, 0))
        except OSError:
            return None

    def top_up() -> None:
        while True:     # those serve refused or timed out are opened again
            held[:] = [s for s in held if _alive(s)]
            held_now.value = len(held)
            for i in range(idle - len(held)):
                sock = connect(i)
                if sock is not None:
                    if i % 2:
                        sock.sendall(b"POST /api/v1/nodes/n1/events HTTP/1.1\r\nHost: x\r\n")
                    held.append(sock)
            time.sleep(1)

    def junk(k: int) -> None:
        sock = None
        while True:
            if sock is None:
                sock = connect(5000 + k)
            try:
                sock.sendall(random.choice(JUNK))
                sock.recv(65536)
            except (OSError, AttributeError):
                sock = None
            with sent.get_lock():
                sent.value += 1
            time.sleep(4 / rate)
    threading.Thread(target=top_up, daemon=True).start()
    for k in range(4):
        threading.Thread(target=junk, args=(k,), daemon=True).start()
    while True:
        time.sleep(1)


def _alive(sock: socket.socket) -> bool:
    """Not yet answered or closed by serve (a refusal, a timeout); a gone one is closed."""
    try:
        sock.setblocking(False)
        sock.recv(4096)
    except BlockingIOError:
        sock.setblocking(True)
        return True
    except OSError:
        pass
    sock.close()
    return False


def bench_hostile(ctx, url: str, macs: list[str], args) -> None:
    """Plan and report latency of N installing nodes, alone and beside a hostile load. The
    nodes run first alone: their address is then known to serve (their tokens worked), as
    an installing node's is, and may use the connections kept for nodes."""
    n = len(macs)
    for label, load_on in (("no other load", False),
                           (f"a hostile load: {args.hostile_idle} idle or half-sent "
                            f"connections and ~{args.hostile_rate:g} junk requests/s", True)):
        load, held, sent = None, ctx.Value("i", 0), ctx.Value("i", 0)
        if load_on:
            load = ctx.Process(target=hostile, args=(url, args.hostile_idle,
                                                     args.hostile_rate, held, sent))
            load.start()
            time.sleep(5)               # the connections are open
            print(f" the stranger holds {held.value} connections open (serve refused the "
                  "rest, and the stranger opens them again each second)")
        print(f"install, {n} nodes, a report every {args.interval:g} s each, under {label}:")
        both_clients(ctx, url, macs, args)
        if load:
            print(f" the stranger held {held.value} connections at the end, sent "
                  f"{sent.value} junk requests in all")
            sent.value = 0
            load.terminate()
            load.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", nargs="?", help="a built OUTDIR (its netboot/initrd is used)")
    p.add_argument("--nodes", type=int, default=40)
    p.add_argument("--size-mib", type=int, default=128)
    p.add_argument("--reports", type=int, default=30)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--lockstep", action="store_true",
                   help="every node reports at the same instant, all install long")
    p.add_argument("--lan-mbps", type=float, default=1000,
                   help="the provisioning LAN's speed for the paced load of step 3")
    p.add_argument("--veth-mbps", type=float, default=0,
                   help="serve behind a veth shaped to this rate instead of on loopback")
    p.add_argument("--hostile", action="store_true",
                   help="only the install, alone and beside idle connections and junk")
    p.add_argument("--hostile-idle", type=int, default=1500)
    p.add_argument("--hostile-rate", type=float, default=200,
                   help="junk requests per second of the hostile load")
    args = p.parse_args()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="gi-bench-serve-") as tmp:
        cfile, out = make_outdir(tmp, args.nodes, args.size_mib, args.outdir)
        initrd = os.path.join(out, "netboot", "initrd")
        size = os.path.getsize(initrd)
        nodes = config.load(cfile).nodes
        macs, args.names = [n.mac for n in nodes], [n.name for n in nodes]
        with Link(args.veth_mbps) as link:
            proc, url = start_serve(cfile, out, os.path.join(tmp, "state"), link)
            with open(os.path.join(tmp, "state", "admin.token"), encoding="ascii") as f:
                args.admin_token = f.read().strip()
            try:
                print(f"{args.nodes} nodes, initrd {size / MB:.1f} MB "
                      f"({'from ' + args.outdir if args.outdir else 'random'}), "
                      f"{os.cpu_count()} CPUs shared by serve and the clients")
                rate = raw_link(initrd, args.nodes, link)
                print(f"link ({link.describe()}; {args.nodes} raw TCP streams, sendfile -> "
                      f"recv_into): {rate:.0f} MB/s")
                if args.hostile:
                    bench_hostile(ctx, url, macs, args)
                else:
                    bench_storm(ctx, url, args.nodes, size, rate, args.veth_mbps / 8)
                    bench_install(ctx, url, macs, size, args)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


if __name__ == "__main__":
    main()
