"""`ganeti-installer power` (issue 16): the cluster file's power key, refused with its fix
when wrong; Wake-on-LAN as a PC on the provisioning LAN receives it (two network namespaces
the test makes); IPMI against OpenIPMI's simulated BMC, with the password on no command
line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import tomli_w

from installer import cli
from installer.cluster import config
from installer.cluster.errors import ConfigInvalid
from installer.master import power
from tests.conftest import REPO, cluster_from, example_data

MAC = "52:54:00:20:02:22"       # node1 of the example
PASSWORD = "s3cret-Bmc-pw"


def with_power(**by_node) -> dict:
    data = example_data()
    for node in data["nodes"]:
        if node["name"] in by_node:
            node["power"] = by_node[node["name"]]
    return data


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigInvalid) as e:
        cluster_from(data)
    return [str(x) for x in e.value.errors]


# -- the cluster file ---------------------------------------------------------------------------

def test_power_defaults_to_wake_on_lan_and_takes_a_bmc():
    cluster = cluster_from(with_power(node2="manual", node3={
        "ipmi": "192.168.20.124", "user": "ADMIN", "password_file": "/etc/gi/bmc-node3"}))
    assert [n.power for n in cluster.nodes] == [
        config.Power("wol"), config.Power("manual"),
        config.Power("ipmi", "192.168.20.124", 623, "ADMIN", "/etc/gi/bmc-node3")]


@pytest.mark.parametrize("value, error", [
    (5, "test.toml: nodes[0].power: expected a string or a table, got a whole number 5; "
        'write power = "wol" (or "manual"), or power = { ipmi = "<BMC address>", '
        'user = "…", password_file = "/etc/…" }'),
    ("wool", "test.toml: nodes[0].power: 'wool' is not one of wol, manual; use one of "
             "those (did you mean 'wol'?)"),
    ("ipmi", "test.toml: nodes[0].power: IPMI needs the BMC's address, user and password "
             'file; write power = { ipmi = "192.168.20.122", user = "ADMIN", '
             'password_file = "/etc/ganeti-installer/bmc-node1" }'),
    ({"ipmi": "10.0.0.9", "user": "ADMIN", "password": "hunter2"},
     "test.toml: nodes[0].power.password: unknown key; did you mean 'password_file'?"),
    ({"ipmi": "-oProxyCommand=x", "user": "ADMIN", "password_file": "/etc/p"},
     "test.toml: nodes[0].power.ipmi: '-oProxyCommand=x' is not an address or host name; "
     "write the BMC's IPv4 address or DNS name, e.g. ipmi = \"192.168.20.122\""),
    ({"ipmi": "10.0.0.9", "user": "AD MIN", "password_file": "/etc/p"},
     "test.toml: nodes[0].power.user: 'AD MIN' is not an IPMI user name; use the BMC's user "
     "name: 1 to 16 letters, digits or _ . @ -"),
    ({"ipmi": "10.0.0.9", "user": "ADMIN", "password_file": "hunter2"},
     "test.toml: nodes[0].power.password_file: 'hunter2' is not an absolute file path; write "
     "the absolute path of a file (mode 0600) holding only the BMC password, e.g. "
     "/etc/ganeti-installer/bmc-node1; never the password itself"),
    ({"ipmi": "10.0.0.9", "user": "ADMIN", "password_file": "/etc/p", "port": 70000},
     "test.toml: nodes[0].power.port: 70000 is outside 1-65535; use the BMC's UDP port "
     "(623 unless it was changed)"),
    ({"user": "ADMIN", "password_file": "/etc/p"},
     "test.toml: nodes[0].power.ipmi: missing; add ipmi = <the BMC's address> here"),
])
def test_a_wrong_power_key_is_refused_naming_node_and_fix(value, error):
    assert errors_of(with_power(node1=value))[0] == error


def test_validate_prints_the_power_error_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "cluster.toml"
    path.write_text(tomli_w.dumps(with_power(node2={"ipmi": "10.0.0.9", "user": "ADMIN",
                                                    "password_file": "hunter2"})))
    assert cli.main(["render", str(path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"error: {path}: nodes[1].power.password_file: 'hunter2' is not an absolute " \
           "file path; write the absolute path of a file (mode 0600)" in err
    assert "1 error(s)" in err and not (tmp_path / "out").exists()


def test_two_nodes_cannot_share_one_bmc():
    bmc = {"ipmi": "192.168.20.124", "user": "ADMIN", "password_file": "/etc/gi/bmc"}
    assert errors_of(with_power(node1=bmc, node3=bmc)) == [
        "test.toml: nodes[2].power.ipmi: BMC 192.168.20.124 is also nodes[0]'s (node1); "
        "give each node the address of its own BMC"]


# -- what each method does, and refuses, without a network ---------------------------------------

def test_the_magic_packet_is_six_ff_then_the_mac_sixteen_times():
    packet = power.magic_packet("52:54:00:aa:0b:ff")
    assert len(packet) == 102 and packet[:6] == b"\xff" * 6
    assert all(packet[6 + 6 * i:12 + 6 * i] == bytes([0x52, 0x54, 0, 0xaa, 0x0b, 0xff])
               for i in range(16))


def test_wake_on_lan_cannot_switch_a_pc_off():
    sent = []
    cluster = cluster_from(example_data())
    with pytest.raises(power.PowerError, match=r"node1: Wake-on-LAN can only switch a PC on, "
                                               r"not `off` it; do that at the PC, or give"):
        power.switch(cluster, "node1", "off", wol=lambda *a: sent.append(a))
    assert sent == []
    power.switch(cluster, "node1", "on", wol=lambda *a: sent.append(a))
    assert sent == [(MAC, "eth0")]


def test_manual_says_what_to_press():
    cluster = cluster_from(with_power(node2="manual"))
    assert power.switch(cluster, "node2", "cycle").message == \
        "node2 (MAC 52:54:00:20:02:23) is switched by hand: switch it off, then on again"


def bmc_node1(tmp_path, address: str, mode: int = 0o600):
    """The example cluster with node1 behind a BMC at `address`; (cluster, password file)."""
    secret = tmp_path / "bmc"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(mode)
    return cluster_from(with_power(node1={"ipmi": address, "user": "ADMIN",
                                          "password_file": str(secret)})), secret


def test_a_password_file_others_can_read_is_refused_before_ipmitool(tmp_path):
    cluster, _ = bmc_node1(tmp_path, "127.0.0.1", 0o644)
    ran = []
    with pytest.raises(power.PowerError, match=r"node1: power.password_file .* is readable "
                                               r"by others \(mode 644\); chmod 600 "):
        power.switch(cluster, "node1", "on", run=lambda *a, **k: ran.append(a))
    assert ran == []


def test_the_command_prints_what_to_press_for_a_manual_node(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(with_power(node3="manual")))
    assert cli.main(["power", str(path), "node3", "on"]) == 0
    assert capsys.readouterr().out == \
        "node3 (MAC 52:54:00:20:02:24) is switched by hand: switch it on\n"


def test_an_unknown_node_is_named_with_the_known_ones(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(example_data()))
    assert cli.main(["power", str(path), "node9", "on"]) == 1
    assert f"error: no node 'node9' in {path}: use one of node1, node2, node3" in \
        capsys.readouterr().err


# -- the check before a rebuild: can power be switched from here, switching nothing -----------

def test_the_check_names_an_interface_this_host_does_not_have():
    """The real socket: the kernel answers ENODEV to SO_BINDTODEVICE (the check that it opens
    on an interface that exists runs in the namespaces below)."""
    data = example_data()
    data["network"]["provisioning"]["interface"] = "gi-noif0"
    with pytest.raises(power.PowerError, match=r"node1: cannot send Wake-on-LAN on gi-noif0 "
                                               r"\(No such device\); run this on the serving "
                                               r"host, which has network.provisioning"):
        power.check(cluster_from(data), "node1")


def test_the_check_says_run_as_root_when_the_socket_is_not_allowed():
    def refused(interface):
        raise PermissionError(1, "Operation not permitted")
    with pytest.raises(power.PowerError, match=r"node2: .* on eth0 \(Operation not permitted"
                                               r"\); run as root"):
        power.check(cluster_from(example_data()), "node2", wol_check=refused)


def test_the_check_asks_the_bmc_only_for_its_status(tmp_path):
    cluster, secret = bmc_node1(tmp_path, "10.0.9.9")
    ran = []

    def bmc(argv, **kw):
        ran.append(argv[argv.index("-f") + 2:])
        return subprocess.CompletedProcess(argv, 0, "Chassis Power is off\n", "")
    assert power.check(cluster, "node1", run=bmc) == \
        "node1: BMC at 10.0.9.9: Chassis Power is off"
    assert ran == [["chassis", "power", "status"]]
    secret.unlink()
    with pytest.raises(power.PowerError, match=r"node1: power.password_file .*: cannot read"):
        power.check(cluster, "node1", run=bmc)
    assert len(ran) == 1


def test_a_manual_node_needs_no_check():
    assert power.check(cluster_from(with_power(node3="manual")), "node3") == \
        'node3: power = "manual": you switch it on when asked'


# -- Wake-on-LAN as the PC's NIC receives it -----------------------------------------------------

RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9))
print("ready", flush=True)
s.settimeout(20)
data, (src, port) = s.recvfrom(2048)
print(data.hex(), src, flush=True)
"""


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True)


