"""Who may hold a connection to `serve`, and for how long (README, "Threat model").

A stranger on the provisioning LAN can open connections and send nothing, or half a request:
each costs the master a file descriptor. So connections are capped per client address and in
all, with a reserve only addresses known to be nodes may use; a request head must arrive
within limits.HEADER_TIMEOUT (aiohttp's keep-alive timer, which also runs before the first
request); and what is refused is logged once per address per limits.LOG_EVERY, not per
connection. Malformed HTTP gets a JSON 400 like every other refusal, without a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from installer.master import limits

KNOWN_MAX = 4096        # addresses remembered as nodes (a cluster has dozens)


class Gate:
    """Counts open connections by client address, admits or refuses new ones."""

    def __init__(self, *, total: int = limits.TOTAL, per_address: int = limits.PER_ADDRESS,
                 reserve: int = limits.RESERVE, log: Callable[[str], None] = print,
                 every: float = limits.LOG_EVERY, clock: Callable[[], float] = time.monotonic):
        self.total, self.per_address, self.reserve = total, per_address, reserve
        self.log, self.every, self.clock = log, every, clock
        self.open: Counter[str] = Counter()
        self.count = 0
        self.known: set[str] = set()
        self.refused = 0
        self._said: dict[str, float] = {}

    def admit(self, address: str) -> str | None:
        """None, counting the connection in; or why it is refused."""
        room = self.total - (0 if address in self.known else self.reserve)
        if self.open[address] >= self.per_address:
            why = f"{self.open[address]} connections are open from {address}: at most " \
                  f"{self.per_address} per address"
        elif self.count >= room:
            why = f"{self.count} connections are open: at most {room} for this address"
        else:
            self.open[address] += 1
            self.count += 1
            return None
        self.refused += 1
        self.note(address, f"refused connections from {address}: {why}")
        return why

    def release(self, address: str) -> None:
        self.count -= 1
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def know(self, address: str) -> None:
        """ADDRESS is a node's (its token worked, or the cluster file names it)."""
        if address and len(self.known) < KNOWN_MAX:
            self.known.add(address)

    def note(self, address: str, line: str) -> None:
        """LINE, unless something was logged about ADDRESS in the last `every` seconds."""
        now = self.clock()
        if now - self._said.get(address, -self.every) < self.every:
            return
        if len(self._said) >= KNOWN_MAX:        # forget the addresses that went quiet
            self._said = {a: t for a, t in self._said.items() if now - t < self.every}
        self._said[address] = now
        self.log(f"{line} (said once per {self.every:g} s per address)")


def refusal(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP answer with a JSON error, for a connection aiohttp never sees."""
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8"
            f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class GatedHandler(RequestHandler):
    """aiohttp's protocol for one connection, behind the gate."""

    def __init__(self, manager: web.Server, gate: Gate, **kwargs):
        super().__init__(manager, **kwargs)
        self.gate = gate
        self.address: str | None = None     # None: refused, aiohttp never saw it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        why = self.gate.admit(address)
        if why is not None:
            assert isinstance(transport, asyncio.Transport)
            transport.write(refusal(429, "Too Many Requests", f"{why}; try again later"))
            transport.close()
            return
        self.address = address
        super().connection_made(transport)
        # aiohttp before 3.9 (Debian 12's, where a master installed from an `usb --all`
        # stick runs serve) starts no timer before the first request: a head sent a byte at
        # a time held the connection for ever. This one closes it (later ones: keep-alive).
        self.head_timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            limits.HEADER_TIMEOUT, self._head_too_late)
        self.head_lines = 0

    def data_received(self, data: bytes) -> None:
        if self.address is None:
            return
        if self.head_timer is not None and self._too_many_lines(data):
            return
        super().data_received(data)
        if self.head_timer is not None and self._request_count:
            self.head_timer.cancel()
            self.head_timer = None

    def _too_many_lines(self, data: bytes) -> bool:
        """aiohttp 3.8 counts no header lines: bound them here (one request per connection
        there, see runner(), so the first head is every head)."""
        end = data.find(b"\r\n\r\n")
        self.head_lines += (data if end < 0 else data[:end]).count(b"\n")
        if self.head_lines <= limits.MAX_HEADERS + 1 or self.transport is None:
            return False
        why = f"more than {limits.MAX_HEADERS} header lines"
        self.gate.note(self.address or "", f"bad HTTP from {self.address}: {why}")
        self.transport.write(refusal(400, "Bad Request", f"not a valid HTTP request: {why}"))
        self._head_too_late()
        return True

    def _head_too_late(self) -> None:
        """No whole head in time (or a refused one): close. force_close() closes the
        transport itself (flushing what was written) and drops it."""
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if not self._request_count and self.transport is not None:
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.address is None:
            return
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.gate.release(self.address)
        self.address = None
        super().connection_lost(exc)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Malformed HTTP (aiohttp's parser refused it): a JSON 4xx and one log line per
        address and interval, not a traceback per request. A 5xx is a bug: aiohttp's own."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        why = " ".join(str(message or exc or "malformed request").split())[:200]
        self.gate.note(self.address or "", f"bad HTTP from {self.address}: {why}")
        resp = web.json_response({"error": f"not a valid HTTP request: {why}"}, status=status)
        resp.force_close()
        return resp


# aiohttp 3.9 brought typed application keys, and with them the limits tested here.
OLD_AIOHTTP = not hasattr(web, "AppKey")


async def _one_request(request: web.Request, response: web.StreamResponse) -> None:
    response.force_close()


def runner(app: web.Application) -> web.AppRunner:
    """The application's runner with serve's settings: the keep-alive timer is the header
    timeout (aiohttp starts it at connect and after each answer, and a half-sent request
    does not stop it); what a refused body still sends is read for LINGER seconds only.
    Under aiohttp 3.8 every connection carries one request: its first head is the one
    GatedHandler bounds in time and lines."""
    if OLD_AIOHTTP:
        app.on_response_prepare.append(_one_request)
    return web.AppRunner(app, access_log=None, handle_signals=False,
                         keepalive_timeout=limits.HEADER_TIMEOUT,
                         lingering_time=limits.LINGER,
                         max_headers=limits.MAX_HEADERS)    # aiohttp 3.8's default: 32768


async def listen(run: web.AppRunner, gate: Gate, host: str, port: int,
                 backlog: int = 512, log: Callable[[str], None] = print) -> asyncio.Server:
    """Listen on HOST:PORT with every connection behind GATE (in place of a TCPSite, whose
    protocol factory cannot be changed); close the server before run.cleanup().

    An address no interface has yet (the master's management address before its bridge is
    up) is bound all the same (IP_FREEBIND), and said: connections come once it is there."""
    server = run.server
    assert server is not None, "listen() after run.setup()"

    def protocol() -> GatedHandler:
        # The settings aiohttp gives its own handlers (keep-alive timeout, line sizes).
        return GatedHandler(server, gate, loop=server._loop, **server._kwargs)
    sock = _bound(host, port, log)
    sock.listen(backlog)
    return await asyncio.get_running_loop().create_server(protocol, sock=sock)


def _bound(host: str, port: int, log: Callable[[str], None]) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL:
                raise
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((host, port))
            log(f"warning: no interface has {host} yet: listening on it all the same, "
                "for when it comes up (check the address if it never does)")
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)     # Linux's value; Python 3.12 names it
