"""SSH public keys as nodes report them, their fingerprints, and serve's own known_hosts file.

A node reports its host keys ({"ed25519": "ssh-ed25519 AAAA...", ...}) before anyone connects
to it, so nothing is ever accepted on first sight: the keys go into a known_hosts file of
serve's own (`<state>/ssh/known_hosts`) under the node's FQDN, short name and address, and
every connection checks against it strictly. A rebuilt node has new keys: its old entries are
replaced, never added to (the "Host key verification failed" on re-add that Ganeti users hit).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from installer.cluster import files

KEY_LINE = re.compile(r"(?P<type>ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)) "
                      r"(?P<blob>[A-Za-z0-9+/]+={0,3})(?: (?P<comment>[\x20-\x7e]*))?")
# How ssh names a key type in "ED25519 key fingerprint is SHA256:..."
PRINTED_TYPE = {"ssh-rsa": "RSA", "ssh-dss": "DSA", "ssh-ed25519": "ED25519",
                "ecdsa-sha2-nistp256": "ECDSA", "ecdsa-sha2-nistp384": "ECDSA",
                "ecdsa-sha2-nistp521": "ECDSA"}
# The host key types Ganeti copies from the master to every node it adds (its
# constants.SSH_DAEMON_KEYFILES: dsa, ecdsa, rsa); ed25519 stays the node's own.
CLUSTER_TYPES = ("ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521")
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True)
class PublicKey:
    type: str           # "ssh-ed25519"
    blob: str           # base64 of the key blob
    comment: str = field(default="", compare=False)    # the same key, whatever it says

    @property
    def line(self) -> str:
        return f"{self.type} {self.blob}"

    @property
    def printed_type(self) -> str:
        return PRINTED_TYPE[self.type]

    def fingerprint(self) -> str:
        """SHA256:<base64 without padding>, exactly as OpenSSH prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    def md5(self) -> str:
        """The MD5 form older OpenSSH prints (the paper's "62:00:14:fc:...")."""
        digest = hashlib.md5(base64.b64decode(self.blob)).hexdigest()
        return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

    def describe(self) -> str:
        return f"{self.printed_type} {self.fingerprint()}"


def parse(line: str) -> PublicKey:
    """A validated public key line ('<type> <base64> [comment]'); ValueError says what is off."""
    m = KEY_LINE.fullmatch(line.strip()) if isinstance(line, str) else None
    if m is None:
        raise ValueError(f"not an SSH public key line ('<type> <base64>'): {str(line)[:60]!r}")
    try:
        blob = base64.b64decode(m["blob"], validate=True)
    except binascii.Error:
        raise ValueError(f"the {m['type']} key is not valid base64") from None
    # The blob starts with its own type name: a key pasted under the wrong type is refused.
    size = int.from_bytes(blob[:4], "big")
    if blob[4:4 + size] != m["type"].encode("ascii"):
        raise ValueError(f"the key blob does not hold a {m['type']} key")
    return PublicKey(m["type"], m["blob"], m["comment"] or "")


def fingerprint(line: str) -> str:
    """The SHA256 fingerprint of a public key line, as `ssh-keygen -lf` and ssh print it."""
    return parse(line).fingerprint()


def reported_keys(host_keys: Mapping[str, str]) -> list[PublicKey]:
    """The keys of a node's report, validated; the report's names ("ed25519") are not
    trusted, each key's own type is."""
    if not isinstance(host_keys, Mapping) or not host_keys:
        raise ValueError("the node reported no SSH host keys")
    keys = []
    for value in host_keys.values():
        key = parse(value)
        keys.append(PublicKey(key.type, key.blob))      # a host key's comment is noise
    return keys


def cluster_keys(master_keys: Iterable[PublicKey]) -> list[PublicKey]:
    """The master's host keys that Ganeti gives every node it adds (not ed25519)."""
    return [k for k in master_keys if k.type in CLUSTER_TYPES]


def host_patterns(names: Iterable[str], port: int = 22) -> list[str]:
    """known_hosts patterns for a host's names and addresses; `[name]:port` off port 22."""
    out = []
    for name in names:
        if not isinstance(name, str) or not HOSTNAME.fullmatch(name):
            raise ValueError(f"not a host name or IPv4 address: {str(name)[:60]!r}")
        pattern = name.lower() if port == 22 else f"[{name.lower()}]:{port}"
        if pattern not in out:
            out.append(pattern)
    return out


def known_hosts_path(state_dir: str) -> str:
    """serve's own known_hosts, beside its key pair (installer/statedir.py)."""
    return os.path.join(state_dir, "ssh", "known_hosts")


def keys_for(path: str, pattern: str) -> list[PublicKey]:
    """The keys a known_hosts file holds for one exact pattern (as written by replace())."""
    keys = []
    for line in _read(path):
        fields = line.split()
        if len(fields) >= 3 and not line.startswith(("#", "@", "|")) and \
                pattern in fields[0].split(","):
            try:
                keys.append(parse(" ".join(fields[1:3])))
            except ValueError:
                continue
    return keys


