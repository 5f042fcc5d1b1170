"""Waiting for the master: every fetch the agent makes goes through one Waiter.

A master restarted for an upgrade, a switch that reboots, a PC powered on before `serve`
runs: the agent waits for the master (capped, jittered exponential backoff, one console line
per wait) for a bounded time instead of failing the install. A master that answers "no" (an
unknown node, a node not armed for install) is not hammered: the agent says so and asks
again once a minute. Anything else (a plan that is not JSON, a 400) fails at once.

The decisions are pure functions of (error, attempt, elapsed), so they are tested without
sleeping; the Waiter only applies them with an injectable clock and sleep. Elapsed time is
monotonic: the agent steps the wall clock to the master's mid-install.
"""

from __future__ import annotations

import http.client
import random
import socket
import time
from typing import Callable, NamedTuple, Optional, TypeVar

import requests

CAP = 30.0                  # seconds: the longest pause between two tries of a silent master
SLOW = 60.0                 # seconds between two asks once the master said no
LIMIT = 30 * 60.0           # seconds a fetch waits in all: long enough for a master's reboot
NO = (401, 403, 404, 409)   # the master's "no": unknown node, not armed, token refused

RETRY, REASK, FAIL, GIVE_UP = "retry", "re-ask", "fail", "give up"

T = TypeVar("T")


class HTTPStatus(Exception):
    """An answer that is not the one asked for: classified by its status code."""

    def __init__(self, url: str, status: int, text: str = ""):
        self.url, self.status = url, status
        body = " ".join(text.split())[:1000]     # the master's reason and its fix
        super().__init__(f"HTTP {status} from {url}{': ' + body if body else ''}")


class GaveUp(Exception):
    """The master stayed away (or kept saying no) for longer than the wait limit."""

    def __init__(self, message: str, last: BaseException):
        super().__init__(message)
        self.last = last


class Decision(NamedTuple):
    action: str         # RETRY, REASK, FAIL or GIVE_UP
    wait: float         # seconds to sleep before the next try


def classify(error: BaseException) -> str:
    """RETRY for a master that is away or cut us off, REASK for its "no", FAIL otherwise."""
    if isinstance(error, HTTPStatus):
        if error.status >= 500:
            return RETRY
        return REASK if error.status in NO else FAIL
    if isinstance(error, BrokenPipeError):      # a pipe to a local process, not the network
        return FAIL
    if isinstance(error, (requests.ConnectionError, requests.Timeout,
                          requests.exceptions.ChunkedEncodingError,
                          http.client.IncompleteRead, ConnectionError, socket.timeout,
                          TimeoutError)):
        return RETRY
    return FAIL


def backoff(attempt: int, rand: float) -> float:
    """The pause after the attempt-th failure (from 0): 1, 2, 4... s capped at CAP, each
    drawn from its upper half (rand in [0, 1)) so that nodes cut off together do not all
    come back in the same second."""
    return min(CAP, 2.0 ** attempt) * (0.5 + 0.5 * rand)


def decide(error: BaseException, attempt: int, elapsed: float, limit: float = LIMIT,
           rand: float = 0.5) -> Decision:
    """What to do after `error` on the attempt-th try, `elapsed` seconds into the wait."""
    kind = classify(error)
    if kind == FAIL:
        return Decision(FAIL, 0.0)
    if elapsed >= limit:
        return Decision(GIVE_UP, 0.0)
    wait = SLOW if kind == REASK else backoff(attempt, rand)
    return Decision(kind, min(wait, limit - elapsed))


def span(seconds: float) -> str:
    """3m20s, 1h02m, 45s: how long, as the console and status say it."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def reason(error: BaseException) -> str:
    """The error in a few words: the root cause of a requests error, not its whole chain."""
    if isinstance(error, HTTPStatus):
        return f"HTTP {error.status}"
    text = str(error).lower()
    for needle, said in (("refused", "connection refused"), ("reset", "connection reset"),
                         ("timed out", "timed out"), ("no route", "no route to host"),
                         ("unreachable", "network unreachable"),
                         ("incompleteread", "the stream was cut"),
                         ("connection broken", "the stream was cut"),
                         ("stream was cut", "the stream was cut"),
                         ("remote end closed", "the master closed the connection"),
                         ("name or service not known", "the master's name does not resolve")):
        if needle in text:
            return said
    return f"{type(error).__name__}: {str(error)[:200]}"


class Waiter:
    """Runs a fetch until it answers, waiting for the master as `decide` says.

    on_wait(what, seconds) is told of every wait that ended with an answer (the agent
    reports it, so `status` shows how long the node waited for the master)."""

    def __init__(self, limit: float = LIMIT, *, log: Callable[[str], None] = print,
                 on_wait: Optional[Callable[[str, float], None]] = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random):
        self.limit, self.log, self.on_wait = limit, log, on_wait
        self.clock, self.wall, self.sleep, self.rand = clock, wall, sleep, rand

    def run(self, what: str, fetch: Callable[[], T],
            progress: Callable[[], int] = lambda: 0) -> T:
        """fetch() until it returns. A fetch that moved `progress` on before it failed (a
        stream cut mid-way) starts a fresh wait: the master was there until then."""
        start, since, attempt, done = self.clock(), self.wall(), 0, progress()
        while True:
            tried = self.clock()    # the wait ends as the try that answers begins
            try:
                result = fetch()
            except Exception as e:      # classified: FAIL re-raises it unchanged
                if progress() != done:
                    start, since, attempt, done = self.clock(), self.wall(), 0, progress()
                elapsed = self.clock() - start
                decision = decide(e, attempt, elapsed, self.limit, self.rand())
                if decision.action == FAIL:
                    raise
                if decision.action == GIVE_UP:
                    raise GaveUp(f"gave up waiting for the master after {span(elapsed)} "
                                 f"(limit {span(self.limit)}): {what}: {e}", e) from e
                self.log(self._line(what, e, decision, since, elapsed))
                self.sleep(decision.wait)
                attempt += 1
                continue
            if attempt:
                waited = tried - start
                self.log(f"the master answered after {span(waited)}: {what}")
                if self.on_wait:
                    self.on_wait(what, waited)
            return result

    def _line(self, what: str, error: BaseException, decision: Decision, since: float,
              elapsed: float) -> str:
        when = time.strftime("%H:%M:%S UTC", time.gmtime(since))
        if decision.action == REASK:
            return (f"the master says no to {what}: {error}; asking again every "
                    f"{SLOW:.0f} s (since {when}, {span(elapsed)} so far)")
        return (f"waiting for the master since {when} ({span(elapsed)}): {what}: "
                f"{reason(error)}; next try in {decision.wait:.0f} s")


# The agent is one process doing one install: __main__ sets the wait limit (kernel argument
# installer.wait=) and where waits are said, and every fetch uses this Waiter.
default = Waiter()


def configure(limit: float = LIMIT, log: Callable[[str], None] = print,
              on_wait: Optional[Callable[[str, float], None]] = None) -> Waiter:
    global default
    default = Waiter(limit, log=log, on_wait=on_wait)
    return default
