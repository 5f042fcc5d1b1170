"""dnsmasq configurations: golden files for both examples, `dnsmasq --test`, and real DHCP and
TFTP exchanges in network namespaces the test makes (a DHCP server, and proxy DHCP)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from installer.build import dnsmasq, render
from installer.cluster import layout
from installer.cluster.errors import InstallerError
from tests.conftest import cluster_from, example_data, load_example
from tests.golden import compare_tree

EXAMPLES = {"bookworm": "cluster.toml", "wheezy": "paper-wheezy.toml"}
FINAL = "/srv/ganeti-installer/out"     # where render() would move the stage
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dhcp_probe.py")


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def configs(request, tmp_path_factory):
    cluster = load_example(EXAMPLES[request.param])
    stage = tmp_path_factory.mktemp(f"dnsmasq-{request.param}")
    written = dnsmasq.render_dnsmasq(cluster, str(stage), final_outdir=FINAL)
    return request.param, cluster, stage, written


def lines(path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def test_golden_configs(configs):
    name, _, stage, written = configs
    compare_tree(str(stage / "dnsmasq"), f"{name}/pxe/dnsmasq")
    assert sorted(written) == ["dnsmasq/dnsmasq-proxy.conf", "dnsmasq/dnsmasq.conf",
                               "dnsmasq/mode"]


def test_server_config(configs):
    _, cluster, stage, _ = configs
    p = cluster.provisioning
    conf = lines(stage / "dnsmasq/dnsmasq.conf")
    assert {"port=0", f"interface={p.interface}", "enable-tftp", "log-dhcp",
            f"tftp-root={FINAL}/tftp", f"dhcp-range={p.range[0]},{p.range[1]},255.255.255.0,1h",
            f"dhcp-boot=tag:ipxe,{p.base_url}/tftp/boot.ipxe",
            "dhcp-match=set:ipxe,175"} <= set(conf)
    hosts = [ln for ln in conf if ln.startswith("dhcp-host=")]
    assert hosts == [f"dhcp-host={n.mac},{n.name}" for n in cluster.nodes]
    for node in cluster.nodes:   # management addresses live on VLAN 100, not here
        assert node.ip not in (stage / "dnsmasq/dnsmasq.conf").read_text()
    assert str(stage) not in (stage / "dnsmasq/dnsmasq.conf").read_text()


def test_proxy_config(configs):
    _, cluster, stage, _ = configs
    p = cluster.provisioning
    conf = lines(stage / "dnsmasq/dnsmasq-proxy.conf")
    assert f"dhcp-range={p.network.network_address},proxy" in conf
    assert f"tftp-root={FINAL}/tftp" in conf
    services = [ln for ln in conf if ln.startswith("pxe-service=")]
    assert any(re.match(r"pxe-service=tag:!ipxe,x86PC,.*,undionly\.kpxe$", s) for s in services)
    assert any(re.match(r"pxe-service=tag:!ipxe,X86-64_EFI,.*,ipxe\.efi$", s) for s in services)
    assert not [ln for ln in conf if ln.startswith(("dhcp-host=", "dhcp-boot="))]


def test_the_cluster_file_chooses_the_mode_serve_runs(tmp_path):
    data = example_data()
    for mode, name in (("server", "dnsmasq.conf"), ("proxy", "dnsmasq-proxy.conf")):
        data["network"]["provisioning"]["dhcp"] = mode
        out = tmp_path / mode
        dnsmasq.render_dnsmasq(cluster_from(data), str(out))
        assert layout.active_dnsmasq_config(str(out)) == str(out / "dnsmasq" / name)
        assert (out / "dnsmasq/dnsmasq.conf").is_file()
        assert (out / "dnsmasq/dnsmasq-proxy.conf").is_file()


@pytest.mark.parametrize("outdir", ["/srv/a,b", "/srv/with space", "/srv/x\ny", "/srv/#x"])
def test_an_outdir_dnsmasq_cannot_name_is_refused(bookworm, tmp_path, outdir):
    with pytest.raises(InstallerError, match="dnsmasq cannot serve TFTP from"):
        dnsmasq.render_dnsmasq(bookworm, str(tmp_path), final_outdir=outdir)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("name", ["dnsmasq.conf", "dnsmasq-proxy.conf"])
def test_dnsmasq_accepts_both_configs(configs, name):
    assert shutil.which("dnsmasq"), "dnsmasq is missing: apt-get install dnsmasq-base"
    done = subprocess.run(["dnsmasq", "--test", "-C", str(configs[2] / "dnsmasq" / name)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "syntax check OK" in done.stderr


# --- real DHCP and TFTP in network namespaces --------------------------------------------------

def ns(name: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True,
                          timeout=30, **kw)


class Lan:
    """Two namespaces joined by a veth pair: the serving host and one PXE client."""

    def __init__(self, tag: str):
        self.server, self.client = f"gi-{tag}-srv", f"gi-{tag}-cli"
        self.server_if, self.client_if = f"gi{tag}s", f"gi{tag}c"
        self.procs: list[subprocess.Popen] = []
        # dnsmasq reads TFTP files as `nobody`: the tree must be world-searchable, as on a
        # real serving host, so not under pytest's 0700 tmp_path.
        self.root = tempfile.mkdtemp(prefix="gi-dnsmasq-", dir="/tmp")
        os.chmod(self.root, 0o755)

    def up(self, address: str, prefix: int) -> None:
        for name in (self.server, self.client):
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "link", "add", self.server_if, "netns", self.server, "type", "veth",
                        "peer", "name", self.client_if, "netns", self.client], check=True)
        subprocess.run(["ip", "-n", self.server, "addr", "add", f"{address}/{prefix}", "dev",
                        self.server_if], check=True)
        for name, ifname in ((self.server, self.server_if), (self.client, self.client_if)):
            subprocess.run(["ip", "-n", name, "link", "set", ifname, "up"], check=True)

    def client_mac(self, mac: str) -> None:
        subprocess.run(["ip", "-n", self.client, "link", "set", self.client_if, "address", mac],
                       check=True)

    def dnsmasq(self, conf: str) -> None:
        log = os.path.join(self.root, "dnsmasq.log")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.server, "dnsmasq", "--keep-in-foreground",
             f"--conf-file={conf}", f"--dhcp-leasefile={self.root}/leases",
             f"--pid-file={self.root}/dnsmasq.pid", "--log-facility=-"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        end = time.monotonic() + 10
        while "TFTP root is" not in open(log).read():
            assert proc.poll() is None, f"dnsmasq exited: {open(log).read()}"
            assert time.monotonic() < end, f"dnsmasq did not start: {open(log).read()}"
            time.sleep(0.05)

    def log(self) -> str:
        with open(os.path.join(self.root, "dnsmasq.log")) as f:
            return f.read()

    def down(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in (self.server, self.client):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def lan():
    for tool in ("ip", "dnsmasq", "busybox"):
        assert shutil.which(tool), f"{tool} is missing (build.sh installs it)"
    net = Lan(f"{os.getpid() % 10000}")
    try:
        net.up("10.99.0.1", 24)
        yield net
    finally:
        net.down()


def render_for(net: Lan, mode: str):
    """The bookworm example, served on the test's veth; rendered as `render` would."""
    data = example_data()
    data["network"]["provisioning"].update(interface=net.server_if, dhcp=mode)
    cluster = cluster_from(data)
    out = os.path.join(net.root, "out")
    render.render(cluster, out)
    return cluster, out


UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with the event name; the lease is in the environment.
env > "{root}/udhcpc.$1"
[ "$1" = bound ] && ip addr replace "$ip/$mask" dev "$interface"
exit 0
"""


def udhcpc(net: Lan, *extra: str) -> dict[str, str]:
    """One DHCP exchange by busybox udhcpc in the client namespace; the bound lease's env."""
    script = os.path.join(net.root, "udhcpc.sh")
    with open(script, "w") as f:
        f.write(UDHCPC_SCRIPT.format(root=net.root))
    os.chmod(script, 0o755)
    bound = os.path.join(net.root, "udhcpc.bound")
    if os.path.exists(bound):
        os.unlink(bound)
    # -B: ask for broadcast replies (as many PXE ROMs do); udhcpc does not see dnsmasq's
    # unicast OFFER on a fresh veth pair.
    done = ns(net.client, "busybox", "udhcpc", "-i", net.client_if, "-f", "-q", "-n", "-B",
              "-t", "4", "-T", "1", "-s", script, *extra)
    assert done.returncode == 0, f"{done.stderr}\n{net.log()}"
    with open(bound) as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


def boot_file(lease: dict[str, str]) -> str | None:
    """udhcpc exports the file field as boot_file, option 67 as bootfile."""
    return lease.get("bootfile") or lease.get("boot_file")


