"""A caching proxy for debootstrap installs in VM tests: apt-cacher-ng on the host's loopback.

Our own instance, with its own configuration directory, port and run files: the Debian
package's daemon (port 3142) is left alone. Its `backends_debian` names the mirror of this
host's own apt sources, since the package's default backend cannot be reached from a machine
that only sees its registry. The cache lives beside the image cache, so a second run fetches
nothing from the mirror. Guests on QEMU's user network reach it at 10.0.2.2:<port>.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from installer.build.images import cache_dir
from installer.cluster.mirror import host_mirror

DAEMON = "/usr/sbin/apt-cacher-ng"
SUPPORT = "/usr/lib/apt-cacher-ng"


def _free_port() -> int:
    """A free port below 32768: apt-cacher-ng 3.7 fails to bind above it ("Error resolving
    address for binding"), and the kernel's ephemeral ports are all above it."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000 for apt-cacher-ng")


def _config(confdir: Path, mirror: str) -> None:
    confdir.mkdir(parents=True, exist_ok=True)
    (confdir / "backends_debian").write_text(mirror.rstrip("/") + "/\n")
    # The package's remapping of Debian mirror names onto backends_debian, and nothing else.
    (confdir / "acng.conf").write_text(
        f"SupportDir: {SUPPORT}\n"
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n"
        "ExThreshold: 4\n")


@contextlib.contextmanager
def apt_cacher(workdir: Path):
    """Run apt-cacher-ng on 127.0.0.1; yields (port, transfer log path)."""
    mirror = host_mirror().debian
    if not mirror:
        raise RuntimeError("this host's apt sources name no Debian mirror for the proxy")
    confdir, rundir, logdir = workdir / "acng-conf", workdir / "acng-run", workdir / "acng-log"
    for d in (rundir, logdir):
        d.mkdir(parents=True, exist_ok=True)
    cache = cache_dir() / "apt-cacher-ng"
    cache.mkdir(parents=True, exist_ok=True)
    _config(confdir, mirror)
    port = _free_port()
    proc = subprocess.Popen(
        [DAEMON, "-c", str(confdir), "ForeGround=1", f"Port={port}", "BindAddress=127.0.0.1",
         f"CacheDir={cache}", f"LogDir={logdir}", f"PidFile={rundir / 'pid'}",
         f"SocketPath={rundir / 'socket'}"],
        stdout=open(logdir / "daemon.out", "w"), stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc)
        yield port, logdir / "apt-cacher.log"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(rundir, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"apt-cacher-ng exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"apt-cacher-ng is not listening on 127.0.0.1:{port}")
