"""The join's commands still running (ssh to the nodes, Ganeti's commands on them), so that
serve can end them when it stops instead of waiting minutes for Ganeti to finish."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

_lock = threading.Lock()
_live: dict[object, Callable[[], None]] = {}


@contextlib.contextmanager
def tracked(end: Callable[[], None]):
    """While the block runs, end_all() may call `end` (which stops the command)."""
    key = object()
    with _lock:
        _live[key] = end
    try:
        yield
    finally:
        with _lock:
            _live.pop(key, None)


def end_all() -> int:
    """End every tracked command; how many there were."""
    with _lock:
        ends = list(_live.values())
    for end in ends:
        with contextlib.suppress(OSError):      # it ended by itself meanwhile
            end()
    return len(ends)
