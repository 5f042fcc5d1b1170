"""Property-based: cluster files generated from the README's key table, then mutated in type,
value and text, go through `validate --json` and `render` exactly as the CLI runs them.

Whatever the file: no traceback, no run over 5 s, JSON that parses, no OUTDIR for an
invalid file, and validate and render agree (render succeeds exactly when validate said
valid, and refuses with the same errors otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import re
import shutil
import tempfile
import time

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from installer import cli
from installer.build import pxe
from installer.cluster import keys
from tests.conftest import REPO, example_data

CASES = int(os.environ.get("FUZZ_CASES", 10_000))     # CI runs 10,000; fewer for a quick look
LIMIT_S = 5.0


# -- the README's key table ---------------------------------------------------------------------

def readme_keys() -> list[str]:
    """Every key the README's table in "The cluster file" names, spelled out in full
    (`network.management.vlan` / `.bridge` is two keys; `[[nodes]]` keys are nodes.*)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## The cluster file", 1)[1].split("\n## ", 1)[0]
    out = []
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", row.split(" | ")[0])
        if names[0].startswith("[["):       # an array of tables: [[nodes]] name, mac, ...
            out += [f"{names[0][2:-2]}.{n}" for n in names[1:]]
            continue
        parent = names[0].rsplit(".", 1)[0]
        out += [names[0]] + [parent + n for n in names[1:] if n.startswith(".")]
    return out


def schema_keys(schema=keys.SCHEMA, prefix="") -> list[str]:
    out = []
    for key, spec in schema.items():
        at = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}<name>"   # {str: str}
        if isinstance(spec, dict):
            out += schema_keys(spec, at + ".") if key != "disk" else [at]
        elif isinstance(spec, list) and isinstance(spec[0], dict):
            out += schema_keys(spec[0], at + ".")
        else:
            out.append(at)
    return out


def test_readme_table_names_every_key_of_the_schema():
    assert sorted(readme_keys()) == sorted(schema_keys())


KEYS = readme_keys()
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in KEYS} | {k.split(".")[0] for k in KEYS})


# -- values: plausible ones per key, and hostile ones of any type -------------------------------

BASE = example_data()
KEY = BASE["ssh"]["authorized_keys"][0]
HASH = BASE["root"]["password_hash"]
octet = st.integers(0, 255)
ip = st.one_of(st.sampled_from(["192.168.20.1", "192.168.20.0", "192.168.20.255",
                                "192.168.20.220", "192.168.20.222", "10.99.0.1", "0.0.0.0",
                                "255.255.255.255", "10.99.0.150", "192.168.20.300", ""]),
               st.builds("192.168.20.{}".format, octet),
               st.builds("{}.{}.{}.{}".format, octet, octet, octet, octet))
cidr = st.one_of(st.sampled_from(["192.168.20.0/24", "10.99.0.0/24", "10.0.0.0/8",
                                  "0.0.0.0/0", "10.99.0.0/30", "10.99.0.0/31",
                                  "192.168.20.1/24", "224.0.0.0/4", "10.99.0.0/33"]),
                 st.builds("10.{}.0.0/{}".format, octet, st.integers(0, 32)))
name = st.one_of(st.sampled_from(["node1", "node2", "NODE1", "localhost", "cluster", "n" * 63,
                                  "n" * 64, "-x", "a.b", ""]),
                 st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True))
domain = st.one_of(st.sampled_from(["project.edu", "Project.EDU", "x." * 120 + "edu",
                                    ".".join(["d" * 63] * 3) + ".edu", "a..b", "1.2"]),
                   st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10}){0,3}", fullmatch=True))
mac = st.one_of(st.sampled_from(["52:54:00:20:02:22", "52-54-00-20-02-29", "5254.0020.0230",
                                 "525400200231", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff",
                                 "01:00:5e:00:00:01", "52:54:00:zz:00:01"]),
                st.builds(lambda b: ":".join(f"{x:02x}" for x in b),
                          st.lists(octet, min_size=6, max_size=6)))
