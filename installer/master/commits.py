"""Group commit for the reports: one thread writes, and whatever arrived while the last
commit was on its way to disk goes into the next one.

Every acknowledged report is on disk (synchronous=FULL), and an fsync costs 0.2 ms on an
SSD but 10 ms or more on the spinning disk of an old office PC: 40 nodes reporting at once
would wait 40 fsyncs in line. Grouped, they share one or two.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from installer.master.state import State


class GroupCommit:
    def __init__(self, state: State):
        self.state = state
        self._closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="commit", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args) -> Future:
        """fn(*args) in the next group; its writes must use state.transaction()."""
        if self._closed:
            raise RuntimeError("the group commit is closed: serve is stopping")
        future: Future = Future()
        self._queue.put((future, partial(fn, *args)))
        return future

    def close(self) -> None:
        """Run what is queued, then stop."""
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            group, stop = self._next_group()
            calls = [(f, call) for f, call in group if f.set_running_or_notify_cancel()]
            if calls:
                self._commit(calls)
            if stop:
                return

    def _commit(self, calls: list) -> None:
        """Every future gets its outcome, whatever happens: a request waits on each."""
        try:
            outcomes = self.state.together([call for _, call in calls])
        except BaseException as e:  # noqa: BLE001 - this thread must go on
            outcomes = [(False, e)] * len(calls)
        for (future, _), (ok, value) in zip(calls, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _next_group(self) -> tuple[list, bool]:
        """Wait for one call, then take every call queued behind it."""
        item = self._queue.get()
        if item is None:
            return [], True
        group = [item]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return group, False
            if item is None:
                return group, True
            group.append(item)
