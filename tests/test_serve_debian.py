"""serve under Debian 12's own Python packages (python3-aiohttp 3.8.4), as the master installed
from an `usb --all` stick runs it: the test suite's venv has a newer aiohttp, whose defaults
hide what 3.8 does not do. A stranger on the LAN gets the same refusals and bounds: no report
without a token, no head of 200 header lines, no half-sent head held open."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from installer.master import limits

from .conftest import REPO, example_path
from .serving import render_outdir

pytestmark = pytest.mark.integration

DEBIAN_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def debian_serve(tmp_path_factory):
    work = tmp_path_factory.mktemp("debian-serve")
    outdir = work / "out"
    render_outdir(str(outdir))
    version = subprocess.run([DEBIAN_PYTHON, "-s", "-c", "import aiohttp; "
                              "print(aiohttp.__version__)"], capture_output=True, text=True)
    assert version.returncode == 0, f"{DEBIAN_PYTHON} has no aiohttp: run ./build.sh " \
        f"--deps-only (python3-aiohttp): {version.stderr}"
    log = work / "serve.log"
    proc = subprocess.Popen([DEBIAN_PYTHON, "-s", "-m", "installer.cli", "serve",
                             example_path("cluster.toml"), str(outdir), "--state",
                             str(work / "state"), "--no-dhcp", "--no-join", "--listen",
                             "127.0.0.1:0"], cwd=REPO, env={"PYTHONPATH": REPO, "PATH":
                                                             "/usr/sbin:/usr/bin:/sbin:/bin"},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"at (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield found.group(1), version.stdout.strip(), outdir
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # A stranger's bad request is a log line, not a traceback.
    assert "Traceback" not in log.read_text() and "Exception in" not in log.read_text(), \
        log.read_text()[-3000:]


def raw(url: str, data: bytes, timeout: float = 30) -> tuple[bytes, float]:
    """What serve answers to DATA on a connection of its own, and how long until it closed."""
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - start


def test_it_is_debian_12s_aiohttp(debian_serve):
    _, version, _ = debian_serve
    assert version.startswith("3.8."), version


def test_a_report_needs_the_nodes_token(debian_serve):
    url, _, _ = debian_serve
    events = f"{url}/api/v1/nodes/node1/events"
    body = {"step": "install", "status": "started", "message": "", "index": 0, "total": 6,
            "time": 1000.0, "final": False}
    none = requests.post(events, json=body, timeout=10)
    assert none.status_code == 401 and "needs a token" in none.json()["error"]
    wrong = requests.post(events, json=body, headers={"Authorization": "Bearer " + "x" * 43},
                          timeout=10)
    assert wrong.status_code == 403 and "wrong token for node1" in wrong.json()["error"]
    plan = requests.get(f"{url}/api/v1/plans/52-54-00-20-02-22", timeout=10)
    assert plan.status_code == 200
    token = plan.json()["report"]["token"]
    ok = requests.post(events, json=body, headers={"Authorization": f"Bearer {token}"},
                       timeout=10)
    assert ok.status_code == 200 and ok.json()["state"] == "installing", ok.text


def test_a_head_of_too_many_lines_is_a_json_400(debian_serve):
    url, _, _ = debian_serve
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"
    answer, _ = raw(url, head)
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400")
    assert f"more than {limits.MAX_HEADERS} header lines" in json.loads(body)["error"]


def test_a_half_sent_head_is_dropped(debian_serve):
    url, _, _ = debian_serve
    answer, took = raw(url, b"GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nX-Slow: ",
                       timeout=limits.HEADER_TIMEOUT + 15)
    assert answer == b"" and took < limits.HEADER_TIMEOUT + 5, (answer, took)


def test_the_node_gets_its_netboot_image_on_a_connection_of_its_own(debian_serve):
    """One request per connection under 3.8: closed once answered, not kept for a head that
    nothing would time."""
    url, _, outdir = debian_serve
    answer, took = raw(url, b"GET /netboot/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == Path(outdir, "netboot/vmlinuz").read_bytes()
    assert took < limits.HEADER_TIMEOUT / 2, took