@pytest.fixture
def provisioning_lan():
    """Two namespaces joined by a veth pair: the serving host's interface `gi-prov` and a
    PC's NIC, both on 10.99.0.0/24."""
    tag = f"{os.getpid() % 100000}"
    host, pc = f"gi-wolh-{tag}", f"gi-wolp-{tag}"
    try:
        ip("netns", "add", host)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot make a network namespace here: {e}")
    ip("netns", "add", pc)
    try:
        ip("-n", host, "link", "add", "gi-prov", "type", "veth", "peer", "name", "eth0",
           "netns", pc)
        for ns, dev, addr in ((host, "gi-prov", "10.99.0.1/24"), (pc, "eth0", "10.99.0.50/24")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield host, pc
    finally:
        ip("netns", "del", host)
        ip("netns", "del", pc)


@pytest.mark.integration
def test_wake_on_lan_reaches_the_pcs_lan_byte_for_byte(provisioning_lan, tmp_path):
    host, pc = provisioning_lan
    data = example_data()
    data["network"]["provisioning"]["interface"] = "gi-prov"
    path = tmp_path / "cluster.toml"
    path.write_text(tomli_w.dumps(data))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    receiver = subprocess.Popen(["ip", "netns", "exec", pc, sys.executable, "-c", RECEIVER],
                                stdout=subprocess.PIPE, text=True)
    check = ("import sys; from installer.cluster import config; from installer.master "
             "import power; print(power.check(config.load(sys.argv[1]), 'node1'))")
    try:
        checked = subprocess.run(["ip", "netns", "exec", host, sys.executable, "-c", check,
                                  str(path)], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert checked.stdout == "node1: Wake-on-LAN on gi-prov\n", checked.stderr
        assert receiver.stdout.readline().strip() == "ready"
        sent = subprocess.run(["ip", "netns", "exec", host, sys.executable, "-m",
                               "installer.cli", "power", str(path), "node1", "on"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert "Wake-on-LAN packet for 52:54:00:20:02:22 sent on gi-prov" in sent.stdout
        payload, source = receiver.stdout.readline().split()
    finally:
        receiver.kill()
        receiver.wait()
    assert bytes.fromhex(payload) == b"\xff" * 6 + bytes.fromhex("525400200222") * 16
    assert source == "10.99.0.1"


# -- IPMI against OpenIPMI's simulated BMC ---------------------------------------------------------

CHASSIS = """#!/bin/sh
# ipmi_sim's chassis control: `get power` answers the state, `set power 1|0` switches it.
log={dir}/calls
echo "$*" >> "$log"
state=$(cat {dir}/power 2>/dev/null || echo 0)
case "$*" in
  *"get power"*) echo "power:$state" ;;
  *"set power 1"*) echo 1 > {dir}/power ;;
  *"set power 0"*) echo 0 > {dir}/power ;;
esac
"""

LAN_CONF = """name "gitest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{dir}/chassis"
user 2 true "ADMIN" "{password}" admin 10 none md2 md5 straight
"""

EMU = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n" \
      "mc_enable 0x20\n"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bmc(tmp_path):
    """ipmi_sim on a loopback UDP port; (port, directory with its `calls` log)."""
    if not shutil.which("ipmi_sim") or not shutil.which("ipmitool"):
        pytest.skip("needs ipmi_sim and ipmitool (Debian packages openipmi, ipmitool)")
    port = free_udp_port()
    (tmp_path / "chassis").write_text(CHASSIS.format(dir=tmp_path))
    (tmp_path / "chassis").chmod(0o755)
    (tmp_path / "lan.conf").write_text(LAN_CONF.format(port=port, dir=tmp_path,
                                                       password=PASSWORD))
    (tmp_path / "sim.emu").write_text(EMU)
    # ipmi_sim quits when its console's stdin closes: keep a pipe open until the test ends.
    sim = subprocess.Popen(["ipmi_sim", "-c", "lan.conf", "-f", "sim.emu", "-s",
                            str(tmp_path / "state"), "-p"], cwd=tmp_path,
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while f":{port:04X} " not in open("/proc/net/udp").read():
            assert sim.poll() is None and time.monotonic() < deadline, "ipmi_sim did not start"
            time.sleep(0.1)
        yield port, tmp_path
    finally:
        sim.kill()
        sim.wait()


class Watched:
    """subprocess.run for power.ipmi that records each argv and, while the command runs,
    looks for the password in every process's command line."""

    def __init__(self):
        self.argvs: list[list[str]] = []
        self.seen_in: list[str] = []

    def __call__(self, argv, *, capture_output, text, timeout):
        self.argvs.append(list(argv))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        scanner = threading.Thread(target=self._scan, args=(proc,))
        scanner.start()
        out, err = proc.communicate(timeout=timeout)
        scanner.join()
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _scan(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if PASSWORD.encode() in f.read():
                            self.seen_in.append(pid)
                except OSError:
                    continue
            time.sleep(0.02)


@pytest.mark.integration
def test_ipmi_switches_the_simulated_bmc_with_the_password_on_no_command_line(bmc, tmp_path):
    port, sim = bmc
    secret = tmp_path / "bmc-node1"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    cluster = cluster_from(with_power(node1={"ipmi": "127.0.0.1", "port": port,
                                             "user": "ADMIN", "password_file": str(secret)}))
    run = Watched()
    said = [power.switch(cluster, "node1", action, run=run).message
            for action in ("status", "on", "status", "off", "status")]
    assert said == ["Chassis Power is off", "Chassis Power Control: Up/On",
                    "Chassis Power is on", "Chassis Power Control: Down/Off",
                    "Chassis Power is off"]
    calls = (sim / "calls").read_text()
    assert "set power 1" in calls and "set power 0" in calls
    assert run.argvs and not any(PASSWORD in " ".join(a) for a in run.argvs)
    assert all(a[a.index("-f") + 1] == str(secret) for a in run.argvs)
    assert run.seen_in == []


@pytest.mark.integration
def test_a_wrong_bmc_password_is_a_clear_error(bmc, tmp_path):
    port, sim = bmc
    secret = tmp_path / "bmc-node1"
    secret.write_text("not-the-password\n")
    secret.chmod(0o600)
    cluster = cluster_from(with_power(node1={"ipmi": "127.0.0.1", "port": port,
                                             "user": "ADMIN", "password_file": str(secret)}))
    with pytest.raises(power.PowerError, match=r"node1: the BMC at 127.0.0.1 refused `chassis "
                                               r"power on`: .*; check power.user and the "
                                               r"password in power.password_file"):
        power.switch(cluster, "node1", "on")
    assert not (sim / "calls").exists() or "set power" not in (sim / "calls").read_text()
