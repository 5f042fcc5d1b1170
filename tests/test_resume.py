"""The OS image write resumes after the master cuts its stream (installer/agent/imagefetch.py).

A real HTTP server on loopback serves the image with ranges and an ETag, and closes the
connection after a given number of bytes, as a master killed mid-write would; the agent's
real zstd and dd write it to a file standing in for the root partition."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from installer.agent import imagefetch, retry

# The real zstd and dd write the image (and the master's own route needs its ssh-keygen).
pytestmark = pytest.mark.integration

CUT_1, CUT_2 = 1_300_000, 2_900_000     # bytes into the compressed image


def packed(payload: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=payload, capture_output=True,
                          check=True).stdout


class CuttingServer:
    """Serves one image at /image.zst with Range and ETag; `cuts` are offsets at which the
    connection is closed mid-body, each once; `swap` replaces the image after the first cut
    (a new build on the master); `ranges=False` ignores Range (a plain server); `dies`: the
    server stops listening at the cut (the master was killed)."""

    def __init__(self, image: bytes, cuts=(), swap: bytes | None = None, ranges=True,
                 port: int = 0, dies=False):
        self.image, self.etag = image, '"v1"'
        self.cuts, self.swap, self.ranges, self.dies = sorted(cuts), swap, ranges, dies
        self.sent = 0                           # body bytes written to sockets
        self.requests: list[str | None] = []    # the Range header of each GET
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/image.zst"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        if not self.dies:
            self.server.shutdown()
            self.server.server_close()

    def _handler(self):
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                wanted = self.headers.get("Range")
                srv.requests.append(wanted)
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
                if match and srv.ranges:
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(srv.image) - 1}/{len(srv.image)}")
                else:
                    self.send_response(200)
                self.send_header("ETag", srv.etag)
                self.send_header("Content-Length", str(len(srv.image) - start))
                self.end_headers()
                stop = next((c for c in srv.cuts if c > start), len(srv.image))
                for at in range(start, stop, 65536):
                    piece = srv.image[at:min(at + 65536, stop)]
                    self.wfile.write(piece)
                    srv.sent += len(piece)
                if stop < len(srv.image):       # the master goes away mid-body
                    srv.cuts.remove(stop)
                    if srv.swap is not None:
                        srv.image, srv.etag, srv.swap = srv.swap, '"v2"', None
                    self.wfile.flush()
                    if srv.dies:
                        srv.server.shutdown()
                        srv.server.server_close()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def payload():
    """3 MiB that zstd cannot shrink, then 1 MiB it can: cuts land mid-frame."""
    return os.urandom(3 << 20) + bytes(1 << 20)


def fetch(url: str, device, lines: list) -> imagefetch.ImageFetch:
    waiter = retry.Waiter(60, log=lines.append, sleep=lambda s: time.sleep(0.05))
    return imagefetch.ImageFetch(url, str(device), log=lines.append, waiter=waiter)


class Counted(imagefetch.Pipeline):
    started = 0

    def __init__(self, device):
        Counted.started += 1
        super().__init__(device)


@pytest.fixture
def pipelines(monkeypatch):
    Counted.started = 0
    monkeypatch.setattr(imagefetch, "Pipeline", Counted)
    return Counted


@pytest.mark.parametrize("cuts", [[CUT_1], [CUT_1, CUT_2]], ids=["once", "twice"])
def test_a_cut_stream_resumes_where_it_stopped_and_is_fetched_once(payload, tmp_path, cuts,
                                                                   pipelines):
    image = packed(payload)
    device = tmp_path / "root"
    lines: list[str] = []
    with CuttingServer(image, cuts) as server:
        got = fetch(server.url, device, lines)
        digest = got.run()
    assert device.read_bytes() == payload
    assert digest == hashlib.sha256(image).hexdigest()
    # Each resume asks for exactly the bytes after the cut; nothing is fetched twice.
    assert server.requests == [None] + [f"bytes={c}-" for c in cuts]
    assert got.fetched == len(image) and server.sent == len(image)
    assert pipelines.started == 1, "zstd and dd were started again"
    assert [line for line in lines if line.startswith("os image: resuming")] == [
        f"os image: resuming at byte {c} of {len(image)}" for c in cuts]
    assert got.summary() == (f"os image: fetched {len(image)} bytes for an image of "
                             f"{len(image)} bytes ({len(cuts)} resumed, 0 restarted)")


def test_an_image_changed_on_the_master_is_written_again_from_byte_0(payload, tmp_path,
                                                                      pipelines):
    first, second = packed(payload), packed(payload[::-1])
    device = tmp_path / "root"
    lines: list[str] = []
    with CuttingServer(first, [CUT_1], swap=second) as server:
        got = fetch(server.url, device, lines)
        digest = got.run()
    assert device.read_bytes() == payload[::-1]
    assert digest == hashlib.sha256(second).hexdigest()
    assert server.requests == [None, f"bytes={CUT_1}-", None]
    assert 'os image: starting the write over from byte 0: the image changed on the master ' \
           '(ETag or Last-Modified "v2", was "v1")' in lines
    assert got.fetched == CUT_1 + len(second) and got.restarts == 1
    assert pipelines.started == 2


def test_a_server_that_cannot_resume_gets_the_whole_image_again(payload, tmp_path):
    image = packed(payload)
    device = tmp_path / "root"
    lines: list[str] = []
    with CuttingServer(image, [CUT_1], ranges=False) as server:
        digest = fetch(server.url, device, lines).run()
    assert device.read_bytes() == payload and digest == hashlib.sha256(image).hexdigest()
    assert "os image: starting the write over from byte 0: the server sent the whole image " \
           "again (it does not resume)" in lines


def test_a_master_down_for_a_while_is_waited_for_and_the_write_resumes(payload, tmp_path):
    """The master dies at the cut and comes back on the same port two seconds later."""
    image = packed(payload)
    device = tmp_path / "root"
    lines: list[str] = []
    with CuttingServer(image, [CUT_1], dies=True) as first:
        result = {}
        writer = threading.Thread(target=lambda: result.update(
            digest=fetch(first.url, device, lines).run()))
        deadline = time.monotonic() + 30
        writer.start()
        while first.cuts:                           # until the master has died
            assert time.monotonic() < deadline
            time.sleep(0.01)
    time.sleep(2)                                   # nothing listens on the port meanwhile
    with CuttingServer(image, port=first.port) as second:
        writer.join(60)
    assert result["digest"] == hashlib.sha256(image).hexdigest()
    assert device.read_bytes() == payload
    assert second.requests[-1] == f"bytes={CUT_1}-"
    assert any(re.fullmatch(r"waiting for the master since \S+ UTC \(\ds\): the OS image: "
                            r"connection refused; next try in \d s", line) for line in lines)
    assert any(re.fullmatch(r"the master answered after \ds: the OS image", line)
               for line in lines)


class CuttingProxy:
    """A TCP relay to `upstream` that closes the first connection after `cut` bytes of the
    answer (headers included): the master's own file route, cut as a reboot would cut it."""

    def __init__(self, upstream: tuple[str, int], cut: int):
        self.upstream, self.cut = upstream, cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        first = True
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client, first), daemon=True).start()
            first = False

    def _relay(self, client: socket.socket, cut: bool):
        server = socket.create_connection(self.upstream)
        server.sendall(client.recv(65536))       # one GET, small enough for one read
        left = self.cut if cut else None
        while left is None or left > 0:
            data = server.recv(65536 if left is None else min(65536, left))
            if not data:
                break
            client.sendall(data)
            if left is not None:
                left -= len(data)
        client.shutdown(socket.SHUT_RDWR)
        client.close()
        server.close()

    def close(self):
        self.listener.close()


def test_the_masters_file_route_resumes_the_image_with_its_etag(payload, tmp_path):
    from tests.serving import Server, render_outdir

    out = tmp_path / "out"
    cluster = render_outdir(str(out))
    image = packed(payload)
    (out / "images/bookworm.ext4.zst").write_bytes(image)
    device = tmp_path / "root"
    lines: list[str] = []
    with Server(cluster, str(out), str(tmp_path / "state")) as master:
        port = int(master.url.rsplit(":", 1)[1])
        proxy = CuttingProxy(("127.0.0.1", port), CUT_1)
        try:
            got = fetch(f"{proxy.url}/images/bookworm.ext4.zst", device, lines)
            digest = got.run()
        finally:
            proxy.close()
    assert device.read_bytes() == payload and digest == hashlib.sha256(image).hexdigest()
    assert got.resumes == 1 and got.restarts == 0, lines
    assert got.fetched == len(image)
