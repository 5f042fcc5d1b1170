"""The build host's own Debian mirror, read from its apt sources.

The cluster file may name a mirror; when it does not, nodes and images use the mirror this
host already installs from, so an office with a local mirror or proxy needs no setting.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

KNOWN_SUITES = ("wheezy", "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie",
                "forky", "sid", "stable", "testing", "unstable", "oldstable")


@dataclass(frozen=True)
class HostMirror:
    debian: str | None
    security: str | None


def _one_line_entries(text: str):
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        # Drop an options block: deb [signed-by=...] URI suite comps
        line = re.sub(r"\[[^\]]*\]", "", line)
        parts = line.split()
        if len(parts) >= 3:
            yield parts[1], [parts[2]]


def _deb822_entries(text: str):
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split()


def parse_sources(files: dict[str, str]) -> HostMirror:
    """Find the Debian and Debian security mirrors among apt source files (name -> text)."""
    debian = security = None
    for name, text in files.items():
        entries = _deb822_entries(text) if name.endswith(".sources") else _one_line_entries(text)
        for uri, suites in entries:
            base = [s.split("/")[0].split("-")[0] for s in suites]
            if not any(b in KNOWN_SUITES for b in base):
                continue
            is_security = any(s.endswith("-security") or s.endswith("/updates") for s in suites)
            uri = uri.rstrip("/")
            if is_security and security is None:
                security = uri
            elif not is_security and debian is None:
                debian = uri
    return HostMirror(debian, security)


def host_mirror(root: str = "/") -> HostMirror:
    """The mirrors of this host's apt sources (None where it has none)."""
    apt = os.path.join(root, "etc/apt")
    paths = [os.path.join(apt, "sources.list")]
    paths += sorted(glob.glob(os.path.join(apt, "sources.list.d", "*.list")))
    paths += sorted(glob.glob(os.path.join(apt, "sources.list.d", "*.sources")))
    files = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                files[path] = f.read()
        except OSError:
            continue
    return parse_sources(files)
