"""Every validation error names the file, the key and the fix, and nothing is written."""

from __future__ import annotations

import os

import pytest
import tomli_w

from installer import cli
from tests.conftest import example_data, set_key


def _write(tmp_path, data: dict, name="cluster.toml") -> str:
    path = tmp_path / name
    path.write_bytes(tomli_w.dumps(data).encode())
    return str(path)


_set = set_key


def _del(data: dict, key: str):
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]


# (what is changed, the key the error must name, words the message must contain)
CASES = [
    ("nodes[1].mac", "52:54:00:zz:02:23", "nodes[1].mac", "is not a MAC address"),
    ("nodes[1].mac", "52-54-00-20-02", "nodes[1].mac", "write six hex bytes"),
    ("nodes[1].mac", "01:00:5e:00:00:01", "nodes[1].mac", "multicast"),
    ("nodes[2].mac", "52:54:00:20:02:22", "nodes[2].mac", "also nodes[0] (node1)'s"),
    ("nodes[2].name", "node1", "nodes[2].name", "name node1 is also nodes[0]"),
    ("nodes[2].ip", "192.168.20.222", "nodes[2].ip", "ip 192.168.20.222 is also nodes[0]"),
    ("nodes[2].ip", "192.168.21.5", "nodes[2].ip", "outside the network 192.168.20.0/24"),
    ("nodes[2].ip", "192.168.20.0", "nodes[2].ip", "network address"),
    ("nodes[2].ip", "192.168.20.255", "nodes[2].ip", "broadcast address"),
    ("nodes[2].ip", "192.168.20.1", "nodes[2].ip", "gateway's address"),
    ("nodes[2].ip", "192.168.20.300", "nodes[2].ip", "not an IPv4 address"),
    ("nodes[0].name", "Node_1", "nodes[0].name", "not a valid host name"),
    ("nodes[0].name", "node1.project.edu", "nodes[0].name", "no dots"),
    ("cluster.domain", "project..edu", "cluster.domain", "not a valid domain name"),
    ("cluster.domain", "-bad.edu", "cluster.domain", "not a valid domain name"),
    ("network.management.vlan", 0, "network.management.vlan", "outside 1-4094"),
    ("network.public.vlan", 4095, "network.public.vlan", "outside 1-4094"),
    ("network.public.vlan", 100, "network.public.vlan", "also the management VLAN"),
    ("network.management.vlan", "100", "network.management.vlan", "expected a whole number"),
    ("cluster.release", "buster", "cluster.release", "unknown release 'buster'"),
    ("cluster.release", "bookwrom", "cluster.release", "did you mean 'bookworm'"),
    ("cluster.master", "node9", "cluster.master", "'node9' is not among the nodes"),
    ("root.password_hash", "ganeti", "root.password_hash", "plaintext password"),
    ("cluster.ip", "192.168.20.223", "cluster.ip", "also nodes[1].ip"),
    ("network.management.cidr", "192.168.20.1/24", "network.management.cidr",
     "not a CIDR network"),
    ("network.management.gateway", "10.0.0.1", "network.management.gateway", "outside"),
    ("storage.root", "ten", "storage.root", "not a size"),
    ("storage.root", "1GiB", "storage.root", "too small"),
    ("drbd.minor_count", 0, "drbd.minor_count", "outside 1-255"),
    ("drbd.usermode_helper", "true", "drbd.usermode_helper", "not the absolute path"),
    ("apt.mirror", "ftp://x/debian", "apt.mirror", "not an http or https URL"),
    ("apt.proxy", "http://x:3142/; rm -rf /", "apt.proxy", "not an http or https URL"),
    ("ssh.authorized_keys", ["hello"], "ssh.authorized_keys[0]", "not a usable SSH public key"),
    ("network.provisioning.dhcp", "relay", "network.provisioning.dhcp", "not one of server"),
    ("network.provisioning.range", ["10.99.0.1", "10.99.0.9"], "network.provisioning.range",
     "holds the server's own address"),
    ("network.provisioning.nic", "averyveryverylongnicname", "network.provisioning.nic",
     "not a valid interface name"),
    ("cluster.hypervisors", ["kvmm"], "cluster.hypervisors[0]", "did you mean 'kvm'"),
    ("install.initramfs_modules", "mots", "install.initramfs_modules", "did you mean 'most'"),
    ("cluster.relase", "bookworm", "cluster.relase", "did you mean 'release'"),
    ("storage.vgname", "ganeti", "storage.vgname", "did you mean 'vg'"),
    ("nodes[0].adress", "x", "nodes[0].adress", "unknown key"),
    ("netwrok", {}, "netwrok", "did you mean 'network'"),
]


