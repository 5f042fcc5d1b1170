"""The cluster's ISO images: their names, serve's own copy of each, and the commands that put
one in place on a node.

An ISO named NAME lives at ROOT/NAME on every joined node (ROOT is /iso, the paper's
directory; tests give each namespace a directory of its own). It arrives as
ROOT/.incoming/NAME, is checksummed on the node (sha256sum) and only then renamed to
ROOT/NAME in the same file system, so an instance never sees half an ISO: the final name
holds the whole file or nothing.

Every command is an argv list built from a name that matched NAME and a root that matched
ROOT: no shell ever sees a value from the user.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass

from installer.cluster.errors import InstallerError

ROOT = "/iso"
INCOMING = ".incoming"
# A file name any tool takes as is: no slash, no leading dot or dash, no space or shell
# character, at most 128 characters.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
ROOT_PATH = re.compile(r"(/[A-Za-z0-9._+-]+)+")
STORE = "isos"          # serve's copies, in its state directory
CHUNK = 1 << 20


class IsoError(InstallerError):
    """A refusal or failure that names the file (and the node) and the fix."""


def check_name(name: str, source: str = "") -> str:
    if not NAME.fullmatch(name) or name.endswith((".part", ".tmp")):
        where = f" (from {source})" if source else ""
        raise IsoError(f"'{name}'{where} is not a valid ISO name: use letters, digits and "
                       ". _ + - only, starting with a letter or digit, at most 128 "
                       "characters (rename the file)")
    return name


def check_root(root: str) -> str:
    if not ROOT_PATH.fullmatch(root) or "/../" in root + "/" or "/./" in root + "/":
        raise IsoError(f"'{root}' is not a valid ISO directory: an absolute path of "
                       "letters, digits and . _ + - (the default is /iso)")
    return root


@dataclass(frozen=True)
class Iso:
    name: str
    sha256: str
    size: int
    path: str           # serve's copy, under the state directory


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def readable(path: str) -> int:
    """The file's size, or IsoError saying why it cannot be sent."""
    if not os.path.isabs(path):
        raise IsoError(f"{path}: give the ISO's absolute path (serve reads it, from its "
                       "own working directory)")
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                raise IsoError(f"{path} is not a regular file: name an ISO image file")
            f.read(1)
            return os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise IsoError(f"{path} does not exist: check the path") from None
    except IsADirectoryError:
        raise IsoError(f"{path} is a directory: name an ISO image file") from None
    except PermissionError:
        raise IsoError(f"{path} is not readable by serve (root): fix its permissions") \
            from None
    except OSError as e:
        raise IsoError(f"{path} cannot be read: {e.strerror}") from None


def keep(state_dir: str, source: str, name: str, sha256: str) -> Iso:
    """serve's own copy of the ISO (a hard link when the file system allows, else a copy,
    written aside and renamed): later joins send it even if the original goes."""
    store = os.path.join(state_dir, STORE)
    os.makedirs(store, mode=0o700, exist_ok=True)
    final, part = os.path.join(store, name), os.path.join(store, f".{name}.part")
    if os.path.exists(part):
        os.unlink(part)
    try:
        os.link(source, part)
    except OSError:
        try:
            shutil.copyfile(source, part)
        except OSError as e:
            if os.path.exists(part):
                os.unlink(part)
            raise IsoError(f"cannot keep a copy of {source} in {store}: {e.strerror}; free "
                           "space there (serve's --state directory)") from None
    if sha256_of(part) != sha256:
        os.unlink(part)
        raise IsoError(f"{source} changed while it was read: add it again once it is "
                       "complete")
    os.replace(part, final)
    return Iso(name, sha256, os.path.getsize(final), final)


def forget(state_dir: str, name: str) -> None:
    path = os.path.join(state_dir, STORE, check_name(name))
    if os.path.exists(path):
        os.unlink(path)


# -- the commands on a node -------------------------------------------------------------------

@dataclass(frozen=True)
class NodePaths:
    """Where an ISO goes on one node, and the argv of each step there."""
    root: str
    name: str

    def __post_init__(self):
        check_root(self.root)
        check_name(self.name)

    @property
    def incoming(self) -> str:
        return f"{self.root}/{INCOMING}"

    @property
    def temp(self) -> str:
        return f"{self.incoming}/{self.name}"

    @property
    def final(self) -> str:
        return f"{self.root}/{self.name}"

    def prepare(self) -> list[str]:
        """The incoming directory, with no old half of this ISO in it."""
        return ["sh", "-c", 'mkdir -p -- "$1" && rm -f -- "$2"', "prepare", self.incoming,
                self.temp]

    def present(self) -> list[str]:
        """The final name's sha256sum line, or nothing when there is none."""
        return ["sh", "-c", 'if [ -e "$1" ]; then sha256sum -- "$1"; fi', "present",
                self.final]

    def free(self) -> list[str]:
        return ["df", "-B1", "--output=avail", self.incoming]

    def checksum(self, final: bool = False) -> list[str]:
        return ["sha256sum", "--", self.final if final else self.temp]

    def receive(self) -> list[str]:
        """The SSH copy's far end: stdin to the temporary, on disk before it returns."""
        return ["dd", f"of={self.temp}", "bs=4M", "conv=fsync", "status=none"]

    def commit(self) -> list[str]:
        """On disk, then renamed over the final name in one step."""
        return ["sh", "-c", 'sync -- "$1" && mv -f -T -- "$1" "$2"', "commit", self.temp,
                self.final]

    def abort(self) -> list[str]:
        return ["rm", "-f", "--", self.temp]

    def remove(self) -> list[str]:
        return ["rm", "-f", "--", self.final, self.temp]


def parse_free(stdout: str) -> int | None:
    """df --output=avail's number (bytes), or None."""
    lines = stdout.split()
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


def parse_sha(stdout: str) -> str | None:
    word = stdout.split()[:1]
    return word[0] if word and re.fullmatch(r"[0-9a-f]{64}", word[0]) else None
