"""Typed reading of a parsed cluster file that records every problem instead of stopping.

First `check_shape` compares the whole file with keys.SCHEMA: unknown keys and values of
the wrong TOML type (a section that is a string, a size without quotes) are reported and
left out. Then each Reader getter takes a dotted key (`nodes[2].ip`) and returns the
checked value, the default when the key is absent, or None after recording a ConfigError
that says what to write instead. Keys under a refused value return None silently: their
section has been reported already.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import re

from installer.agent import rules
from installer.cluster import crypt, keys, sizes, sshkeys
from installer.cluster.errors import ConfigError, quote

REQUIRED = object()
_BAD = object()

LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAC = rules.MAC
# MACs as people copy them: colons, dashes, Cisco's dots, or bare hex.
MAC_FORMS = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}|"
                       r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}|[0-9a-f]{12}")
MAC_FIX = ("write six hex bytes, e.g. 52:54:00:12:34:56 (52-54-00-12-34-56, 5254.0012.3456 "
           "and 525400123456 are read too)")
IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
# Names the kernel gives NICs (eth0, enp3s0, wlan0, bond0) and names it reserves.
NIC_LIKE = re.compile(r"(eth|en[a-z]|wl|ww|ib|bond|team|vlan|veth|tap|tun)[a-z0-9]*\d+")
RESERVED_IFNAMES = ("all", "default", "lo", "bonding_masters")
VGNAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}")
PATH = re.compile(r"(/[A-Za-z0-9_.+-]+)+")
HOST = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                  r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
URL = re.compile(r"(?P<scheme>https?)://(?P<host>[^/:\[\]]+|\[[^\]]*\])(?::(?P<port>\d{1,5}))?"
                 r"(?P<path>/[^\s\"'`$;&|<>\\]*)?")
_TOKEN = re.compile(r"([A-Za-z_]+)(?:\[(\d+)\])?")
SHOWN_KEY = 60


def normal_mac(value: str) -> str | None:
    """A MAC in any common spelling as six lower-case colon-separated bytes; None if it is
    not one."""
    text = value.strip().lower()
    if not MAC_FORMS.fullmatch(text):
        return None
    digits = re.sub(r"[^0-9a-f]", "", text)
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def suggest(word: str, choices) -> str | None:
    """The known word a typo most likely meant: close spelling, or one is the other's prefix."""
    choices = list(choices)
    word = str(word)[:100]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return close[0]
    prefixed = [c for c in choices if word and (word.startswith(c) or c.startswith(word))]
    return max(prefixed, key=len) if prefixed else None


# -- the shape of the whole file ------------------------------------------------------------

