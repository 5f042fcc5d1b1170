"""Put one ISO on a set of nodes: check each node first, send to all at once (multicast),
then on each node checksum, and rename only a whole file into place. A node the multicast
missed (or whose copy came out wrong) gets a plain copy over SSH instead, on its own: the
automatic fallback. A node that fails both keeps no temporary and never a partial file at
the final name.

    results = distribute(iso, shells, multicast=multicast.Options(source), workdir=tmp,
                         record=lambda node, state, message: ...)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from installer.master import multicast
from installer.master.isos import Iso, IsoError, NodePaths, parse_free, parse_sha
from installer.master.join.errors import JoinError
from installer.master.nodeshell import Shell

SENDING, PRESENT, FAILED = "sending", "present", "failed"
Record = Callable[[str, str, str], None]        # (node, state, message)


@dataclass(frozen=True)
class Result:
    node: str
    ok: bool
    message: str


def distribute(iso: Iso, shells: Sequence[Shell], *, multicast_opts: multicast.Options | None,
               workdir: str, record: Record,
               stopping: threading.Event | None = None) -> list[Result]:
    """Every shell's node ends with ISO at ROOT/NAME (ok) or without it and without a
    temporary (not ok, with the reason and the fix). Once `stopping` is set (serve stops),
    no fallback copy starts."""
    stopping = stopping or threading.Event()
    results: dict[str, Result] = {}
    ready: list[Shell] = []
    for shell, outcome in zip(shells, _parallel(lambda s: _prepare(s, iso), shells),
                              strict=True):
        if isinstance(outcome, Exception):
            results[shell.node] = _failed(record, shell, iso, str(outcome))
        elif outcome:
            ready.append(shell)
        else:
            results[shell.node] = _done(record, shell, iso, "was there already")
    if ready:
        for shell in ready:
            record(shell.node, SENDING, "multicast" if multicast_opts else "SSH copy")
        missed = _multicast(iso, ready, multicast_opts, workdir)
        finish = lambda s: _finish(s, iso, missed[s.node], record, stopping)  # noqa: E731
        for shell, result in zip(ready, _parallel(finish, ready), strict=True):
            results[shell.node] = result if isinstance(result, Result) else \
                _failed(record, shell, iso, f"{type(result).__name__}: {result}")
    return [results[s.node] for s in shells]


def _parallel(fn, shells: Sequence[Shell]) -> list:
    """fn(shell) for every shell at once (each mostly waits on its node): result or error."""
    def guarded(shell):
        try:
            return fn(shell)
        except (IsoError, JoinError) as e:
            return IsoError(str(e))
        except Exception as e:      # noqa: BLE001 - one node's bug is that node's failure
            return e
    if not shells:
        return []
    with ThreadPoolExecutor(min(16, len(shells)), thread_name_prefix="iso") as pool:
        return list(pool.map(guarded, shells))


def _prepare(shell: Shell, iso: Iso) -> bool:
    """The node can take the ISO (True), or has it already (False); IsoError otherwise."""
    paths = NodePaths(shell.root, iso.name)
    shell.run(paths.prepare(), what=f"mkdir -p {paths.incoming}")
    there = parse_sha(shell.run(paths.present(), timeout=1800).stdout)
    if there == iso.sha256:
        return False
    if there is not None:
        raise IsoError(f"{shell.node} has {paths.final} with other bytes (sha256 "
                       f"{there[:16]}…, the cluster's {iso.name} is {iso.sha256[:16]}…): "
                       f"remove it there or add your file under another name")
    free = parse_free(shell.run(paths.free()).stdout)
    if free is not None and free < iso.size:
        raise IsoError(f"{shell.node}: {shell.root} has {_size(free)} free, {iso.name} needs "
                       f"{_size(iso.size)}: free space in {shell.root} on {shell.node} "
                       "(`ganeti-installer iso remove NAME` removes an ISO everywhere)")
    return True


def _multicast(iso: Iso, shells: list[Shell], opts: multicast.Options | None,
               workdir: str) -> dict[str, str | None]:
    """Per node None (received whole) or why it needs the SSH copy."""
    if opts is None:
        return {s.node: "--copy" for s in shells}
    try:
        return multicast.send(iso.path, iso.name, shells, opts, workdir)
    except OSError as e:            # no uftp on the serving host, a bad address
        return {s.node: f"uftp could not run: {e}" for s in shells}


def _finish(shell: Shell, iso: Iso, missed: str | None, record: Record,
            stopping: threading.Event) -> Result:
    """Checksum and rename what the multicast brought, or copy over SSH and do the same."""
    paths = NodePaths(shell.root, iso.name)
    if missed is None:
        try:
            _check_and_commit(shell, iso, paths)
            return _done(record, shell, iso, "by multicast")
        except (IsoError, JoinError) as e:
            missed = str(e)
    if stopping.is_set():
        _abort(shell, paths)
        return _failed(record, shell, iso, f"serve stopped during the transfer ({missed}): "
                       "the next iso add of the file completes it")
    try:
        _copy(shell, iso, paths)
        _check_and_commit(shell, iso, paths)
    except (IsoError, JoinError) as e:
        _abort(shell, paths)
        head = "" if missed == "--copy" else \
            f"multicast missed it ({missed}), and the SSH copy fallback failed too: "
        return _failed(record, shell, iso, head + str(e))
    how = "by SSH copy" if missed == "--copy" else \
        f"by SSH copy: the fallback, as multicast missed it ({missed})"
    return _done(record, shell, iso, how)


def _copy(shell: Shell, iso: Iso, paths: NodePaths) -> None:
    """One plain copy over the node's shell, as gnt-cluster copyfile would."""
    shell.run(paths.prepare(), what=f"mkdir -p {paths.incoming}")
    with open(iso.path, "rb") as f:
        shell.run(paths.receive(), stdin=f, timeout=_seconds(iso.size),
                  what=f"writing {paths.temp}")


def _check_and_commit(shell: Shell, iso: Iso, paths: NodePaths) -> None:
    got = parse_sha(shell.run(paths.checksum(), timeout=_seconds(iso.size)).stdout)
    if got != iso.sha256:
        _abort(shell, paths)
        raise IsoError(f"{shell.node}: {paths.temp} has sha256 {got or 'none'}, not "
                       f"{iso.sha256}: the copy came out wrong")
    shell.run(paths.commit(), timeout=_seconds(iso.size), what=f"mv to {paths.final}")


def _abort(shell: Shell, paths: NodePaths) -> None:
    """Remove the temporary; a node that cannot be reached keeps it where no instance
    looks (ROOT/.incoming), and the next add of the ISO removes it first."""
    try:
        shell.run(paths.abort(), timeout=60)
    except (IsoError, JoinError):
        pass


def _done(record: Record, shell: Shell, iso: Iso, how: str) -> Result:
    message = f"{NodePaths(shell.root, iso.name).final} {how}"
    record(shell.node, PRESENT, message)
    return Result(shell.node, True, message)


def _failed(record: Record, shell: Shell, iso: Iso, why: str) -> Result:
    message = f"{iso.name} to {shell.node}: {why}"
    record(shell.node, FAILED, message)
    return Result(shell.node, False, message)


def _seconds(size: int) -> float:
    """Time allowed for a pass over the file: at least 10 MB/s, and a minute."""
    return 60 + size / 10e6


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def workdir_for(state_dir: str) -> str:
    path = os.path.join(state_dir, "isos", ".work")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path
