"""Two image builds at once wait for each other instead of failing on diskimage-builder's
shared apt cache: the lock is a file, so it holds across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from installer.build import images

pytestmark = pytest.mark.integration

HOLDER = """
import sys, time
from installer.build import images
with images.dib_lock(print):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_a_second_build_waits_for_the_lock_another_process_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("DIB_IMAGE_CACHE", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "2"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    said: list[str] = []
    start = time.monotonic()
    with images.dib_lock(said.append):
        waited = time.monotonic() - start
    holder.wait(timeout=10)
    assert waited >= 1.0, f"took the lock after {waited:.2f} s while another process held it"
    assert said and "waiting for another diskimage-builder build" in said[0]
    assert str(tmp_path / "ganeti-installer.lock") in said[0]


def test_the_lock_is_free_again_when_its_holder_dies(tmp_path, monkeypatch):
    monkeypatch.setenv("DIB_IMAGE_CACHE", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "60"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    got = threading.Event()

    def take() -> None:
        with images.dib_lock(lambda msg: None):
            got.set()
    threading.Thread(target=take, daemon=True).start()
    assert got.wait(10), "the lock of a killed build was never released"