PXE_BIOS = ("-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
PXE_UEFI = ("-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007")


@pytest.mark.integration
def test_dhcp_server_hands_each_client_its_loader(lan):
    cluster, out = render_for(lan, "server")
    node = cluster.nodes[0]
    lan.client_mac(node.mac)
    lan.dnsmasq(layout.active_dnsmasq_config(out))
    p = cluster.provisioning

    lease = udhcpc(lan, *PXE_BIOS)
    assert boot_file(lease) == "undionly.kpxe"
    assert lease["siaddr"] == p.address
    assert lease["hostname"] == node.name
    first, last, ip = (ipaddress.IPv4Address(a) for a in (*p.range, lease["ip"]))
    assert first <= ip <= last and lease["ip"] != node.ip
    # The loader itself, by TFTP from the tree render wrote, as the PXE ROM fetches it.
    got = os.path.join(lan.root, "got.kpxe")
    done = ns(lan.client, "busybox", "tftp", "-g", "-r", "undionly.kpxe", "-l", got, p.address)
    assert done.returncode == 0, f"{done.stderr}\n{lan.log()}"
    with open(got, "rb") as a, open("/usr/lib/ipxe/undionly.kpxe", "rb") as b:
        assert a.read() == b.read()

    assert boot_file(udhcpc(lan, *PXE_UEFI)) == "ipxe.efi"
    ipxe = udhcpc(lan, *PXE_BIOS, "-x", "0xaf:150101")          # option 175: iPXE
    assert boot_file(ipxe) == f"{p.base_url}/tftp/boot.ipxe"
    assert boot_file(udhcpc(lan)) is None                        # not PXE: no boot file


@pytest.mark.integration
def test_a_machine_not_in_the_cluster_file_still_boots_the_default(lan):
    cluster, out = render_for(lan, "server")
    lan.client_mac("52:54:00:99:99:99")
    lan.dnsmasq(layout.active_dnsmasq_config(out))
    lease = udhcpc(lan, *PXE_BIOS)
    assert boot_file(lease) == "undionly.kpxe" and "hostname" not in lease


def probe(net: Lan, mac: str, arch: int, ipxe: bool = False) -> dict:
    argv = [sys.executable, PROBE, net.client_if, mac, str(arch), "--ip", "10.99.0.50"]
    done = ns(net.client, *argv, *(["--ipxe"] if ipxe else []))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{net.log()}"
    return json.loads(done.stdout)


@pytest.mark.integration
@pytest.mark.parametrize("arch, ipxe, expected", [
    (0, False, "undionly.kpxe"), (7, False, "ipxe.efi"), (9, False, "ipxe.efi"),
    (0, True, "{base}/tftp/boot.ipxe"), (7, True, "{base}/tftp/boot.ipxe"),
])
def test_proxy_dhcp_names_the_loader_after_the_lans_own_dhcp(lan, arch, ipxe, expected):
    cluster, out = render_for(lan, "proxy")
    node = cluster.nodes[1]
    lan.client_mac(node.mac)
    # The LAN's DHCP server (not ours) gave the client its address.
    subprocess.run(["ip", "-n", lan.client, "addr", "add", "10.99.0.50/24", "dev",
                    lan.client_if], check=True)
    lan.dnsmasq(layout.active_dnsmasq_config(out))
    reply = probe(lan, node.mac, arch, ipxe)
    offer, boot = reply["offer"], reply["boot"]
    assert offer["yiaddr"] == "0.0.0.0" and offer["vendor"] == "PXEClient"   # no address
    assert boot and boot["file"] == expected.format(base=cluster.provisioning.base_url)
    assert boot["siaddr"] == cluster.provisioning.address