ifname = st.sampled_from(["br-man", "br-public", "eth0", "eth0.100", "all", "br man",
                          "b" * 16, "br/man", "", "enp3s0", "br0", "lo"])
size = st.one_of(st.sampled_from(["10GiB", "2G", "512M", "0", "1GiB", "100TiB", "9" * 309,
                                  "1.5GiB", "ten", "-1G", "1e3G"]), st.integers(-5, 1 << 40))
url = st.sampled_from(["http://deb.example/debian", "https://m.example:8443/debian/",
                       "http://-", "ftp://x/debian", "http://x:99999/", "http://[::1]:3142",
                       "http://x:3142/; rm -rf /", "http://a_b/", ""])
path = st.sampled_from(["/bin/true", "/", "/bin/true;reboot", "true", "/bin/../x",
                        "/usr/sbin/drbd helper"])
disk_path = st.sampled_from(["sda", "/dev/sda", "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
                             "/dev/disk/by-id/x y", ""])
hashes = st.sampled_from([HASH, HASH[:-10], "$6$ganeti", "hunter2", "!", "*", "!" + HASH,
                          "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
                          "$1$abc$" + "a" * 22, "$2b$10$" + "a" * 53])
ssh_key = st.sampled_from([KEY, "ssh-rsa " + KEY.split(" ", 1)[1], KEY[:40], "hello",
                           "ssh-dss AAAAB3NzaC1kc3MAAACBAP==", f'from="10.0.0.0/8" {KEY}',
                           f"no-pty,command=\"x y\" {KEY}", KEY + " [[[[", "ssh-ed25519 $(x)"])


def _list(of, max_size=4):
    return st.lists(of, max_size=max_size)


PLAUSIBLE = {
    "name": name, "master": name, "domain": domain, "ip": ip, "gateway": ip, "address": ip,
    "management_address": ip, "cidr": cidr, "mac": mac, "bridge": ifname, "nic": ifname,
    "interface": ifname, "dns": _list(ip), "range": _list(ip, 3), "vlan": st.integers(-1, 5000),
    "http_port": st.sampled_from([8080, 80, 22, 53, 1811, 11000, 0, 65536, 3142]),
    "on_master": st.booleans(), "wipe": st.booleans(),
    "dhcp": st.sampled_from(["server", "proxy", "relay"]),
    "release": st.sampled_from(["bookworm", "trixie", "bullseye", "wheezy", "buster",
                                "BOOKWORM"]),
    "hypervisors": _list(st.sampled_from(["kvm", "fake", "lxc", "kvmm", "xen-pvm"])),
    "method": st.sampled_from(["image", "debootstrap", "pxe"]),
    "initramfs_modules": st.sampled_from(["most", "dep", "mots"]),
    "root": size, "swap": size, "vg": st.sampled_from(["ganeti", "xenvg", "..", "a b", "-"]),
    "disk": st.one_of(st.fixed_dictionaries({"path": disk_path}),
                      st.fixed_dictionaries({"serial": st.sampled_from(["S3Z1NB0K", "", " "])}),
                      st.just({"serial": "a", "wwn": "b"}), st.just({})),
    "minor_count": st.integers(-1, 300), "usermode_helper": path,
    "mirror": url, "security_mirror": url, "proxy": url,
    "servers": _list(st.sampled_from(["0.debian.pool.ntp.org", "ntp", "-x", "a..b"])),
    "authorized_keys": _list(ssh_key, 3), "password_hash": hashes,
    "role": st.sampled_from(["candidate", "regular", "master"]),
    "image": st.sampled_from(["debian", "", "nope", "a+b"]),
    "cdinstall": st.booleans(), "nomount": st.booleans(),
    "arch": st.sampled_from(["x86_64", "amd64", "X86", "", "a/b"]),
    "format": st.sampled_from(["raw", "qcow2", "tarball", "tar", "vmdk"]),
    "build": st.sampled_from(["bookworm", "trixie", "wheezy", "sid", "", "../bookworm"]),
    "file": st.sampled_from(["cluster.toml", "missing.raw", "/dev/zero", "/etc", "",
                             "/proc/self/status", "../x\0y"]),
    "<name>": st.one_of(st.sampled_from(["", "0.0.0.0", "/usr/bin/qemu-system-x86_64"]),
                        st.text(max_size=20)),
    "power": st.one_of(
        st.sampled_from(["wol", "manual", "ipmi", "WOL", ""]),
        st.fixed_dictionaries({"ipmi": st.sampled_from(["192.168.20.50", "bmc1", "-x", ""]),
                               "user": st.sampled_from(["ADMIN", "a b", "u" * 17]),
                               "password_file": st.sampled_from(["/etc/bmc", "pw", "/a/../b"])},
                              optional={"port": st.integers(-1, 70000)})),
}
scalar = st.one_of(
    st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=200),
    st.sampled_from(["\n", "\x1b[2J", "a\nerror: forged", "\u202e", "\x00", "x" * 5000]),
    st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 310), st.booleans(),
    st.floats(), st.datetimes(), st.dates(), st.times())
