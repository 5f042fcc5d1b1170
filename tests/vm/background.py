"""A slow VM install started with the test session and awaited by the tests that check it.

The debootstrap install keeps one core busy with dpkg for most of an hour while the second
sits idle; the other tests use that core meanwhile, so the suite takes nearer the longest job
than the sum of them. The install runs in a thread (its QEMU is a child process); its result,
or its exception, is handed to the fixture that waits for it.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Names the threads of background installs: the unit tests' subprocess guard lets them be.
THREAD_PREFIX = "background: "


class Job:
    def __init__(self, name: str, work: Callable[[], Any], workdir: Path):
        self.name, self.workdir = name, workdir
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,),
                                        name=THREAD_PREFIX + name, daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._result = work()
        except BaseException as e:          # re-raised in the test that waits
            self._error = e

    def result(self, timeout: float) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.name} is still running after {timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        """At the session's end, for a job no test waited for (a run stopped early): kill
        its processes (QEMU, apt-cacher-ng: all name the job's directory) and let it unwind."""
        if self._thread.is_alive():
            subprocess.run(["pkill", "-f", str(self.workdir)], check=False)
            self._thread.join(120)
