"""One ISO to many nodes at once: UFTP's `uftp` sends the file once on the management VLAN
and a `uftpd` started on each node for this transfer receives it, all at the same time.

Each receiver gets a client ID made from its management address, and the sender names
exactly those IDs (a closed group): another machine cannot join the session, and the
sender's status file says which of them received the whole file. uftpd writes only into
ROOT/.incoming; nothing it receives is trusted: the file reaches its final name only after
its sha256, computed on the node, matches serve's (installer.master.isodist).

    results = send(iso_path, "debian.iso", shells, source="10.0.0.1", workdir=tmp)
    results["node2"]    # None: received whole; else why not (the caller falls back)
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from installer.master.isos import NodePaths
from installer.master.join import running
from installer.master.nodeshell import Shell

PORT = 1044                 # uftpd's port on the nodes (UDP)
SOURCE_PORT = 1045          # the sender's (UDP): the nodes' answers come back to it
RATE_MBPS = 900             # a gigabit LAN with room for the answers
READY_TIMEOUT = 60          # seconds for every receiver to start (ssh login, slow nodes)
READY_LINE = "Loaded"       # uftpd's start-up line once its sockets and key are set up
SETTLE = 0.2                # and a moment more before the first announce
RECEIVER_LIMIT = 6 * 3600   # a receiver left behind ends on the node by itself


@dataclass(frozen=True)
class Options:
    source: str                     # the serving host's address on the management VLAN
    port: int = PORT
    source_port: int = SOURCE_PORT
    rate_mbps: int = RATE_MBPS      # 0: as fast as the interface goes
    timeout: float = 3600
    # Before uftp's argv: () on the serving host; the tests run it in a namespace.
    prefix: tuple[str, ...] = ()


def client_id(address: str) -> str:
    """uftpd's own default ID: its IPv4 address as 8 hex digits."""
    return f"0x{int(ipaddress.IPv4Address(address)):08x}"


def source_for(address: str) -> str:
    """The serving host's address on the way to `address` (the kernel's route): multicast
    leaves by that interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((address, PORT))      # UDP: no packet is sent
        return s.getsockname()[0]


def receiver_argv(shell: Shell, name: str, opts: Options) -> list[str]:
    paths = NodePaths(shell.root, name)
    return ["timeout", str(RECEIVER_LIMIT), "uftpd", "-d", "-q", "-x", "2",
            "-U", client_id(shell.address), "-I", shell.address, "-p", str(opts.port),
            "-D", paths.incoming]


def sender_argv(path: str, name: str, ids: Sequence[str], status: str,
                opts: Options) -> list[str]:
    rate = str(opts.rate_mbps * 1000) if opts.rate_mbps > 0 else "-1"
    return [*opts.prefix, "uftp", "-Y", "none", "-x", "1", "-I", opts.source, "-p", str(opts.port),
            "-u", str(opts.source_port), "-R", rate, "-H", ",".join(ids), "-S", status,
            "-D", name, path]


def send(path: str, name: str, shells: Sequence[Shell], opts: Options,
         workdir: str) -> dict[str, str | None]:
    """Send `path` as ROOT/.incoming/NAME to every shell's node at once: per node None when
    it received the whole file, else the reason it did not."""
    ids = {client_id(s.address): s for s in shells}
    logs = {s.node: os.path.join(workdir, f"uftpd-{s.node}.log") for s in shells}
    receivers: dict[str, subprocess.Popen] = {}
    ended: dict[str, int | None] = {}       # how a receiver ended before we ended it
    sender = ""
    results: dict[str, str] = {}
    try:
        for shell in shells:
            with open(logs[shell.node], "wb") as log:
                receivers[shell.node] = shell.spawn(receiver_argv(shell, name, opts), log)
        _wait_ready(receivers, logs)
        status = os.path.join(workdir, "uftp.status")
        sender = _run_sender(sender_argv(path, name, list(ids), status, opts), workdir,
                             opts.timeout)
        results = parse_status(status, ids)
    finally:
        for node, proc in receivers.items():
            ended[node] = proc.poll()
            _end(proc)
    return {s.node: _why(results.get(s.node), ended.get(s.node), logs[s.node], sender)
            for s in shells}


def _wait_ready(receivers: dict[str, subprocess.Popen], logs: dict[str, str]) -> None:
    """Until each receiver says it listens (or ended): uftp announces for a few seconds
    only, and an SSH login to a busy node may take longer than that."""
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = set(receivers)
    while waiting and time.monotonic() < deadline:
        waiting = {n for n in waiting if receivers[n].poll() is None and
                   READY_LINE not in _read(logs[n])}
        time.sleep(0.05)
    time.sleep(SETTLE)


def _run_sender(argv: list[str], workdir: str, timeout: float) -> str:
    """uftp's output (its last lines explain a failure)."""
    log = os.path.join(workdir, "uftp.log")
    with open(log, "wb") as out, subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, cwd=workdir) \
            as proc, running.tracked(proc.terminate):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with open(log, encoding="utf-8", errors="replace") as f:
        return f.read()


def parse_status(path: str, ids: dict[str, Shell]) -> dict[str, str]:
    """node name -> its RESULT status ("copy" when the file arrived whole)."""
    found: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        fields = line.split(";")
        if fields[0] == "RESULT" and len(fields) >= 5 and fields[1].lower() in ids:
            found[ids[fields[1].lower()].node] = fields[4]
        elif fields[0] == "CONNECT" and len(fields) >= 3 and fields[1] == "failed" \
                and fields[2].lower() in ids:
            found.setdefault(ids[fields[2].lower()].node, "never answered")
    return found


def _why(result: str | None, ended: int | None, log: str, sender: str) -> str | None:
    if result == "copy":
        return None
    lines = [line for line in _read(log).splitlines() if line.strip()]
    if ended is not None:
        last = lines[-1].strip() if lines else "no message"
        return f"its receiver (uftpd) ended early with status {ended}: {last}"
    if result is None:
        tail = [line for line in sender.splitlines() if line.strip()][-1:]
        return f"uftp gave no result for it ({tail[0].strip() if tail else 'no output'})"
    return f"uftp: {result} (the receiver did not get the whole file)"


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