hostile = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


# -- mutations of the file's data, then of its text ----------------------------------------------

def _locate(data: dict, key: str, n_nodes: int, pick: int):
    """(the table holding key, its last name), with nodes.x pointing into one node."""
    parts = key.split(".")
    if parts[0] == "nodes":
        nodes = data.setdefault("nodes", [])
        if not isinstance(nodes, list) or not nodes or not isinstance(nodes[pick % len(nodes)],
                                                                      dict):
            return None, None
        return nodes[pick % len(nodes)], parts[1]
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return None, None
    return node, parts[-1]


@st.composite
def mutation(draw):
    op = draw(st.sampled_from(["plausible", "plausible", "hostile", "delete", "section",
                               "unknown", "nodes"]))
    key = draw(st.sampled_from(KEYS))
    last = key.rsplit(".", 1)[-1]
    if op == "plausible":
        return op, key, draw(PLAUSIBLE[last])
    if op == "hostile":
        return op, key, draw(hostile)
    if op == "section":
        return op, draw(st.sampled_from(SECTIONS)), draw(hostile)
    if op == "unknown":
        return op, draw(st.sampled_from(SECTIONS + [""])), draw(st.text(min_size=1, max_size=12))
    return op, key, draw(st.integers(0, 7))


def apply(data: dict, change, pick: int) -> None:
    op, key, value = change
    if op in ("plausible", "hostile"):
        table, last = _locate(data, key, 3, pick)
        if table is not None:
            table[last] = value
    elif op == "delete":
        table, last = _locate(data, key, 3, pick)
        if table is not None:
            table.pop(last, None)
    elif op == "section":
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[parts[-1]] = value
    elif op == "unknown":
        table = data
        for part in filter(None, key.split(".")):
            table = table.get(part) if isinstance(table, dict) else None
        if isinstance(table, dict):
            table[value] = 1
    elif op == "nodes" and isinstance(data.get("nodes"), list):
        nodes = data["nodes"]
        if value % 2 and nodes:
            nodes.append(copy.deepcopy(nodes[value % len(nodes)]))     # a duplicate
        elif nodes:
            del nodes[value % len(nodes)]


TEXT_EDITS = ["none", "none", "none", "insert", "delete", "char", "bom", "truncate", "deep",
              "latin1"]


