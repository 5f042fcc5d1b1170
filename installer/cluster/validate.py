"""Typed reading of a parsed cluster file that records every problem instead of stopping.

Each getter takes a dotted key (`nodes[2].ip`), returns the checked value, the default when
the key is absent, or None after recording a ConfigError that says what to write instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import re

from installer.agent import rules
from installer.cluster import sizes
from installer.cluster.errors import ConfigError

REQUIRED = object()

LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAC = rules.MAC
IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
VGNAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}")
CRYPT = re.compile(r"(\$(1|2[aby]|5|6|7|y|gy)\$[./A-Za-z0-9=,$]{8,})|[!*]")
SSH_KEY = re.compile(r"(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)"
                     r" [A-Za-z0-9+/]+={0,3}( .*)?")
URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s\"'`$;&|<>]*)?")
_TOKEN = re.compile(r"([A-Za-z_]+)(?:\[(\d+)\])?")


def suggest(word: str, choices) -> str | None:
    """The known word a typo most likely meant: close spelling, or one is the other's prefix."""
    choices = list(choices)
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return close[0]
    prefixed = [c for c in choices if str(word).startswith(c) or c.startswith(str(word))]
    return max(prefixed, key=len) if prefixed else None


def check_unknown_keys(data: dict, schema: dict, file: str, prefix: str,
                       errors: list[ConfigError]) -> None:
    """Report keys the schema does not know, with the closest known key as a suggestion."""
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in schema:
            close = suggest(key, schema)
            fix = f"did you mean '{close}'?" if close else \
                f"known keys here: {', '.join(schema)}"
            errors.append(ConfigError(file, where, "unknown key", fix))
            continue
        sub = schema[key]
        if isinstance(sub, dict) and isinstance(value, dict):
            check_unknown_keys(value, sub, file, where, errors)
        elif isinstance(sub, list) and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    check_unknown_keys(item, sub[0], file, f"{where}[{i}]", errors)


