"""The cluster file under careless and hostile input (issue 14): every refusal names the file,
the key, what is wrong and the fix; nothing hangs, nothing is written, no traceback."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import tomli_w

from installer import cli
from installer.cluster import config, errors, source
from tests.conftest import DROP, REPO, example_data, example_path, fixed_mirror, set_key

KEY = example_data()["ssh"]["authorized_keys"][0]
HASH = example_data()["root"]["password_hash"]


def _write(tmp_path, data: dict, name="cluster.toml") -> str:
    path = tmp_path / name
    path.write_bytes(tomli_w.dumps(data).encode())
    return str(path)


_set = set_key


def _refused(tmp_path, capsys, path: str) -> list[str]:
    """The error lines of `render PATH OUTDIR`, after checking that it wrote nothing and that
    `validate --json` reports the same errors as parseable JSON."""
    outdir = tmp_path / "out"
    assert cli.main(["render", path, str(outdir)]) == 1
    err = capsys.readouterr().err
    assert not outdir.exists()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines and f"{len(lines)} error(s) in {path}; nothing was written." in err, err
    assert cli.main(["validate", "--json", path]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert [f"error: {_line(e)}" for e in report["errors"]] == lines
    return lines


def _line(e: dict) -> str:
    where = f"{e['file']}: {e['key']}" if e["key"] else e["file"]
    return f"{where}: {e['problem']}; {e['fix']}"


def _error(tmp_path, capsys, changes: dict, key: str, words: str, fix: str = "") -> str:
    """Apply changes to the example, and return the one error line for key, which must hold
    words (what is wrong) and fix (after the '; ')."""
    data = example_data()
    for k, v in changes.items():
        _set(data, k, v)
    path = _write(tmp_path, data)
    lines = _refused(tmp_path, capsys, path)
    line = next((x for x in lines if x.startswith(f"error: {path}: {key}: ")), None)
    assert line is not None, "\n".join(lines)
    problem, _, advice = line.partition("; ")
    assert words in problem, line
    assert advice and fix in advice, line
    return line


# -- reading the file: no traceback, no hang, no memory eaten --------------------------------

def _file_error(capsys, path: str, words: str, fix: str = "") -> str:
    start = time.monotonic()
    assert cli.main(["validate", path]) == 1
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert f"error: {path}: {words}" in err, err
    assert fix in err.partition("; ")[2], err
    assert cli.main(["validate", "--json", path]) == 1
    assert words in json.loads(capsys.readouterr().out)["errors"][0]["problem"]
    return err


def test_latin1_comment_names_line_and_column(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[cluster]\nname = "c" # caf\xe9\n')
    _file_error(capsys, str(path), "is not UTF-8: byte 0xe9 at line 2, column 17", "iconv")


def test_utf16_file_is_named_as_such(tmp_path, capsys):
    path = tmp_path / "utf16.toml"
    path.write_bytes('[cluster]\nname = "c"\n'.encode("utf-16"))
    _file_error(capsys, str(path), "is UTF-16 text", "save it as UTF-8")


def test_binary_file(tmp_path, capsys):
    path = tmp_path / "binary.toml"
    path.write_bytes(bytes(range(256)) * 4)
    _file_error(capsys, str(path), "is not UTF-8: byte 0x80 at line 2", "save the file as UTF-8")


def test_directory(tmp_path, capsys):
    _file_error(capsys, str(tmp_path), "is a directory, not a file", "give the path of a cluster")


def test_trailing_slash_after_a_file(tmp_path, capsys):
    path = _write(tmp_path, example_data())
    _file_error(capsys, path + "/", "a part of the path is a file", "remove a trailing /")


def test_symlink_loop(tmp_path, capsys):
    os.symlink(tmp_path / "b.toml", tmp_path / "a.toml")
    os.symlink(tmp_path / "a.toml", tmp_path / "b.toml")
    _file_error(capsys, str(tmp_path / "a.toml"), "the path is a loop of symbolic links")


def test_dev_zero_is_refused_at_once(capsys):
    _file_error(capsys, "/dev/zero", "is a character device, not a file")


def test_fifo_does_not_block(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.toml")
    _file_error(capsys, str(tmp_path / "fifo.toml"), "is a FIFO (named pipe), not a file")


def test_file_over_the_size_cap(tmp_path, capsys):
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# " + b"x" * source.MAX_BYTES + b"\n")
    _file_error(capsys, str(path), "is larger than 1 MiB", "check that this is the cluster file")


def test_proc_file_reporting_size_zero_is_capped(capsys):
    # /proc files say size 0 whatever they hold: the cap counts what is read.
    start = time.monotonic()
    assert cli.main(["validate", "/proc/self/maps"]) == 1
    assert time.monotonic() - start < 5
    assert "error: /proc/self/maps: " in capsys.readouterr().err


def test_array_nested_5000_deep(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    _file_error(capsys, str(path), "brackets nest more than 16 deep (line 1)", "close the")


def test_brackets_inside_strings_do_not_count(tmp_path):
    data = _set(example_data(), "ssh.authorized_keys", [KEY + " [" * 40])
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data) + "# " + "[" * 100 + "\n")
    assert config.load(str(path), host_mirror_fn=fixed_mirror).authorized_keys == (KEY + " [" * 40,)


def test_integer_of_5000_digits(tmp_path, capsys):
    path = tmp_path / "digits.toml"
    path.write_text("[drbd]\nminor_count = " + "9" * 5000 + "\n")
    _file_error(capsys, str(path), "holds a number of thousands of digits")


@pytest.mark.integration      # runs Python as another user (setpriv, as root)
def test_unreadable_file_as_another_user(tmp_path):
    path = tmp_path / "secret.toml"
    path.write_text("x = 1\n")
    path.chmod(0)
    tmp_path.chmod(0o755)
    tmp_path.parent.chmod(0o755)
    code = (f"from installer.cluster import config\ntry:\n    config.load({str(path)!r})\n"
            "except Exception as e:\n    print(e)\n")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          "/usr/bin/python3", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": REPO}, cwd="/", timeout=30)
    assert f"{path}: cannot be read: permission denied; make it readable" in out.stdout, out


def test_missing_file(tmp_path, capsys):
    _file_error(capsys, str(tmp_path / "nope.toml"), "no such file", "examples/cluster.toml")


# -- sections and values of the wrong type ----------------------------------------------------

@pytest.mark.parametrize("section,value", [
    ("drbd", "yes"), ("ssh", 1), ("storage", [1, 2]), ("network", "x"), ("cluster", 5),
    ("network.management", True), ("storage.disk", "/dev/sda"), ("nodes", {"name": "x"}),
])
def test_section_of_the_wrong_type_is_an_error(tmp_path, capsys, section, value):
    data = _set(example_data(), section, value)
    lines = _refused(tmp_path, capsys, _write(tmp_path, data))
    assert len(lines) == 1, lines          # nothing under it reported missing
    assert f": {section}: expected " in lines[0] and "got " in lines[0], lines
    assert "; write " in lines[0]


def test_cluster_5_does_not_claim_domain_missing(tmp_path, capsys):
    lines = _refused(tmp_path, capsys, _write(tmp_path, _set(example_data(), "cluster", 5)))
    assert not any("missing" in line for line in lines), lines
    assert "cluster: expected a table, got a whole number 5; write [cluster] on a line" \
        in lines[0]


def test_node_table_of_the_wrong_type_keeps_other_indices(tmp_path, capsys):
    data = example_data()
    data["nodes"][1] = "node2"
    data["nodes"][2]["mac"] = "nope"
    lines = _refused(tmp_path, capsys, _write(tmp_path, data))
    assert any(": nodes[1]: expected a table, got a string 'node2'" in x for x in lines)
    assert any(": nodes[2].mac: 'nope' is not a MAC address" in x for x in lines)
    assert len(lines) == 2, lines


@pytest.mark.parametrize("key,value,words", [
    ("storage.swap", 2, 'a size is a string with its unit: write swap = "2GiB"'),
    ("storage.root", 10.5, 'write root = "10GiB"'),
    ("network.management.vlan", "100", "write vlan = <a whole number>, without quotes"),
    ("storage.wipe", "yes", "write wipe = <true or false>"),
    ("cluster.hypervisors", "kvm", 'write hypervisors = ["…", "…"]'),
    ("ntp.servers", [1, "ntp.example"], 'quote every entry: servers = ["…", "…"]'),
])
def test_value_of_the_wrong_type(tmp_path, capsys, key, value, words):
    where = key + ("[0]" if isinstance(value, list) else "")
    line = _error(tmp_path, capsys, {key: value}, where, "expected ")
    assert words in line


@pytest.mark.parametrize("name,value,words", [
    ("kvm_path", "/usr/bin/x,y", "cannot be given to gnt-cluster modify -H"),
    ("kvm_path", "-enable-kvm", "cannot be given to gnt-cluster modify -H"),
    ("Bad-Name", "x", "is not a Ganeti kvm parameter name"),
])
def test_kvm_parameter_that_ganeti_cannot_take(tmp_path, capsys, name, value, words):
    line = _error(tmp_path, capsys, {f"hypervisor.kvm.{name}": value},
                  f"hypervisor.kvm.{name}", words)
    assert "gnt-cluster info" in line or "no comma" in line


def test_kvm_parameters_need_kvm(tmp_path, capsys):
    _error(tmp_path, capsys, {"cluster.hypervisors": ["fake"],
                              "hypervisor.kvm.kvm_path": "/usr/bin/qemu-system-x86_64"},
           "hypervisor.kvm", "kvm is not in cluster.hypervisors", 'add "kvm"')


def test_kvm_parameter_of_the_wrong_type(tmp_path, capsys):
    _error(tmp_path, capsys, {"hypervisor.kvm.kvm_path": 5}, "hypervisor.kvm.kvm_path",
           "expected a string")


def test_size_bound_and_overflow(tmp_path, capsys):
    _error(tmp_path, capsys, {"storage.root": "100TiB"}, "storage.root", "100 TiB is too large",
           "use at most 1 TiB")
    _error(tmp_path, capsys, {"storage.root": "9" * 309}, "storage.root", "is not a size",
           '"10GiB"')


# -- messages quote values escaped and short --------------------------------------------------

def test_newline_in_a_value_cannot_forge_an_error_line(tmp_path, capsys):
    line = _error(tmp_path, capsys,
                  {"nodes[0].name": "x\nerror: cluster.toml: all good"},
                  "nodes[0].name", r"'x\nerror: cluster.toml: all good'")
    assert "\n" not in line


def test_escape_sequence_is_shown_not_sent(tmp_path, capsys):
    data = _set(example_data(), "cluster.release", "\x1b[2J\x1b[Hbookworm\u202e")
    path = _write(tmp_path, data)
    assert cli.main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err
    assert r"unknown release '\x1b[2J\x1b[Hbookworm\u202e'" in err


def test_long_value_is_shortened(tmp_path, capsys):
    data = _set(example_data(), "cluster.domain", "a" * 900_000)
    path = _write(tmp_path, data)
    assert cli.main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert "'" + "a" * 60 + "…'" in err
    assert len(err) < 2000


def test_unknown_key_with_control_characters(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(example_data()) + '\n[apt]\n"mir\\nror\\u001b[2J" = "x"\n')
    _refused(tmp_path, capsys, str(path))
    # the [apt] table is defined twice: that TOML error is what is reported, escaped
    path.write_text(tomli_w.dumps(_set(example_data(), "apt", {"mir\nror\x1b[2J" + "r" * 500: 1})))
    lines = _refused(tmp_path, capsys, str(path))
    shown = ("mir\nror\x1b[2J" + "r" * 500)[:60]
    assert f"apt.{errors.escape(shown)}…: unknown key" in lines[0], lines
    assert "\x1b" not in lines[0]


# -- networks: arithmetic, not enumeration ----------------------------------------------------

@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "0.0.0.0/0"])
def test_huge_provisioning_network_is_instant(tmp_path, capsys, cidr):
    data = _set(example_data(), "network.provisioning.cidr", cidr)
    _set(data, "network.provisioning.range", DROP)
    path = _write(tmp_path, data)
    start = time.monotonic()
    cli.main(["validate", path])
    assert time.monotonic() - start < 2
    capsys.readouterr()


def test_slash_8_network_gets_the_upper_half_as_range():
    data = _set(example_data(), "network.provisioning.cidr", "10.0.0.0/8")
    _set(data, "network.provisioning.range", DROP)
    cluster = config.parse(data, "c.toml", host_mirror_fn=fixed_mirror)
    assert cluster.provisioning.range == ("10.128.0.0", "10.255.255.254")


def test_slash_0_is_refused_once(tmp_path, capsys):
    data = _set(example_data(), "network.provisioning.cidr", "0.0.0.0/0")
    _set(data, "network.provisioning.range", DROP)
    lines = _refused(tmp_path, capsys, _write(tmp_path, data))
    assert len(lines) == 1, lines       # no default range is made up, and blamed, without it
    assert ": network.provisioning.cidr: 0.0.0.0/0 is larger than any LAN; use a prefix of " \
        "/8 or longer" in lines[0]


def test_slash_30_without_range_is_valid_and_ranges_over_its_last_host():
    data = _set(example_data(), "network.provisioning.cidr", "10.99.0.0/30")
    _set(data, "network.provisioning.range", DROP)
    cluster = config.parse(data, "c.toml", host_mirror_fn=fixed_mirror)
    assert cluster.provisioning.range == ("10.99.0.2", "10.99.0.2")


def test_slash_30_range_holding_the_server_suggests_an_address_of_that_network(tmp_path, capsys):
    _error(tmp_path, capsys, {"network.provisioning.cidr": "10.99.0.0/30",
                              "network.provisioning.address": "10.99.0.2",
                              "network.provisioning.range": DROP},
           "network.provisioning.range", "holds the server's own address 10.99.0.2",
           'address = "10.99.0.1"')


# -- render: OUTDIR checked first; validate runs every check render does -----------------------

def _outdir_refused(tmp_path, capsys, outdir: str, words: str) -> None:
    path = _write(tmp_path, example_data())
    before = sorted(os.listdir(tmp_path))
    assert cli.main(["render", path, outdir]) == 1
    err = capsys.readouterr().err
    assert f"error: OUTDIR {outdir}" in err and words in err, err
    assert sorted(os.listdir(tmp_path)) == before         # no stage, no OUTDIR
    assert cli.main(["render", "--json", path, outdir]) == 1
    assert words in json.loads(capsys.readouterr().out)["errors"][0]["problem"]


def test_render_into_a_regular_file(tmp_path, capsys):
    (tmp_path / "out").write_text("mine")
    _outdir_refused(tmp_path, capsys, str(tmp_path / "out"), "is not a directory")
    assert (tmp_path / "out").read_text() == "mine"


def test_render_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    _outdir_refused(tmp_path, capsys, str(tmp_path / "file" / "out"),
                    f"lies under {tmp_path / 'file'}, which is not a directory")


def test_render_under_proc(tmp_path, capsys):
    _outdir_refused(tmp_path, capsys, "/proc/ganeti-out", "kernel's proc file system")
    assert not os.path.exists("/proc/ganeti-out")


def test_fqdn_over_253_is_refused_by_validate(tmp_path, capsys):
    # The plan schema refused this at render while validate said valid.
    domain = ".".join(["d" * 63] * 3) + ".edu"          # 195 characters
    _error(tmp_path, capsys, {"nodes[0].name": "n" * 63, "cluster.domain": domain},
           "nodes[0].name", "is longer than 253 characters", "shorter node name or domain")


def test_json_on_an_unexpected_failure(tmp_path, capsys, monkeypatch):
    def broken(path, **kw):
        raise RuntimeError("boom")
    monkeypatch.setattr(config, "load", broken)
    assert cli.main(["validate", "--json", example_path("cluster.toml")]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert "internal error (RuntimeError: boom)" in out["errors"][0]["problem"]


@pytest.mark.allow_subprocess
def test_cli_as_a_process_prints_json_for_a_directory(tmp_path):
    out = subprocess.run([sys.executable, "-m", "installer.cli", "validate", "--json",
                          str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 1 and out.stderr == ""
    assert json.loads(out.stdout)["errors"][0]["problem"] == "is a directory, not a file"


# -- accepted, though an admin would refuse them ------------------------------------------------

P = "network.provisioning"
M = "network.management"
SEPARATE = {f"{P}.on_master": False}
CASES = {
    "reversed_dhcp_range": ({f"{P}.range": ["10.99.0.199", "10.99.0.100"]}, f"{P}.range",
                            "runs backwards", 'range = ["10.99.0.100", "10.99.0.199"]'),
    "gateway_on_network_address": ({f"{M}.gateway": "192.168.20.0"}, f"{M}.gateway",
                                   "network address of 192.168.20.0/24", "192.168.20.1 to"),
    "gateway_on_broadcast_address": ({f"{M}.gateway": "192.168.20.255"}, f"{M}.gateway",
                                     "broadcast address", "192.168.20.254"),
    "dns_empty": ({f"{M}.dns": []}, f"{M}.dns", "names no DNS server", 'dns = ["'),
    "dns_unspecified": ({f"{M}.dns": ["0.0.0.0"]}, f"{M}.dns[0]", "0.0.0.0 is not a DNS",
                        "DNS server the nodes can reach"),
    "dns_broadcast": ({f"{M}.dns": ["255.255.255.255"]}, f"{M}.dns[0]", "not a DNS", "reach"),
    "management_address_is_gateway": (
        {**SEPARATE, f"{P}.management_address": "192.168.20.1"}, f"{P}.management_address",
        "gateway's address", "own address"),
    "management_address_is_cluster_ip": (
        {**SEPARATE, f"{P}.management_address": "192.168.20.220"}, f"{P}.management_address",
        "also cluster.ip", "an address of its own"),
    "provisioning_cidr_is_management_cidr": (
        {f"{P}.cidr": "192.168.20.0/24", f"{P}.address": "192.168.20.250",
         f"{P}.range": ["192.168.20.100", "192.168.20.199"]}, f"{P}.cidr",
        "is the management network", "a network of its own"),
    "provisioning_cidr_overlaps_management": (
        {f"{P}.cidr": "192.168.0.0/16", f"{P}.address": "192.168.30.1",
         f"{P}.range": ["192.168.40.1", "192.168.40.99"]}, f"{P}.cidr",
        "overlaps the management network", "10.99.0.0/24"),
    "provisioning_address_is_a_node_ip": (
        {f"{P}.cidr": "192.168.20.0/24", f"{P}.address": "192.168.20.222",
         f"{P}.range": ["192.168.20.100", "192.168.20.199"]}, "nodes[0].ip",
        "also network.provisioning.address", "a management address of its own"),
    "mac_all_zero": ({"nodes[1].mac": "00:00:00:00:00:00"}, "nodes[1].mac", "all-zero",
                     "PXE boot screen"),
    "mac_broadcast": ({"nodes[1].mac": "ff:ff:ff:ff:ff:ff"}, "nodes[1].mac",
                      "multicast or broadcast", "PXE boot screen"),
    "mac_multicast": ({"nodes[1].mac": "01-00-5e-00-00-01"}, "nodes[1].mac",
                      "01:00:5e:00:00:01 is a multicast", "label"),
    "node_named_localhost": ({"nodes[1].name": "localhost"}, "nodes[1].name",
                             "'localhost' names every machine", "a name of its own"),
    "node_named_like_the_cluster": ({"nodes[1].name": "cluster"}, "nodes[1].name",
                                    "also cluster.name", "different names"),
    "regular_role_on_the_master": ({"nodes[0].role": "regular"}, "nodes[0].role",
                                   "must never be master", "name another node"),
    "bridge_eth0": ({f"{M}.bridge": "eth0"}, f"{M}.bridge", "name of a NIC or VLAN",
                    "e.g. br-man"),
    "bridge_vlan_interface": ({f"{M}.bridge": "eth0.100"}, f"{M}.bridge",
                              "name of a NIC or VLAN", "br-man"),
    "bridge_all": ({"network.public.bridge": "all"}, "network.public.bridge",
                   "not a valid interface name", "not 'all'"),
    "bridge_enp3s0": ({"network.public.bridge": "enp3s0"}, "network.public.bridge",
                      "name of a NIC", "br-man"),
    "http_port_22": ({f"{P}.http_port": 22}, f"{P}.http_port", "well-known service's port",
                     "use 80 or a port from 1024 up"),
    "http_port_53": ({f"{P}.http_port": 53}, f"{P}.http_port", "well-known", "8080"),
    "http_port_ganeti_noded": ({f"{P}.http_port": 1811}, f"{P}.http_port",
                               "taken on the master by ganeti-noded", "8080"),
    "http_port_drbd": ({f"{P}.http_port": 11000}, f"{P}.http_port", "DRBD ports", "8080"),
    "duplicate_hypervisors": ({"cluster.hypervisors": ["kvm", "fake", "kvm"]},
                              "cluster.hypervisors[2]", "kvm is named twice", "once"),
    "ntp_servers_empty": ({"ntp.servers": []}, "ntp.servers", "names no NTP server",
                          "leave the key out"),
    "disk_path_sda": ({"storage.disk": {"path": "sda"}}, "storage.disk.path",
                      "not a stable disk name", "/dev/disk/by-path/"),
    "disk_path_dev_sda": ({"storage.disk": {"path": "/dev/sda"}}, "storage.disk.path",
                          "change between boots", "/dev/disk/by-id/"),
    "usermode_helper_root": ({"drbd.usermode_helper": "/"}, "drbd.usermode_helper",
                             "not the absolute path of a program", "/bin/true"),
    "usermode_helper_shell": ({"drbd.usermode_helper": "/bin/true;reboot"},
                              "drbd.usermode_helper", "'/bin/true;reboot' is not",
                              "no spaces or shell syntax"),
    "usermode_helper_dotdot": ({"drbd.usermode_helper": "/bin/../sbin/reboot"},
                               "drbd.usermode_helper", "not the absolute path", "/bin/true"),
    "apt_mirror_dash_host": ({"apt.mirror": "http://-"}, "apt.mirror",
                             "not an http or https URL", "host name or address"),
    "apt_mirror_bad_port": ({"apt.mirror": "http://deb.example:99999/debian"}, "apt.mirror",
                            "not an http or https URL", "http://host[:port]/path"),
    "hash_plaintext_after_prefix": ({"root.password_hash": "$6$ganeti"}, "root.password_hash",
                                    "starts like a sha512crypt ($6$) hash", "openssl passwd -6"),
    "hash_truncated": ({"root.password_hash": HASH[:-10]}, "root.password_hash",
                       "salt or hash field has the wrong length", "mkpasswd"),
    "hash_plaintext": ({"root.password_hash": "hunter2"}, "root.password_hash",
                       "plaintext password", "mkpasswd"),
    "ssh_key_truncated": ({"ssh.authorized_keys": [
        "ssh-ed25519 " + base64.b64encode(base64.b64decode(KEY.split()[1])[:40]).decode()]},
        "ssh.authorized_keys[0]", "the ssh-ed25519 key is truncated", "id_ed25519.pub"),
    "ssh_key_mislabelled": ({"ssh.authorized_keys": ["ssh-rsa " + KEY.split(" ", 1)[1]]},
                            "ssh.authorized_keys[0]", "does not hold a ssh-rsa key",
                            "one whole line"),
    "ssh_dss": ({"ssh.authorized_keys": ["ssh-dss AAAAB3NzaC1kc3MAAACBAP== me@x"]},
                "ssh.authorized_keys[0]", "DSA (ssh-dss) keys are refused", "id_ed25519.pub"),
    "ssh_key_comment_with_a_newline": ({"ssh.authorized_keys": [" ".join(KEY.split()[:2])
                                                                + " me\x1b[2J@x"]},
                                       "ssh.authorized_keys[0]", "control character",
                                       "id_ed25519.pub"),
    "swap_bare_number": ({"storage.swap": 2}, "storage.swap", "expected a string, got a whole "
                         "number 2", 'swap = "2GiB"'),
    "root_without_bound": ({"storage.root": "100TiB"}, "storage.root", "too large", "1 TiB"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_accepted_but_wrong_is_refused(tmp_path, capsys, case):
    changes, key, words, fix = CASES[case]
    _error(tmp_path, capsys, changes, key, words, fix)


@pytest.mark.parametrize("bridge", ["br man", "b" * 16, "br/man", 5, ""])
def test_invalid_bridge_is_an_error_not_a_traceback(tmp_path, capsys, bridge):
    _error(tmp_path, capsys, {f"{M}.bridge": bridge}, f"{M}.bridge", "", "")


# -- debatable: accepted (README, "The cluster file") -------------------------------------------

def _loaded(tmp_path, changes: dict, text_prefix: bytes = b"") -> config.Cluster:
    data = example_data()
    for k, v in changes.items():
        _set(data, k, v)
    path = tmp_path / "c.toml"
    path.write_bytes(text_prefix + tomli_w.dumps(data).encode())
    return config.load(str(path), host_mirror_fn=fixed_mirror)


def test_uppercase_names_are_lowercased(tmp_path):
    cluster = _loaded(tmp_path, {"nodes[0].name": "NODE1", "cluster.master": "Node1",
                                 "cluster.domain": "Project.EDU"})
    assert cluster.nodes[0].fqdn == "node1.project.edu"
    assert cluster.master == "node1"


@pytest.mark.parametrize("form", ["52-54-00-20-02-22", "5254.0020.0222", "525400200222",
                                  "52:54:00:20:02:22", "52:54:00:20:02:22 "])
def test_mac_forms_are_normalised(tmp_path, form):
    assert _loaded(tmp_path, {"nodes[0].mac": form.upper()}).nodes[0].mac == "52:54:00:20:02:22"


def test_authorized_key_with_options(tmp_path):
    line = 'from="10.0.0.0/8,192.168.20.0/24",no-pty,command="echo a b" ' + KEY
    assert _loaded(tmp_path, {"ssh.authorized_keys": [line]}).authorized_keys == (line,)


def test_authorized_key_comment_in_any_language(tmp_path):
    line = " ".join(KEY.split()[:2]) + " José Müller\t(laptop)"
    assert _loaded(tmp_path, {"ssh.authorized_keys": [line]}).authorized_keys == (line,)


def test_utf8_bom(tmp_path):
    assert _loaded(tmp_path, {}, text_prefix=b"\xef\xbb\xbf").name == "cluster"


def test_yescrypt_and_locked_hashes(tmp_path):
    yescrypt = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
    for value in (yescrypt, "!", "*", "!" + HASH):
        assert _loaded(tmp_path, {"root.password_hash": value}).root_password_hash == value


@pytest.mark.integration      # copies the build host's PXE loaders
def test_render_still_renders_the_example(tmp_path, capsys):
    out = tmp_path / "new" / "out"
    assert cli.main(["render", example_path("cluster.toml"), str(out)]) == 0
    assert (out / "plans" / "node1.json").is_file()
    capsys.readouterr()
    shutil.rmtree(out)


def test_an_invalid_on_master_is_reported_once(tmp_path, capsys):
    data = _set(example_data(), f"{P}.on_master", "no")
    lines = _refused(tmp_path, capsys, _write(tmp_path, data))
    assert len(lines) == 1 and "on_master: expected true or false, got a string 'no'" in lines[0]


def test_a_bad_management_network_is_reported_once(tmp_path, capsys):
    data = _set(example_data(), f"{M}.cidr", "192.168.20.1/24")
    lines = _refused(tmp_path, capsys, _write(tmp_path, data))
    assert len(lines) == 1 and f": {M}.cidr: '192.168.20.1/24' is not a CIDR network" in lines[0]
