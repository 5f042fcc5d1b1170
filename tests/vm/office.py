"""The paper's office network, built for one test module: the managed switch, the provisioning
host on the untagged VLAN and VLAN 100 (DHCP by dnsmasq, plans and images by the stand-in
master, which also takes installed nodes' reports over VLAN 100), the
management gateway on VLAN 100 and a host on VLAN 200 that no node address should reach."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from installer.cluster import config

from .standin import StandinMaster
from .switch import UNTAGGED, Host, Switch

# On VLAN 200 only: the same subnet as the management network, so a node reaching it would
# prove VLAN 200 leaks into VLAN 100; and an instance-side subnet reached over br-public.
VLAN200_SAME_SUBNET = "192.168.20.2"
VLAN200_PUBLIC = "192.168.21.1"


@dataclass
class Office:
    switch: Switch
    master: Host
    standin: StandinMaster
    vlan100: Host
    vlan200: Host

    def nic(self, port: int, mac: str) -> str:
        return self.switch.trunk(port, mac)


def dhcp(host: Host, cluster: config.Cluster, workdir: Path) -> subprocess.Popen:
    """dnsmasq as the LAN's DHCP server on the untagged VLAN (no DNS, no TFTP here)."""
    prov = cluster.provisioning
    first, last = prov.range
    return host.spawn(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                       "--interface=eth0", "--bind-interfaces", "--user=root",
                       f"--dhcp-range={first},{last},{prov.network.netmask},1h",
                       f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}",
                       f"--pid-file={workdir / 'dnsmasq.pid'}", "--log-dhcp",
                       f"--log-facility={workdir / 'dnsmasq.log'}"])


@contextmanager
def office(workdir: Path, outdir: Path, cluster: config.Cluster):
    prov, man = cluster.provisioning, cluster.management
    with Switch(workdir) as switch:
        master = switch.host("master", UNTAGGED,
                             [f"{prov.address}/{prov.network.prefixlen}"])
        # The serving host on VLAN 100 too: installed nodes report there (and are joined
        # from there), at the master's address unless a separate host serves.
        report = urlsplit(cluster.boot_report_url).hostname
        switch.plug(master, man.vlan, "eth100", [f"{report}/{man.network.prefixlen}"])
        dhcp(master, cluster, workdir)
        vlan100 = switch.host("vlan100", man.vlan, [f"{man.gateway}/{man.network.prefixlen}"])
        vlan200 = switch.host("vlan200", cluster.public.vlan,
                              [f"{VLAN200_SAME_SUBNET}/{man.network.prefixlen}",
                               f"{VLAN200_PUBLIC}/24"])
        with StandinMaster(outdir, prov.base_url, host=master,
                           reports=workdir / "reports.jsonl") as standin:
            yield Office(switch, master, standin, vlan100, vlan200)
