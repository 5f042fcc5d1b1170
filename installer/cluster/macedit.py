"""A node's new MAC in the cluster file (`rebuild --mac`, new hardware): that one value is
rewritten in the file's text, comments and layout kept, and the result is checked as the
file itself is (the whole validation) before anything is written.

`prepare` decides and changes nothing (a bad MAC, one another node has, a file whose value
cannot be found in its text: ConfigInvalid naming the file, key and fix); `write` puts the
new text in place whole (a temporary beside it, renamed over it, same mode and owner) if the
file still holds the text prepare read, and `restore` the old one if it still holds the new.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass

from installer.cluster import config, files, source
from installer.cluster.errors import ConfigError, ConfigInvalid, InstallerError, quote
from installer.cluster.validate import MAC_FIX, normal_mac

# A `mac = "..."` or `mac = '...'` key/value anywhere (a [[nodes]] table or an inline one).
MAC_VALUE = re.compile(r"""(?<![\w.-])(mac\s*=\s*)(["'])([^"'\n\\]*)\2""")


@dataclass(frozen=True)
class MacChange:
    path: str
    node: str
    key: str                    # nodes[i].mac
    old: str
    new: str
    old_text: str
    new_text: str
    cluster: config.Cluster     # the file as it will be

    def said(self) -> str:
        return (f"{self.path}: {self.key} {self.old} -> {self.new} (the old MAC is "
                "forgotten)")


def prepare(path: str, name: str, new_mac: str) -> MacChange:
    """The change of NAME's MAC to NEW_MAC, checked; ConfigInvalid if it must not be."""
    text = source.decode(path, source.read_bytes(path))
    source.check_depth(path, text)
    data = source.read(path)
    cluster = config.parse(copy.deepcopy(data), path)
    node = next((n for n in cluster.nodes if n.name == name), None)
    if node is None:
        raise _invalid(path, "", f"no node '{name}'", "use one of "
                       f"{', '.join(n.name for n in cluster.nodes)}")
    key = f"nodes[{node.index}].mac"
    new = normal_mac(new_mac)
    if new is None:
        raise _invalid(path, key, f"--mac {quote(new_mac)} for {name} is not a MAC address",
                       MAC_FIX)
    if new == node.mac:
        raise _invalid(path, key, f"{name} has MAC {new} already", "give --mac the MAC of "
                       "the new NIC, or rebuild without --mac to keep the hardware")
    other = next((n for n in cluster.nodes if n.mac == new), None)
    if other is not None:
        raise _invalid(path, f"nodes[{other.index}].mac", f"{new} is the MAC of {other.name}, "
                       f"not free for {name}", f"check the MAC of {name}'s new NIC (its label "
                       "or PXE boot screen); two nodes cannot share one")
    new_text = _rewritten(path, text, data, node.index, key, node.mac, new)
    changed = config.parse(tomllib.loads(new_text), path)   # every other rule, as validate
    return MacChange(path, name, key, node.mac, new, text, new_text, changed)


def _rewritten(path: str, text: str, data: dict, index: int, key: str, old: str,
               new: str) -> str:
    """TEXT with only nodes[INDEX].mac changed: each `mac = "..."` spelling OLD is tried, and
    the one whose change parses to DATA with that value alone changed is kept."""
    want = copy.deepcopy(data)
    want["nodes"][index]["mac"] = new
    for match in MAC_VALUE.finditer(text):
        if normal_mac(match.group(3)) != old:
            continue
        candidate = text[:match.start(3)] + new + text[match.end(3):]
        try:
            if tomllib.loads(candidate) == want:
                return candidate
        except tomllib.TOMLDecodeError:
            continue
    raise _invalid(path, key, f"its value {old} could not be found as a plain `mac = \"...\"` "
                   "in the file's text", "write the new MAC there by hand, then rebuild "
                   "without --mac")


def write(change: MacChange) -> None:
    """The file with CHANGE in place, whole, as it was owned; InstallerError (nothing
    written) if the file is no longer the text CHANGE was prepared from: an edit made since
    would be lost."""
    _expect(change, change.old_text,
            f"{change.path} changed since {change.node}'s new MAC was prepared from it: "
            f"nothing was written (the edit made since would be lost); run rebuild --mac "
            f"{change.new} again, which reads the file anew")
    _put(change.path, change.new_text)


def restore(change: MacChange) -> None:
    """The file as it was before `write`; InstallerError (the file left as it is) if it is
    no longer the text `write` put there."""
    _expect(change, change.new_text,
            f"{change.path} changed since the new MAC was written into it, so it is left as "
            f"it is: by hand, set {change.key} back to \"{change.old}\" in it (or run "
            f"rebuild --mac {change.new} again)")
    _put(change.path, change.old_text)


def _expect(change: MacChange, text: str, said: str) -> None:
    try:
        now = source.decode(change.path, source.read_bytes(change.path))
    except (ConfigInvalid, OSError):
        now = None
    if now != text:
        raise InstallerError(said)


def _put(path: str, text: str) -> None:
    real = os.path.realpath(path)
    st = os.stat(real)
    files.write_atomically(real, text, st.st_mode & 0o7777)
    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.chown(real, st.st_uid, st.st_gid)
        except PermissionError:
            pass        # not root: the file is ours now, with the same mode


def _invalid(path: str, key: str, problem: str, fix: str) -> ConfigInvalid:
    return ConfigInvalid([ConfigError(path, key, problem, fix)])
