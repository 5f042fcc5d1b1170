"""The agent's image write with the real zstd and dd, against an HTTP server on loopback.

The whole write onto a VM's root partition, then tune2fs and resize2fs, is in
test_install_vm; here the stream itself and its refusals."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import threading

import pytest

from installer.agent import imagefetch, osinstall, retry
from installer.agent.proc import Runner

# The payload is packed by the real zstd, and written by the real zstd and dd.
pytestmark = pytest.mark.integration

NO_WAIT = retry.Waiter(0, log=lambda line: None)     # refusals fail at once here


@pytest.fixture
def served(tmp_path):
    """(base URL, payload): a 3 MiB payload as image.zst with its .sha256 beside it."""
    root = tmp_path / "www"
    root.mkdir()
    payload = os.urandom(1 << 20) + bytes(2 << 20)
    packed = subprocess.run(["zstd", "-q", "-c"], input=payload, capture_output=True,
                            check=True).stdout
    (root / "image.zst").write_bytes(packed)
    (root / "image.zst.sha256").write_text(f"{hashlib.sha256(packed).hexdigest()}  image.zst\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", payload, root
    finally:
        server.shutdown()


def image(base: str) -> dict:
    return {"url": f"{base}/image.zst", "checksum_url": f"{base}/image.zst.sha256",
            "format": "ext4.zst"}


def test_the_image_lands_byte_for_byte(served, tmp_path):
    base, payload, root = served
    device = tmp_path / "device"
    device.write_bytes(b"\xff" * (4 << 20))      # a partition larger than the image
    digest = imagefetch.ImageFetch(f"{base}/image.zst", str(device)).run()
    assert digest == hashlib.sha256((root / "image.zst").read_bytes()).hexdigest()
    assert device.read_bytes()[:len(payload)] == payload


def test_a_corrupt_image_is_refused_naming_both_checksums(served, tmp_path):
    base, _, root = served
    (root / "image.zst.sha256").write_text("0" * 64 + "  image.zst\n")
    device = tmp_path / "device"
    device.write_bytes(bytes(4 << 20))
    with pytest.raises(osinstall.InstallError, match="is corrupt: sha256 [0-9a-f]{64}, the "
                                                     "server says 0{64}"):
        osinstall.write_rootfs(image(base), str(device), Runner(), NO_WAIT)


def test_a_missing_image_is_an_error_naming_the_url(served, tmp_path):
    """A 404 is the master's "no": re-asked slowly until the wait limit (0 here), then said."""
    base, _, root = served
    (root / "image.zst").unlink()
    with pytest.raises(osinstall.InstallError, match=f"cannot fetch the OS image "
                                                     f"{base}/image.zst: gave up waiting for "
                                                     f"the master after 0s .*HTTP 404"):
        osinstall.write_rootfs(image(base), str(tmp_path / "device"), Runner(), NO_WAIT)


def test_a_device_too_small_is_an_error_from_dd(served, tmp_path):
    base, _, _ = served
    small = tmp_path / "small"
    subprocess.run(["truncate", "-s", "1M", str(small)], check=True)
    loop = subprocess.run(["losetup", "--find", "--show", str(small)], capture_output=True,
                          text=True)
    if loop.returncode != 0:
        pytest.skip("no loop device")
    try:
        with pytest.raises(osinstall.InstallError, match=r"failed in dd .*No space left"):
            imagefetch.ImageFetch(f"{base}/image.zst", loop.stdout.strip()).run()
    finally:
        subprocess.run(["losetup", "--detach", loop.stdout.strip()])


def test_debootstrap_waits_for_its_package_cache_to_come_up(tmp_path):
    """The proxy (a package cache on the master) is down when the OS stage begins and comes
    up two seconds later: the agent waits for the release's Release file through it."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    asked = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            asked.append(self.path)
            self.send_response(200 if self.path.endswith("/dists/bookworm/Release") else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    def proxy_up_later():
        time.sleep(2)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy)
        servers.append(server)
        server.serve_forever()

    servers: list = []
    threading.Thread(target=proxy_up_later, daemon=True).start()
    lines: list[str] = []
    spec = {"mirror": "http://mirror.test/debian/", "suite": "bookworm"}
    try:
        osinstall.wait_for_mirror(spec, f"http://127.0.0.1:{port}",
                                  retry.Waiter(60, log=lines.append))
    finally:
        for server in servers:
            server.shutdown()
    assert asked == ["http://mirror.test/debian/dists/bookworm/Release"]
    assert lines[0].startswith("waiting for the master since ")
    assert f"the package mirror through http://127.0.0.1:{port}: connection refused" in lines[0]
    assert lines[-1].startswith("the master answered after")


def test_apt_in_the_target_retries_a_package_cache_that_went_away(tmp_path):
    osinstall.apt_retries(str(tmp_path), Runner())
    conf = (tmp_path / osinstall.APT_RETRIES).read_text()
    assert 'Acquire::Retries "60";' in conf
    dry = tmp_path / "dry"
    osinstall.apt_retries(str(dry), Runner(dry_run=True))
    assert not dry.exists()
