"""Reading a file that may be absent, and writing a file whole or not at all, for the build
host and the master (the agent has its
own, installer.agent.files, since it ships alone).

The new content goes to a temporary file beside the target, is fsynced, given its mode and
renamed over the target: a reader (dnsmasq serving a PXE entry, ssh reading known_hosts) sees
the old file or the new one, never half of either, and a crash leaves no stray temporary.
"""
from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data`, durably, with `mode` whatever the umask."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                               dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None when there is no such file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