class Reader:
    def __init__(self, data: dict, file: str, errors: list[ConfigError]):
        self.data, self.file, self.errors = data, file, errors

    # -- plumbing ---------------------------------------------------------------------------

    def error(self, key: str, problem: str, fix: str) -> None:
        self.errors.append(ConfigError(self.file, key, problem, fix))

    @staticmethod
    def did_you_mean(word: str, choices) -> str:
        close = suggest(word, choices)
        return f" (did you mean '{close}'?)" if close else ""

    def _lookup(self, key: str):
        node = self.data
        for part in key.split("."):
            name, index = _TOKEN.fullmatch(part).groups()
            if not isinstance(node, dict) or name not in node:
                return REQUIRED
            node = node[name]
            if index is not None:
                if not isinstance(node, list) or int(index) >= len(node):
                    return REQUIRED
                node = node[int(index)]
        return node

    def _get(self, key: str, kind, default, what: str):
        value = self._lookup(key)
        if value is REQUIRED:
            if default is REQUIRED:
                self.error(key, "missing", f"add {key.split('.')[-1]} = <{what}> here")
                return None
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(key, f"expected {what}, got {type(value).__name__} {value!r}",
                       f"write {key.split('.')[-1]} as {what}")
            return None
        return value

    # -- scalars ----------------------------------------------------------------------------

    def string(self, key, default=REQUIRED, what="a string"):
        return self._get(key, str, default, what)

    def boolean(self, key, default=REQUIRED):
        return self._get(key, bool, default, "true or false")

    def integer(self, key, default=REQUIRED, low=None, high=None, fix=""):
        value = self._get(key, int, default, "a whole number")
        if value is not None and ((low is not None and value < low) or
                                  (high is not None and value > high)):
            self.error(key, f"{value} is outside {low}-{high}", fix or f"use {low} to {high}")
            return None
        return value

    def choice(self, key, choices, default=REQUIRED):
        value = self.string(key, default)
        if value is not None and value not in choices:
            self.error(key, f"'{value}' is not one of {', '.join(choices)}",
                       "use one of those" + self.did_you_mean(value, choices))
            return None
        return value

    def vlan(self, key, default):
        return self.integer(key, default, 1, 4094, "VLAN IDs run from 1 to 4094")

    def hostname(self, key, default=REQUIRED):
        value = self.string(key, default, "a host name")
        if value is not None and not LABEL.fullmatch(value):
            self.error(key, f"'{value}' is not a valid host name",
                       "use lowercase letters, digits and inner hyphens, at most 63 "
                       "characters, no dots (the domain goes in cluster.domain)")
            return None
        return value

    def domain(self, key, default=REQUIRED):
        value = self.string(key, default, "a domain name")
        if value is None:
            return None
        labels = value.split(".")
        if len(value) > 200 or not all(LABEL.fullmatch(x) for x in labels) or \
                labels[-1].isdigit():
            self.error(key, f"'{value}' is not a valid domain name",
                       "use dot-separated lowercase labels, e.g. project.edu")
            return None
        return value

    def mac(self, key):
        value = self.string(key, REQUIRED, "a MAC address")
        if value is None:
            return None
        norm = value.strip().lower()
        if not MAC.fullmatch(norm):
            self.error(key, f"'{value}' is not a MAC address",
                       "write six colon-separated hex bytes, e.g. 52:54:00:12:34:56")
            return None
        if int(norm[:2], 16) & 1:
            self.error(key, f"{value} is a multicast address, no NIC has it",
                       "copy the MAC from the PC's label or its PXE boot screen")
            return None
        return norm

    def ifname(self, key, default):
        value = self.string(key, default, "an interface name")
        if value is not None and not IFNAME.fullmatch(value):
            self.error(key, f"'{value}' is not a valid interface name",
                       "use at most 15 letters, digits, '_', '.' or '-'")
            return None
        return value

    def vgname(self, key, default):
        value = self.string(key, default, "a volume group name")
        if value is not None and (not VGNAME.fullmatch(value) or value in (".", "..")):
            self.error(key, f"'{value}' is not a valid LVM volume group name",
                       "use letters, digits and + _ . - (the paper uses ganeti)")
            return None
        return value

    def abspath(self, key, default):
        value = self.string(key, default, "an absolute path")
        if value is not None and (not value.startswith("/") or any(c.isspace() for c in value)):
            self.error(key, f"'{value}' is not an absolute path",
                       "write a path starting with /, e.g. /bin/true")
            return None
        return value

    def url(self, key, default=None):
        value = self.string(key, default, "a URL")
        if value is not None and not URL.fullmatch(value):
            self.error(key, f"'{value}' is not an http or https URL",
                       "write it as http://host[:port]/path")
            return None
        return value.rstrip("/") if value else value

    def size(self, key, default, low=0):
        value = self._lookup(key)
        text = default if value is REQUIRED else value
        try:
            n = sizes.parse(text)
        except ValueError:
            self.error(key, f"{text!r} is not a size", 'write a size such as "10GiB" or "512MiB"')
            return 0
        if n < low:
            self.error(key, f"{sizes.human(n)} is too small", f"use at least {sizes.human(low)}")
        return n

    def password_hash(self, key):
        value = self.string(key, None, "a crypt(3) hash")
        if value is not None and not CRYPT.fullmatch(value):
            self.error(key, "looks like a plaintext password, not a crypt(3) hash",
                       "store only a hash: `mkpasswd -m sha-512` (package whois) or "
                       "`openssl passwd -6` prints one; or \"!\" to lock root's password")
            return None
        return value

    # -- addresses --------------------------------------------------------------------------

    def address(self, key, default=REQUIRED):
        value = self.string(key, default, "an IPv4 address")
        if value is None:
            return None
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            self.error(key, f"'{value}' is not an IPv4 address", "write it as 192.168.20.222")
            return None

    def network(self, key, default=REQUIRED):
        value = self.string(key, default, "a CIDR network")
        if value is None:
            return None
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as e:
            self.error(key, f"'{value}' is not a CIDR network ({e})",
                       "write the network address and prefix, e.g. 192.168.20.0/24")
            return None
        if net.prefixlen > 30:
            self.error(key, f"{net} holds no room for nodes", "use a prefix of /30 or shorter")
            return None
        return net

    def host_in(self, key, ip, network, gateway=None) -> None:
        addr = ipaddress.IPv4Address(ip)
        if addr not in network:
            self.error(key, f"{ip} is outside the network {network}",
                       f"use an address from {network[1]} to {network[-2]}")
        elif addr == network.network_address:
            self.error(key, f"{ip} is the network address of {network}",
                       f"use an address from {network[1]} to {network[-2]}")
        elif addr == network.broadcast_address:
            self.error(key, f"{ip} is the broadcast address of {network}",
                       f"use an address from {network[1]} to {network[-2]}")
        elif gateway and ip == gateway:
            self.error(key, f"{ip} is the gateway's address", "give the node its own address")

    # -- lists and tables -------------------------------------------------------------------

    def _list(self, key, default, what):
        value = self._get(key, list, default, f"a list of {what}")
        if value is None:
            return []
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            self.error(key, f"expected a list of {what}, found {bad[0]!r}",
                       f"quote every entry as a string of {what}")
            return []
        return list(value)

    def string_list(self, key, default=REQUIRED):
        names = self._list(key, default, "names")
        for i, name in enumerate(names):
            if not all(LABEL.fullmatch(x) for x in name.split(".")):
                self.error(f"{key}[{i}]", f"'{name}' is not a host name",
                           "use a host name such as 0.debian.pool.ntp.org")
        return names

    def address_list(self, key, default=REQUIRED):
        out = []
        for i, value in enumerate(self._list(key, default, "IPv4 addresses")):
            try:
                out.append(str(ipaddress.IPv4Address(value)))
            except ValueError:
                self.error(f"{key}[{i}]", f"'{value}' is not an IPv4 address",
                           "write it as 192.168.20.1")
        return out

    def ssh_keys(self, key):
        keys = self._list(key, [], "SSH public keys")
        for i, k in enumerate(keys):
            if not SSH_KEY.fullmatch(k.strip()):
                self.error(f"{key}[{i}]", "is not an SSH public key line",
                           "paste one line of an id_*.pub file (type, base64, comment)")
        return [k.strip() for k in keys]

    def table(self, key) -> dict:
        value = self._get(key, dict, {}, "a table")
        return value or {}

    def table_list(self, key) -> list:
        value = self._get(key, list, [], "an array of tables ([[nodes]])")
        if value and not all(isinstance(v, dict) for v in value):
            self.error(key, "entries must be tables", "write each node as a [[nodes]] table")
            return []
        return value or []