@st.composite
def cluster_file(draw) -> bytes:
    data = copy.deepcopy(BASE)
    data["nodes"] = data["nodes"][:draw(st.integers(1, 2))]    # keeps valid renders quick
    for change in draw(st.lists(mutation(), min_size=2, max_size=4)):
        apply(data, change, draw(st.integers(0, 3)))
    try:
        text = tomli_w.dumps(data).encode()
    except (TypeError, ValueError):        # a value TOML cannot hold: the file as is
        text = tomli_w.dumps(BASE).encode()
    edit = draw(st.sampled_from(TEXT_EDITS))
    at = draw(st.integers(0, max(0, len(text) - 1)))
    if edit == "insert":
        text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    elif edit == "delete":
        text = text[:at] + text[at + draw(st.integers(1, 40)):]
    elif edit == "char":
        text = text[:at] + draw(st.characters()).encode("utf-8", "surrogatepass") + \
            text[at + 1:]
    elif edit == "bom":
        text = b"\xef\xbb\xbf" + text
    elif edit == "truncate":
        text = text[:at]
    elif edit == "deep":
        depth = draw(st.integers(10, 3000))
        text += b"x = " + b"[" * depth + b"]" * depth + b"\n"
    elif edit == "latin1":
        text = text[:at] + b"\xe9" + text[at:]
    return text


# -- running the CLI in-process --------------------------------------------------------------

def run_cli(command, **args) -> tuple[int, str, str]:
    """cli.run as `ganeti-installer` calls it after parsing its arguments (argparse itself
    would cost more than the check)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.run(argparse.Namespace(func=command, **args))
    return code, out.getvalue(), err.getvalue()


def _line(e: dict) -> str:
    where = f"{e['file']}: {e['key']}" if e["key"] else e["file"]
    return f"error: {where}: {e['problem']}; {e['fix']}"


def check(text: bytes, work: str, stats: dict) -> None:
    path, outdir = os.path.join(work, "cluster.toml"), os.path.join(work, "out")
    with open(path, "wb") as f:
        f.write(text)
    start = time.monotonic()
    code, out, err = run_cli(cli.cmd_validate, file=path, json=True)
    report = json.loads(out)                            # JSON, whatever the file held
    assert code in (0, 1) and err == "", (code, err)
    assert report["valid"] is (code == 0)
    r_code, r_out, r_err = run_cli(cli.cmd_render, file=path, outdir=outdir, json=False)
    took = time.monotonic() - start
    assert took < LIMIT_S, f"{took:.1f} s"
    stats["slowest"] = max(stats["slowest"], took)
    assert r_code == code, (report, r_err)             # render fails exactly when validate does
    if code == 0:
        stats["valid"] += 1
        assert os.path.isdir(os.path.join(outdir, "plans"))
        shutil.rmtree(outdir)
    else:
        assert not os.path.exists(outdir), "an invalid file created OUTDIR"
        lines = [x for x in r_err.splitlines() if x.startswith("error: ")]
        assert lines == [_line(e) for e in report["errors"]]
        assert all("\x1b" not in x and len(x) < 4000 for x in lines)
    stats["cases"] += 1


@pytest.fixture
def work(tmp_path):
    """A scratch directory in memory where the system has one: renders make and remove
    thousands of directories, which a journaling disk makes the slowest part of a case."""
    if os.access("/dev/shm", os.W_OK):
        path = tempfile.mkdtemp(prefix="fuzz-", dir="/dev/shm")
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield str(tmp_path)


def test_mutated_cluster_files(work, monkeypatch):
    # The PXE loaders are the build host's files, copied whatever the cluster file says
    # (tests/test_pxe.py covers them); skipping them keeps 10,000 cases to about a minute.
    monkeypatch.setattr(pxe, "install_loaders", lambda outdir: [])
    stats = {"cases": 0, "valid": 0, "slowest": 0.0}

    @settings(max_examples=CASES, deadline=LIMIT_S * 1000, database=None,
              suppress_health_check=list(HealthCheck))
    @given(cluster_file())
    def run(text):
        check(text, work, stats)

    run()
    print(f"\n{stats['cases']} cases, {stats['valid']} valid, slowest {stats['slowest']:.2f} s")
    assert stats["cases"] >= CASES
    assert stats["valid"] > 0        # the generator reaches valid files too
