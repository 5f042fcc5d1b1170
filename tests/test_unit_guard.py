"""The guard of tests/conftest.py: a unit test cannot start a program; a marked one can."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from .vm.background import THREAD_PREFIX


@pytest.mark.parametrize("start", [
    lambda: subprocess.run(["true"]),
    lambda: subprocess.check_output([sys.executable, "-c", "pass"]),
    lambda: os.system("true"),
    lambda: asyncio.run(asyncio.create_subprocess_exec("true")),
    # A path that does not exist: were the guard gone, this fails instead of replacing pytest.
    lambda: os.execv("/nonexistent/gi-guard-probe", ["gi-guard-probe"]),
], ids=["subprocess.run", "check_output", "os.system", "asyncio", "os.execv"])
def test_a_unit_test_that_starts_a_program_fails_saying_how_to_opt_in(start):
    with pytest.raises(AssertionError, match=r"test_unit_guard.py::.* started a real program "
                                             r"through .*mark the test @pytest.mark.integration"):
        start()


@pytest.mark.integration
def test_an_integration_test_runs_real_programs():
    assert subprocess.run(["true"]).returncode == 0


@pytest.mark.allow_subprocess
def test_a_unit_test_may_opt_in():
    out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
    assert out.stdout == "42\n"


def test_a_background_install_beside_a_unit_test_still_runs_its_tools():
    """The debootstrap install runs in a thread of its own for the whole session: a unit test
    running meanwhile must not have its guard refuse the install's programs."""
    results: dict[str, object] = {}

    def run(key: str) -> None:
        try:
            results[key] = subprocess.run(["true"]).returncode
        except AssertionError as e:
            results[key] = e
    for key, name in (("background", THREAD_PREFIX + "an install"), ("other", "a test's")):
        thread = threading.Thread(target=run, args=(key,), name=name)
        thread.start()
        thread.join()
    assert results["background"] == 0
    assert isinstance(results["other"], AssertionError), "another thread of the test ran it"
