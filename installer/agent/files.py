"""Writing files on the node: whole or not at all, and never in a dry run.

A reader (or a power cut) sees a file's old content or its new one, never half of either: the
new content goes to `<path>.gi-new` and is renamed over the path. Every file the install
writes goes through a Writer, so a dry run can list them and touch nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import List, Optional, Union

NEW = ".gi-new"


def write_atomically(path: str, data: Union[str, bytes], mode: Optional[int] = None, *,
                     durable: bool = False) -> None:
    """Replace `path` with `data` in one rename. `mode` is set before the rename, so a secret
    is never readable by others; without one the replaced file's mode is kept (0644 for a new
    file). A symlink at `path` is replaced, not followed (resolv.conf pointing into /run).
    `durable`: the file and its directory entry are on disk when this returns."""
    if mode is None:
        try:    # a symlink's own mode is always 0777: keep the mode of what it points to
            mode = os.stat(path).st_mode & 0o7777
        except OSError:     # no file, or a dangling link
            mode = 0o644
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = path + NEW
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.chmod(tmp, mode)     # after the write: the umask does not apply to chmod
    os.replace(tmp, path)
    if durable:
        # The rename is durable only once its directory is: ext4 commits it up to five
        # seconds later otherwise, and a power cut in that window loses the new file.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Writer:
    """Every file change of the install; in a dry run only the list of paths it would touch."""

    def __init__(self, dry_run: bool = False):
        self.dry_run = dry_run
        self.written: List[str] = []

    def _note(self, path: str) -> bool:
        """Record the path; whether to go on and change it."""
        if path not in self.written:
            self.written.append(path)
        return not self.dry_run

    def write(self, path: str, data: Union[str, bytes], mode: Optional[int] = None, *,
              durable: bool = False) -> None:
        if self._note(path):
            write_atomically(path, data, mode, durable=durable)

    def makedirs(self, path: str, mode: Optional[int] = None) -> None:
        """The directory and its parents; `mode` is set even when it exists already."""
        if self._note(path + "/"):
            os.makedirs(path, exist_ok=True)
            if mode is not None:
                os.chmod(path, mode)

    def replace(self, source: str, path: str) -> None:
        if self._note(path):
            os.replace(source, path)

    def copy(self, source: str, path: str) -> None:
        if self._note(path):
            shutil.copyfile(source, path)

    def copytree(self, source: str, path: str) -> None:
        if self._note(path + "/"):
            shutil.copytree(source, path)

    def remove(self, path: str) -> None:
        if self._note(path):
            os.remove(path)
