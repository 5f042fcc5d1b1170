"""`ganeti-installer serve` as a process: it starts, answers, stops on SIGTERM and leaves
nothing behind; and (integration, root) with real dnsmasq in network namespaces the test
makes: DHCP for the nodes, unknown machines noted, and clear errors when dnsmasq cannot start
(port in use, no such interface) with nothing left running; a serve after a SIGKILL stops
the dnsmasq the killed one left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
import tomli_w

from installer.cluster.errors import InstallerError
from installer.master import serve
from tests.conftest import REPO, example_data, example_path
from tests.serving import render_outdir
from tests.test_dnsmasq import PXE_BIOS, Lan, ns, udhcpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`ganeti-installer serve ARGV` as a child process, its output collected by a thread."""

    def __init__(self, argv: list[str], prefix: tuple = ()):
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "installer.cli", "serve", *argv], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_serving(self, timeout: float = 30) -> str:
        """Output up to the 'serving ...' line; fails with the output if serve exits."""
        end = time.monotonic() + timeout
        while not any(line.startswith("serving ") for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise AssertionError(f"serve did not come up: {self.output}")
            time.sleep(0.05)
        return self.output

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for serve to exit by itself."""
        self.proc.wait(timeout)
        self.reader.join(10)
        return self.proc.returncode, self.output

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as an admin's Ctrl-C or systemd would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish(20)


@pytest.fixture
def outdir(tmp_path):
    out = tmp_path / "out"
    render_outdir(str(out))
    return out


@pytest.mark.integration
def test_serve_answers_and_stops_on_sigterm(outdir, tmp_path):
    port = free_port()
    proc = Serve([example_path("cluster.toml"), str(outdir), "--state", str(tmp_path / "st"),
                  "--listen", f"127.0.0.1:{port}", "--no-dhcp"])
    try:
        said = proc.wait_serving()
        assert f"at http://127.0.0.1:{port}" in said and "DHCP/TFTP: off (--no-dhcp)" in said
        nodes = requests.get(f"http://127.0.0.1:{port}/api/v1/nodes", timeout=10).json()
        assert [n["name"] for n in nodes] == ["node1", "node2", "node3"]
    finally:
        code, out = proc.stop()
    assert code == 0, out
    assert "stopping" in out
    with socket.socket() as s:      # the port is free again
        s.bind(("127.0.0.1", port))
    assert oct(os.stat(tmp_path / "st").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "st" / "admin.token").st_mode & 0o777) == "0o600"


@pytest.mark.integration
def test_serve_needs_a_rendered_outdir(tmp_path):
    code, out = Serve([example_path("cluster.toml"), str(tmp_path / "empty"), "--no-dhcp",
                       "--listen", f"127.0.0.1:{free_port()}", "--state",
                       str(tmp_path / "st")]).finish()
    assert code == 1
    assert "has no plans: run ganeti-installer render" in out


@pytest.mark.integration
def test_serve_names_a_busy_http_port(outdir, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = Serve([example_path("cluster.toml"), str(outdir), "--no-dhcp", "--listen",
                           f"127.0.0.1:{port}", "--state", str(tmp_path / "st")]).finish()
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out and "--listen ADDRESS:PORT" in out


@pytest.mark.parametrize("text", ["8080", "10.99.0.1:", "10.99.0.1:http", ":80",
                                  "10.99.0.1:99999"])
def test_a_bad_listen_address_is_refused(text):
    with pytest.raises(InstallerError, match="is not ADDRESS:PORT"):
        serve.parse_listen(text)


def test_serve_listens_where_the_cluster_file_says():
    from tests.conftest import cluster_from
    data = example_data()
    cluster = cluster_from(data)
    assert serve.listen_addresses(cluster, None) == [
        ("10.99.0.1", 8080), (cluster.node(cluster.master).ip, 8080), ("127.0.0.1", 8080)]
    prov = data["network"]["provisioning"]
    prov["on_master"], prov["management_address"] = False, "192.168.20.250"
    assert serve.listen_addresses(cluster_from(data), None) == [
        ("10.99.0.1", 8080), ("192.168.20.250", 8080), ("127.0.0.1", 8080)]
    assert serve.listen_addresses(cluster, ["10.0.0.1:80,[::1]:81", "10.0.0.1:80",
                                            "0.0.0.0:82"]) == [
        ("10.0.0.1", 80), ("::1", 81), ("0.0.0.0", 82)]


# --- with dnsmasq, in network namespaces ------------------------------------------------------

@pytest.fixture
def lan():
    for tool in ("ip", "dnsmasq", "busybox"):
        assert shutil.which(tool), f"{tool} is missing (build.sh installs it)"
    net = Lan(f"v{os.getpid() % 1000}")
    try:
        net.up("10.99.0.1", 24)
        yield net
    finally:
        net.down()


def cluster_file(net: Lan, interface: str) -> tuple[str, str]:
    """A cluster file serving on INTERFACE, and its rendered OUTDIR under the LAN's root."""
    data = example_data()
    data["network"]["provisioning"]["interface"] = interface
    data.setdefault("apt", {})["mirror"] = "http://mirror.test/debian"
    path = os.path.join(net.root, "cluster.toml")
    with open(path, "wb") as f:
        tomli_w.dump(data, f)
    out = os.path.join(net.root, "out")
    render_outdir(out, data)
    return path, out


def in_ns(net: Lan) -> tuple:
    return ("ip", "netns", "exec", net.server)


def pids(netns: str) -> list[str]:
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return done.stdout.split()


def port_free(net: Lan, port: int) -> bool:
    code = ("import socket; s = socket.socket(); "
            f"s.bind(('10.99.0.1', {port})); print('free')")
    return "free" in ns(net.server, sys.executable, "-c", code).stdout


@pytest.mark.integration
def test_serve_runs_dnsmasq_and_notes_unknown_machines(lan):
    path, out = cluster_file(lan, lan.server_if)
    proc = Serve([path, out, "--state", os.path.join(lan.root, "state")], in_ns(lan))
    try:
        said = proc.wait_serving()
        assert "at http://10.99.0.1:8080" in said and "dnsmasq " in said
        lan.client_mac("52:54:00:20:02:22")                 # node1: a known machine
        lease = udhcpc(lan, *PXE_BIOS)
        assert lease["hostname"] == "node1"
        lan.client_mac("52:54:00:77:00:01")                 # not in the cluster file
        udhcpc(lan, *PXE_BIOS)
        # Status routes are the admin's: from the LAN, only with the admin token.
        unknown = "http://10.99.0.1:8080/api/v1/unknown"
        got = ns(lan.client, "busybox", "wget", "-q", "-O", "-", unknown)
        assert got.returncode == 1 and "401 Unauthorized" in got.stderr, got
        admin = open(os.path.join(lan.root, "state", "admin.token")).read().strip()
        got = ns(lan.client, "busybox", "wget", "-q", "-O", "-", "--header",
                 f"Authorization: Bearer {admin}", unknown)
        assert '"mac": "52:54:00:77:00:01"' in got.stdout, got
        assert '"source": "dhcp"' in got.stdout
        assert "52:54:00:20:02:22" not in got.stdout
    finally:
        code, text = proc.stop()
    assert code == 0, text
    assert "exiting on receipt of SIGTERM" in text          # dnsmasq was stopped by serve
    assert pids(lan.server) == []


def status(net: Lan, *argv: str) -> subprocess.CompletedProcess:
    """`ganeti-installer status ARGV` on the serving host (its namespace)."""
    return ns(net.server, sys.executable, "-m", "installer.cli", "status", *argv, cwd=REPO)


@pytest.mark.integration
def test_a_plan_goes_out_once_and_the_admin_sees_the_second_fetch(lan):
    """On a LAN the test makes: a machine takes node1's plan, a second fetch (a stranger,
    from another address) gets a JSON 409, and `status` on the serving host, asking at the
    provisioning address (not loopback), shows it with the admin token from --state."""
    path, out = cluster_file(lan, lan.server_if)
    state = os.path.join(lan.root, "state")
    proc = Serve([path, out, "--state", state, "--no-dhcp"], in_ns(lan))
    try:
        said = proc.wait_serving()
        assert "at http://10.99.0.1:8080 and http://192.168.20.222:8080 and " \
               "http://127.0.0.1:8080" in said, said
        # The master's management address is on no interface of this host: bound anyway.
        assert "warning: no interface has 192.168.20.222 yet" in said, said
        subprocess.run(["ip", "-n", lan.client, "addr", "add", "10.99.0.20/24", "dev",
                        lan.client_if], check=True)
        url = "http://10.99.0.1:8080/api/v1/plans/52-54-00-20-02-22"
        first = ns(lan.client, "busybox", "wget", "-q", "-O", "-", url)
        assert '"token": "' in first.stdout, first
        subprocess.run(["ip", "-n", lan.client, "addr", "add", "10.99.0.66/24", "dev",
                        lan.client_if], check=True)
        path = url.removeprefix("http://10.99.0.1:8080")
        code = ("import http.client, json; c = http.client.HTTPConnection('10.99.0.1', 8080, "
                f"timeout=10, source_address=('10.99.0.66', 0)); c.request('GET', {path!r}); "
                "r = c.getresponse(); print(r.status); print(json.load(r)['error'])")
        second = ns(lan.client, sys.executable, "-c", code)
        lines = second.stdout.splitlines()
        assert lines[0] == "409", second
        assert "the plan of node1 was already taken by 10.99.0.20 at " in lines[1], lines
        assert "ganeti-installer reinstall CLUSTER OUTDIR node1" in lines[1]
        refused = status(lan, "--url", "http://10.99.0.1:8080")
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr and \
            "--state DIR" in refused.stderr, refused
        shown = status(lan, "--url", "http://10.99.0.1:8080", "--state", state)
        assert shown.returncode == 0, shown
        assert "Plans refused" in shown.stdout
        assert "node1: 1 plan fetch(es) refused, the last from 10.99.0.66" in shown.stdout
        assert "its plan went to 10.99.0.20" in shown.stdout
        local = status(lan, "--url", "http://127.0.0.1:8080", "--json")
        node1 = next(n for n in json.loads(local.stdout)["nodes"] if n["name"] == "node1")
        assert node1["state"] == "pending" and node1["plan"]["refusals"] == 1
    finally:
        code, text = proc.stop()
    assert code == 0, text


def dnsmasq_pids(netns: str) -> list[str]:
    return [p for p in pids(netns)
            if open(f"/proc/{p}/comm", encoding="ascii").read().strip() == "dnsmasq"]


@pytest.mark.integration
def test_serve_after_a_sigkill_stops_the_dnsmasq_it_left(lan):
    path, out = cluster_file(lan, lan.server_if)
    argv = [path, out, "--state", os.path.join(lan.root, "state")]
    first = Serve(argv, in_ns(lan))
    first.wait_serving()
    first.proc.kill()                                       # no chance to stop dnsmasq
    first.finish()
    [left] = dnsmasq_pids(lan.server)
    second = Serve(argv, in_ns(lan))
    try:
        said = second.wait_serving()
        assert f"stopping dnsmasq (pid {left}) left running by an earlier serve" in said
        assert left not in pids(lan.server)
        assert len(dnsmasq_pids(lan.server)) == 1
        lan.client_mac("52:54:00:20:02:22")
        assert udhcpc(lan, *PXE_BIOS)["hostname"] == "node1"
    finally:
        code, text = second.stop()
        for pid in dnsmasq_pids(lan.server):                # a failed check's leftover
            os.kill(int(pid), signal.SIGKILL)
    assert code == 0, text
    assert pids(lan.server) == []


BLOCK_DHCP = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 67))
print("bound", flush=True)
time.sleep(120)
"""


@pytest.mark.integration
def test_dhcp_port_in_use_is_a_clear_error_and_nothing_runs(lan):
    path, out = cluster_file(lan, lan.server_if)
    blocker = subprocess.Popen([*in_ns(lan), sys.executable, "-c", BLOCK_DHCP],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert blocker.stdout.readline().strip() == "bound"
        code, text = Serve([path, out, "--state", os.path.join(lan.root, "state")],
                           in_ns(lan)).finish()
        assert code == 1, text
        assert "error: dnsmasq cannot start: another DHCP or TFTP server holds its port" in text
        assert "Address already in use" in text and "--no-dhcp" in text
        assert pids(lan.server) == [str(blocker.pid)]       # no dnsmasq, no serve
        assert port_free(lan, 8080)
    finally:
        blocker.kill()
        blocker.wait()


@pytest.mark.integration
def test_no_such_interface_is_a_clear_error_and_nothing_runs(lan):
    path, out = cluster_file(lan, "gi-nosuch0")
    code, text = Serve([path, out, "--state", os.path.join(lan.root, "state")],
                       in_ns(lan)).finish()
    assert code == 1, text
    assert "there is no interface 'gi-nosuch0' on this host" in text
    assert f"set network.provisioning.interface in {path}" in text
    assert pids(lan.server) == []
    assert port_free(lan, 8080)
