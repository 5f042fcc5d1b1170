"""Every bound a client of `serve` meets, in one place (README, "Threat model"): what a
stranger on the provisioning LAN can make the master hold, keep or wait for.
"""

from __future__ import annotations

import re
import resource
from collections.abc import Callable

# -- a report's fields: checked before the database sees them ------------------------------
BODY = 64 * 1024            # bytes of a report (the agent keeps 4000 chars of hook output)
DEPTH = 4                   # JSON nesting: a report is an object of objects at most
MESSAGE = 60 * 1024         # characters of a report's message
INDEX = 1_000_000           # index and total: an install has a few dozen stages
TIME = 10**11               # the node's clock in seconds (year 5138): a SQLite REAL as is
USAGE = 10**12              # a number in the agent's usage object
HOST_KEYS = 16              # host keys in one report (Debian makes 3 or 4)
STEPS = 256                 # distinct steps of one install attempt (the agent has ~40)

# -- what the state keeps ------------------------------------------------------------------
EVENTS = 2000               # events kept per node; older ones are dropped, and counted
PAGE = 500                  # events in one answer of GET .../events (default and cap)
PAGE_BYTES = 1 << 20        # ... and their messages' characters (at least one event)

# -- connections ---------------------------------------------------------------------------
HEADER_TIMEOUT = 15.0       # s from connect (or the last answer) to a whole request head
BODY_TIMEOUT = 15.0         # s to read a report's body once its head came
MAX_HEADERS = 128           # header lines in a request head (aiohttp 3.9 on: its default)
LINGER = 2.0                # s an answered connection may still send the body it owed
PER_ADDRESS = 64            # open connections from one client address
TOTAL = 1024                # open connections in all, of which
RESERVE = 128               # ... these only for addresses known to be nodes
FILES = 256                 # file descriptors kept for the state, images and dnsmasq
LOG_EVERY = 60.0            # s between two log lines about one refused address

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


def too_deep(body: bytes, limit: int = DEPTH) -> bool:
    """Whether the JSON text nests deeper than LIMIT, told without parsing it (the parser
    recurses, and a body of 30,000 '[' would end in a RecursionError)."""
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub(b"", body)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


def raise_open_files(log: Callable[[str], None]) -> int:
    """Raise this process's open-file limit to the hard one; the soft limit it has now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if want <= soft:
        log(f"open-file limit {soft} (the hard limit)")
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as e:
        log(f"open-file limit stays {soft}: {e}")
        return soft
    log(f"open-file limit raised from {soft} to {want}")
    return want


def total_connections(open_files: int) -> int:
    """The connection cap an open-file limit allows, keeping FILES for everything else."""
    return max(RESERVE + PER_ADDRESS, min(TOTAL, open_files - FILES))