@pytest.mark.parametrize("key,value,where,words", CASES, ids=[f"{c[0]}={c[1]}" for c in CASES])
def test_error_names_file_key_and_fix_and_writes_nothing(tmp_path, capsys, key, value, where,
                                                         words):
    data = example_data()
    _set(data, key, value)
    path = _write(tmp_path, data)
    outdir = tmp_path / "out"
    assert cli.main(["render", path, str(outdir)]) == 1
    err = capsys.readouterr().err
    line = next((ln for ln in err.splitlines() if ln.startswith(f"error: {path}: {where}: ")),
                None)
    assert line is not None, err
    assert words in line, line
    assert "; " in line  # the fix follows the problem
    assert "nothing was written" in err
    assert not outdir.exists()


def test_all_errors_at_once(tmp_path, capsys):
    data = example_data()
    _set(data, "nodes[1].mac", "nope")
    _set(data, "nodes[2].ip", "10.1.1.1")
    _set(data, "cluster.release", "potato")
    path = _write(tmp_path, data)
    assert cli.main(["validate", path]) == 1
    err = capsys.readouterr().err
    for key in ("nodes[1].mac", "nodes[2].ip", "cluster.release"):
        assert f"{path}: {key}: " in err
    assert "3 error(s)" in err


def test_missing_required_keys(tmp_path, capsys):
    data = example_data()
    _del(data, "cluster.domain")
    del data["nodes"][0]["mac"]
    path = _write(tmp_path, data)
    assert cli.main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}: cluster.domain: missing; add domain = " in err
    assert f"{path}: nodes[0].mac: missing; add mac = " in err


def test_no_nodes(tmp_path, capsys):
    data = example_data()
    del data["nodes"]
    del data["cluster"]["master"]
    path = _write(tmp_path, data)
    assert cli.main(["validate", path]) == 1
    assert f"{path}: nodes: the cluster has no nodes" in capsys.readouterr().err


def test_wheezy_without_mirror_names_the_setting(tmp_path, capsys):
    data = example_data("paper-wheezy.toml")
    del data["apt"]["mirror"]
    path = _write(tmp_path, data)
    assert cli.main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}: apt.mirror: wheezy is only on Debian's archive mirror" in err
    assert "set apt.mirror" in err


def test_toml_syntax_error_names_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[cluster]\nname = "x\n')
    assert cli.main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: not valid TOML" in err and "line 2" in err


def test_missing_file(tmp_path, capsys):
    assert cli.main(["render", str(tmp_path / "nope.toml"), str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_json_errors(tmp_path, capsys):
    import json
    data = example_data()
    _set(data, "nodes[1].mac", "nope")
    path = _write(tmp_path, data)
    assert cli.main(["validate", "--json", path]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert out["errors"][0]["key"] == "nodes[1].mac"
    assert out["errors"][0]["file"] == path


@pytest.mark.parametrize("example", ["cluster.toml", "paper-wheezy.toml"])
def test_examples_are_valid(example, capsys):
    path = os.path.join(os.path.dirname(__file__), "..", "examples", example)
    assert cli.main(["validate", path]) == 0
    assert "valid" in capsys.readouterr().out
