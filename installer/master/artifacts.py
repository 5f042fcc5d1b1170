"""The built artifacts over HTTP: what under OUTDIR may be served, as what, with which checksum.

Only the trees a booting node needs are served (netboot/, images/, tftp/, agent/ and
manifest.json). plans/ holds each node's token-less plan and root password hash, nodes/ the
same files one by one: a node gets its plan from /api/v1/plans/<mac> only. No request can
reach a file outside those trees: `..`, dot files and absolute paths are refused, and a
symbolic link counts by where it points.
"""

from __future__ import annotations

import json
import os

from installer.cluster import layout

SERVED = layout.SERVED
TEXT = "text/plain; charset=utf-8"
TYPES = {".json": "application/json", ".zst": "application/zstd", ".gz": "application/gzip",
         ".ipxe": TEXT, ".cfg": TEXT, ".sha256": TEXT, ".service": TEXT, ".txt": TEXT}
# Loader configurations without an extension (pxelinux.cfg/01-<mac>, grub.cfg-01-<mac>).
TEXT_DIRS = ("tftp/pxelinux.cfg/", "tftp/grub/")
TEXT_NAMES = ("VERSIONS", "ganeti-installer-firstboot")


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def resolve(outdir: str, rel: str) -> str:
    """The real path of OUTDIR/REL if it may be served; Refused(400/403/404) otherwise."""
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or \
            any(p in ("", ".", "..") for p in parts):
        raise Refused(400, f"'{rel[:200]}' is not a plain relative path: no '..', '.', "
                           "empty or absolute parts")
    if parts[0] not in SERVED:
        if parts[0] == "plans":
            raise Refused(403, "plans are not served as files: a node gets its plan, with "
                               "its token, from /api/v1/plans/<mac>")
        raise Refused(404, f"'{rel[:200]}' is not served: only "
                           f"{', '.join(SERVED)} are")
    if any(p.startswith(".") for p in parts):
        raise Refused(404, f"'{rel[:200]}' is not served: dot files are temporary files")
    root = os.path.realpath(outdir)
    top = os.path.join(root, parts[0])
    path = os.path.realpath(os.path.join(root, rel))
    inside = path == top if len(parts) == 1 else path.startswith(top + os.sep)
    if not inside or not os.path.isfile(path):
        raise Refused(404, f"no file '{rel[:200]}' in the served trees of OUTDIR")
    return path


def content_type(rel: str) -> str:
    if rel.startswith(TEXT_DIRS) or os.path.basename(rel) in TEXT_NAMES:
        return TEXT
    return TYPES.get(os.path.splitext(rel)[1], "application/octet-stream")


class Checksums:
    """sha256 of artifacts, from manifest.json (re-read when it changes) or a .sha256 file."""

    def __init__(self, outdir: str):
        self.outdir = outdir
        self._stamp: tuple | None = None
        self._known: dict[str, tuple[int, str]] = {}

    def sha256(self, rel: str, path: str) -> str | None:
        """The checksum of REL if one is known for the file as it is now, else None."""
        st = os.stat(path)
        size, digest = self._manifest().get(rel, (None, None))
        if digest and size == st.st_size and self._stamp and self._stamp[0] >= st.st_mtime:
            return digest
        return _sidecar(path, st.st_mtime)

    def _manifest(self) -> dict[str, tuple[int, str]]:
        path = os.path.join(self.outdir, "manifest.json")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}
        if self._stamp != (st.st_mtime, st.st_size):
            self._known = _read_manifest(path)
            self._stamp = (st.st_mtime, st.st_size)
        return self._known


def _read_manifest(path: str) -> dict[str, tuple[int, str]]:
    """path -> (size, sha256); a manifest `build` did not write gives no checksums."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return {a["path"]: (a["size"], a["sha256"]) for a in data.get("artifacts", {}).values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _sidecar(path: str, mtime: float) -> str | None:
    """images/x.tar.zst.sha256 (`<hex>  <name>`), if not older than the file."""
    try:
        st = os.stat(path + ".sha256")
        with open(path + ".sha256", encoding="ascii") as f:
            digest = f.read().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    if st.st_mtime >= mtime and len(digest) == 64:
        return digest
    return None