def kind(value) -> str:
    """How a message names the TOML type of a value."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date or time"
    return next((name for t, name in keys.NAMES.items() if isinstance(value, t)), "a value")


def check_shape(data: dict, file: str, errors: list[ConfigError]) -> tuple[dict, set[str]]:
    """The file with only known keys of the right type, and the keys refused for their type
    (nothing under them is reported missing)."""
    refused: set[str] = set()
    return _shape(data, keys.SCHEMA, "", file, errors, refused), refused


def _shape(value, spec, where, file, errors, refused):
    if isinstance(spec, dict):
        return _shape_table(value, spec, where, file, errors, refused)
    if isinstance(spec, list):
        return _shape_list(value, spec[0], where, file, errors, refused)
    if isinstance(spec, tuple):
        return _shape_either(value, spec, where, file, errors, refused)
    if isinstance(value, spec) and not (spec is int and isinstance(value, bool)):
        return value
    return _refuse(where, value, keys.NAMES[spec], _scalar_fix(where, value, spec), file,
                   errors, refused)


def _shape_table(value, spec, where, file, errors, refused):
    if not isinstance(value, dict):
        names = ", ".join(k if isinstance(k, str) else "<name> = \"…\"" for k in spec)
        return _refuse(where, value, "a table", f"write [{where}] on a line of its own, then "
                       f"its keys ({names})", file, errors, refused)
    out = {}
    for key, item in value.items():
        shown = key if len(key) <= SHOWN_KEY else key[:SHOWN_KEY] + "…"
        at = f"{where}.{shown}" if where else shown
        if str in spec:             # free keys: their names are checked by their reader
            checked = _shape(item, spec[str], at, file, errors, refused)
            if checked is not _BAD:
                out[key] = checked
            continue
        if key not in spec:
            close = suggest(key, spec)
            errors.append(ConfigError(file, at, "unknown key", f"did you mean '{close}'?"
                                      if close else f"known keys here: {', '.join(spec)}"))
            continue
        checked = _shape(item, spec[key], at, file, errors, refused)
        if checked is not _BAD:
            out[key] = checked
    return out


def _shape_list(value, item_spec, where, file, errors, refused):
    tables = isinstance(item_spec, dict)
    name = where.rsplit(".", 1)[-1]
    if not isinstance(value, list):
        what, fix = ("an array of tables", f"write each entry as a [[{name}]] table") if tables \
            else (f"a list of {keys.NAMES[item_spec][2:]}s", f'write {name} = ["…", "…"]')
        return _refuse(where, value, what, fix, file, errors, refused)
    out, whole = [], True
    for i, item in enumerate(value):
        checked = _shape(item, item_spec, f"{where}[{i}]", file, errors, refused)
        if checked is _BAD:
            whole = False
            checked = {}            # keeps the other tables' indices (nodes[2] stays nodes[2])
        out.append(checked)
    if not whole and not tables:
        refused.add(where)
        return _BAD
    return out


def _shape_either(value, spec, where, file, errors, refused):
    """A key that takes a scalar or a table (nodes[].power = "wol" or { ipmi = … })."""
    scalar, table = spec
    if isinstance(value, dict):
        return _shape_table(value, table, where, file, errors, refused)
    if isinstance(value, scalar) and not (scalar is int and isinstance(value, bool)):
        return value
    name = where.rsplit(".", 1)[-1]
    return _refuse(where, value, f"{keys.NAMES[scalar]} or a table",
                   "write " + keys.EITHER.get(name, f"{name} = <{keys.NAMES[scalar]}>"),
                   file, errors, refused)


def _scalar_fix(where: str, value, spec) -> str:
    name = where.rsplit(".", 1)[-1]
    if name.endswith("]"):          # an entry of a list
        return f'quote every entry: {name.split("[")[0]} = ["…", "…"]'
    if spec is str and name in keys.EXAMPLES:
        unit = f'"{value}GiB"' if isinstance(value, int) and not isinstance(value, bool) \
            and 0 < value < 1 << 20 else keys.EXAMPLES[name]
        return f"a size is a string with its unit: write {name} = {unit}"
    if spec is str:
        return f'put the value in quotes: {name} = "…"'
    return f"write {name} = <{keys.NAMES[spec]}>, without quotes"


def _refuse(where, value, what, fix, file, errors, refused):
    errors.append(ConfigError(file, where, f"expected {what}, got {kind(value)} {quote(value)}",
                              fix))
    refused.add(where)
    return _BAD


# -- reading values by key ------------------------------------------------------------------

class Reader:
    def __init__(self, data: dict, file: str, errors: list[ConfigError],
                 refused: set[str] | frozenset[str] = frozenset()):
        self.data, self.file, self.errors, self.refused = data, file, errors, refused

    # -- plumbing ---------------------------------------------------------------------------

    def error(self, key: str, problem: str, fix: str) -> None:
        self.errors.append(ConfigError(self.file, key, problem, fix))

    @staticmethod
    def did_you_mean(word: str, choices) -> str:
        close = suggest(word, choices)
        return f" (did you mean '{close}'?)" if close else ""

    def was_refused(self, key: str) -> bool:
        """True when the key or a section holding it was refused by check_shape."""
        return any(key == r or key.startswith((r + ".", r + "[")) for r in self.refused)

    def failed(self, key: str) -> bool:
        """True when an error about the key has been recorded (its default stands in)."""
        return any(e.key == key for e in self.errors) or self.was_refused(key)

    def present(self, key: str) -> bool:
        """True when the file gives the key (whether or not its value was accepted)."""
        return self._lookup(key) is not REQUIRED or self.was_refused(key)

    def raw(self, key: str):
        """The key's value as the file gives it (after check_shape); None when absent."""
        value = self._lookup(key)
        return None if value is REQUIRED else value

    def _lookup(self, key: str):
        node = self.data
        for part in key.split("."):
            token = _TOKEN.fullmatch(part)
            if token is None:       # keys are ours, not the file's: a bad one is a bug
                raise ValueError(f"not a key path: {key!r}")
            name, index = token.groups()
            if not isinstance(node, dict) or name not in node:
                return REQUIRED
            node = node[name]
            if index is not None:
                if not isinstance(node, list) or int(index) >= len(node):
                    return REQUIRED
                node = node[int(index)]
        return node

    def _get(self, key: str, kind_, default, what: str):
        value = self._lookup(key)
        if value is REQUIRED:
            if self.was_refused(key):
                return None
            if default is REQUIRED:
                self.error(key, "missing", f"add {key.split('.')[-1]} = <{what}> here")
                return None
            return default
        if not isinstance(value, kind_) or (kind_ is int and isinstance(value, bool)):
            self.error(key, f"expected {what}, got {kind(value)} {quote(value)}",
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
            self.error(key, f"{quote(value)} is outside {low}-{high}",
                       fix or f"use {low} to {high}")
            return None
        return value

    def choice(self, key, choices, default=REQUIRED):
        value = self.string(key, default)
        if value is not None and value not in choices:
            self.error(key, f"{quote(value)} is not one of {', '.join(choices)}",
                       "use one of those" + self.did_you_mean(value, choices))
            return None
        return value

    def vlan(self, key, default):
        return self.integer(key, default, 1, 4094, "VLAN IDs run from 1 to 4094")

    def hostname(self, key, default=REQUIRED):
        """A host name, lowercased as Debian's hostname and DNS treat it."""
        value = self.string(key, default, "a host name")
        if value is None:
            return None
        name = value.lower()
        if not LABEL.fullmatch(name):
            self.error(key, f"{quote(value)} is not a valid host name",
                       "use lowercase letters, digits and inner hyphens, at most 63 "
                       "characters, no dots (the domain goes in cluster.domain)")
            return None
        if name == "localhost":
            self.error(key, "'localhost' names every machine to itself",
                       "give the machine a name of its own, e.g. node1")
            return None
        return name

    def domain(self, key, default=REQUIRED):
        value = self.string(key, default, "a domain name")
        if value is None:
            return None
        name = value.lower()
        labels = name.split(".")
        if len(name) > 250 or not all(LABEL.fullmatch(x) for x in labels) or \
                labels[-1].isdigit():
            self.error(key, f"{quote(value)} is not a valid domain name",
                       "use dot-separated lowercase labels, at most 250 characters, "
                       "e.g. project.edu")
            return None
        return name

    def mac(self, key):
        """A NIC's MAC in any common spelling, as six lower-case colon-separated bytes."""
        value = self.string(key, REQUIRED, "a MAC address")
        if value is None:
            return None
        norm = normal_mac(value)
        if norm is None:
            self.error(key, f"{quote(value)} is not a MAC address", MAC_FIX)
            return None
        if int(norm[:2], 16) & 1:
            self.error(key, f"{norm} is a multicast or broadcast address, no NIC has it",
                       "copy the MAC from the PC's label or its PXE boot screen")
            return None
        if norm == "00:00:00:00:00:00":
            self.error(key, f"{norm} is the all-zero placeholder, no NIC has it",
                       "copy the MAC from the PC's label or its PXE boot screen")
            return None
        return norm

    def ifname(self, key, default):
        value = self.string(key, default, "an interface name")
        if value is not None and (not IFNAME.fullmatch(value) or value in RESERVED_IFNAMES):
            self.error(key, f"{quote(value)} is not a valid interface name",
                       "use at most 15 letters, digits, '_', '.' or '-' (not 'all', "
                       "'default' or 'lo')")
            return None
        return value

    def bridge(self, key, default):
        """A bridge name the node creates: not a NIC's or a VLAN interface's name."""
        value = self.ifname(key, default)
        if value is not None and ("." in value or NIC_LIKE.fullmatch(value)):
            self.error(key, f"{quote(value)} is the name of a NIC or VLAN interface, "
                       "which the bridge is built on", "name the bridge itself, e.g. br-man")
            return None
        return value

    def vgname(self, key, default):
        value = self.string(key, default, "a volume group name")
        if value is not None and (not VGNAME.fullmatch(value) or value in (".", "..")):
            self.error(key, f"{quote(value)} is not a valid LVM volume group name",
                       "use letters, digits and + _ . - (the paper uses ganeti)")
            return None
        return value

    def abspath(self, key, default):
        """The absolute path of a file: no shell syntax, no '..', not a directory."""
        value = self.string(key, default, "an absolute path")
        if value is not None and (not PATH.fullmatch(value) or
                                  any(p in (".", "..") for p in value.split("/"))):
            self.error(key, f"{quote(value)} is not the absolute path of a program",
                       "write a path such as /bin/true: letters, digits and _ . + - "
                       "between slashes, no spaces or shell syntax")
            return None
        return value

    def url(self, key, default=None):
        value = self.string(key, default, "a URL")
        if value is None:
            return None
        m = URL.fullmatch(value)
        if not m or not HOST.fullmatch(m["host"]) or \
                (m["port"] and not 0 < int(m["port"]) < 65536):
            self.error(key, f"{quote(value)} is not an http or https URL",
                       "write it as http://host[:port]/path, with a host name or address")
            return None
        return value.rstrip("/")

    def size(self, key, default, low=0, high=sizes.TiB):
        value = self.string(key, default, "a size")
        if value is None:
            return 0
        try:
            n = sizes.parse(value)
        except ValueError:
            self.error(key, f"{quote(value)} is not a size",
                       'write a size such as "10GiB" or "512MiB"')
            return 0
        if n < low:
            self.error(key, f"{sizes.human(n)} is too small", f"use at least {sizes.human(low)}")
        elif n > high:
            self.error(key, f"{sizes.human(n)} is too large",
                       f"use at most {sizes.human(high)}: the rest of the disk goes to the VG")
        return n

    def password_hash(self, key):
        value = self.string(key, None, "a crypt(3) hash")
        if value is not None:
            problem = crypt.problem(value)
            if problem:
                self.error(key, problem, "store only a hash: `mkpasswd -m sha-512` (package "
                           "whois) or `openssl passwd -6` prints one; or \"!\" to lock "
                           "root's password")
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
            self.error(key, f"{quote(value)} is not an IPv4 address", "write it as 192.168.20.222")
            return None

    def network(self, key, default=REQUIRED):
        value = self.string(key, default, "a CIDR network")
        if value is None:
            return None
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as e:
            self.error(key, f"{quote(value)} is not a CIDR network ({quote(str(e))})",
                       "write the network address and prefix, e.g. 192.168.20.0/24")
            return None
        if net.prefixlen > 30:
            self.error(key, f"{net} holds no room for nodes", "use a prefix of /30 or shorter")
            return None
        if net.prefixlen < 8:
            self.error(key, f"{net} is larger than any LAN", "use a prefix of /8 or longer")
            return None
        first = net.network_address
        if first.is_loopback or first.is_multicast or first.is_reserved or \
                first.is_link_local or first in ipaddress.IPv4Network("0.0.0.0/8"):
            self.error(key, f"{net} is a special-purpose range, not a LAN's network",
                       "use your LAN's network, e.g. a private one such as 192.168.20.0/24")
            return None
        return net

    def host_in(self, key, ip, network, gateway=None) -> bool:
        """True when ip is a usable host address of network (not its network, broadcast or
        gateway address); otherwise records why not. Arithmetic only: no host is listed."""
        addr = ipaddress.IPv4Address(ip)
        span = f"use an address from {network[1]} to {network[-2]}"
        if addr not in network:
            self.error(key, f"{ip} is outside the network {network}", span)
        elif addr == network.network_address:
            self.error(key, f"{ip} is the network address of {network}", span)
        elif addr == network.broadcast_address:
            self.error(key, f"{ip} is the broadcast address of {network}", span)
        elif gateway and ip == gateway:
            self.error(key, f"{ip} is the gateway's address", "give the node its own address")
        else:
            return True
        return False

    # -- lists and tables -------------------------------------------------------------------

    def strings(self, key, default, what):
        value = self._get(key, list, default, f"a list of {what}")
        if value is None:
            return []
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            self.error(key, f"expected a list of {what}, found {quote(bad[0])}",
                       f"quote every entry as a string of {what}")
            return []
        return list(value)

    def string_list(self, key, default=REQUIRED):
        names = self.strings(key, default, "names")
        for i, name in enumerate(names):
            if len(name) > 253 or not all(LABEL.fullmatch(x) for x in name.split(".")):
                self.error(f"{key}[{i}]", f"{quote(name)} is not a host name",
                           "use a host name such as 0.debian.pool.ntp.org")
        return names

    def address_list(self, key, default=REQUIRED):
        out = []
        for i, value in enumerate(self.strings(key, default, "IPv4 addresses")):
            try:
                out.append(str(ipaddress.IPv4Address(value)))
            except ValueError:
                self.error(f"{key}[{i}]", f"{quote(value)} is not an IPv4 address",
                           "write it as 192.168.20.1")
        return out

    def ssh_keys(self, key):
        lines = self.strings(key, [], "SSH public keys")
        for i, line in enumerate(lines):
            try:
                sshkeys.parse_authorized(line)
            except ValueError as e:
                self.error(f"{key}[{i}]", f"is not a usable SSH public key line: {e}",
                           "paste one whole line of an id_ed25519.pub, id_ecdsa.pub or "
                           "id_rsa.pub file (type, base64, comment)")
        return [line.strip() for line in lines]

    def table(self, key) -> dict:
        value = self._get(key, dict, {}, "a table")
        return value or {}

    def table_list(self, key) -> list:
        value = self._get(key, list, [], "an array of tables ([[nodes]])")
        if value and not all(isinstance(v, dict) for v in value):
            self.error(key, "entries must be tables", "write each node as a [[nodes]] table")
            return []
        return value or []