def replace(path: str, patterns: list[str], keys: Iterable[PublicKey]) -> None:
    """Make `keys` the only keys known for `patterns`: other hosts' lines stay as they are.

    The file is rewritten atomically under a lock, so two joins running at once cannot lose
    each other's entries and a crash leaves the old file or the new one, never half."""
    keys = list(keys)
    mine = set(patterns)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with _locked(path):
        lines = []
        for line in _read(path):
            lines.extend(_without(line, mine))
        lines.extend(f"{','.join(patterns)} {k.line}" for k in keys)
        files.write_atomically(path, "".join(line + "\n" for line in lines), 0o600)


def _without(line: str, patterns: set[str]) -> list[str]:
    """The line with `patterns` taken out of its host field (dropped when none remain)."""
    fields = line.split(" ", 1)
    if line.startswith(("#", "@", "|")) or len(fields) < 2:
        return [line]       # comments, markers and hashed names are not ours to edit
    hosts = [h for h in fields[0].split(",") if h.lower() not in patterns]
    return [f"{','.join(hosts)} {fields[1]}"] if hosts else []


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []


@contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- root's authorized_keys, as the cluster file gives it ----------------------------------

# Options before the key type (from="10.0.0.0/8",no-pty ...): quoted values may hold spaces.
_OPTIONS = re.compile(r'(?P<options>[A-Za-z][A-Za-z0-9-]*(="(?:[^"\\]|\\.)*")?'
                      r'(,[A-Za-z][A-Za-z0-9-]*(="(?:[^"\\]|\\.)*")?)*) +(?P<key>.*)')
SK_TYPES = ("sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
# How many length-prefixed fields (strings, mpints) follow the type name in a key blob.
_FIELDS = {
    "ssh-ed25519": 1, "ssh-rsa": 2,         # the key; e and n
    "ecdsa-sha2-nistp256": 2, "ecdsa-sha2-nistp384": 2, "ecdsa-sha2-nistp521": 2,  # curve, Q
    "sk-ssh-ed25519@openssh.com": 2, "sk-ecdsa-sha2-nistp256@openssh.com": 3,  # + application
}
_POINT = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
MIN_RSA_BITS = 2048


def parse_authorized(line: str) -> PublicKey:
    """An authorized_keys line ([options] type base64 [comment]) whose key blob is whole:
    the type it claims, every field present, nothing left over. DSA keys are refused
    (OpenSSH dropped them), as are RSA keys under 2048 bits."""
    line = line.strip()
    if not line.startswith(tuple(_FIELDS) + ("ssh-dss",)):
        m = _OPTIONS.fullmatch(line)
        if m is None:
            raise ValueError("it does not start with a key type such as ssh-ed25519")
        line = m["key"]
    if line.startswith("ssh-dss "):
        raise ValueError("DSA (ssh-dss) keys are refused by current OpenSSH")
    kind, _, rest = line.partition(" ")
    if kind in SK_TYPES:
        blob64 = rest.split(" ", 1)[0]
        if not re.fullmatch(r"[A-Za-z0-9+/]+={0,3}", blob64):
            raise ValueError(f"the {kind} key is not valid base64")
        key = PublicKey(kind, blob64)
    else:
        # Any comment a person writes (José@laptop, a tab) is fine in authorized_keys; only
        # control characters are not. The type and blob are checked as for a host key.
        key_part, _, comment = rest.partition(" ")
        if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", comment):
            raise ValueError("the key's comment holds a control character")
        key = parse(f"{kind} {key_part}")
    _check_fields(key)
    return key


def _check_fields(key: PublicKey) -> None:
    blob = base64.b64decode(key.blob)
    fields, offset = [], 4 + len(key.type)
    for _ in range(_FIELDS[key.type]):
        if offset + 4 > len(blob):
            raise ValueError(f"the {key.type} key is truncated")
        size = int.from_bytes(blob[offset:offset + 4], "big")
        offset += 4
        if size == 0 or offset + size > len(blob):
            raise ValueError(f"the {key.type} key is truncated")
        fields.append(blob[offset:offset + size])
        offset += size
    if offset != len(blob):
        raise ValueError(f"the {key.type} key has {len(blob) - offset} bytes after its end")
    if key.type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com") and len(fields[0]) != 32:
        raise ValueError(f"the {key.type} key is {len(fields[0])} bytes, not 32")
    if "ecdsa" in key.type:
        curve = key.type.split("-")[2].split("@")[0]
        if fields[0] != curve.encode() or len(fields[1]) != _POINT[curve]:
            raise ValueError(f"the {key.type} key does not hold a {curve} point")
    if key.type == "ssh-rsa":
        bits = int.from_bytes(fields[1], "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise ValueError(f"the RSA key has {bits} bits, OpenSSH wants at least "
                             f"{MIN_RSA_BITS}")
