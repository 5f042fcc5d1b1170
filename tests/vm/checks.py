"""What an admin checks on a freshly installed node's console, one assertion each, so that the
install, the resumed install, the other releases and first-boot mode are held to the same."""

from __future__ import annotations

import re

from installer.cluster import config

from .console import run
from .qemu import VM


def volume_group(vm: VM, cluster: config.Cluster, min_gib: float = 25) -> None:
    out = run(vm, f"vgs --noheadings --units g -o vg_name,vg_size {cluster.storage.vg}")
    name, size = out.split()
    assert name == cluster.storage.vg and float(size.rstrip("g")) > min_gib, out


def drbd(vm: VM, cluster: config.Cluster) -> None:
    out = run(vm, "cat /sys/module/drbd/parameters/minor_count "
                  "/sys/module/drbd/parameters/usermode_helper")
    assert out.split() == [str(cluster.drbd.minor_count), cluster.drbd.usermode_helper], out


def bridges(vm: VM, cluster: config.Cluster, node: config.Node) -> None:
    nic, man, pub = cluster.provisioning.nic, cluster.management, cluster.public
    addr = run(vm, f"ip -color=never -o -4 addr show {man.bridge}")
    assert f"{node.ip}/{man.network.prefixlen}" in addr, addr
    ports = run(vm, f"ls /sys/class/net/{man.bridge}/brif; echo --; "
                    f"ls /sys/class/net/{pub.bridge}/brif")
    on_man, on_public = (part.split() for part in ports.split("--"))
    assert on_man == [f"{nic}.{man.vlan}"] and on_public == [f"{nic}.{pub.vlan}"], ports
    vlans = run(vm, "cat /proc/net/vlan/config")
    for vid in (man.vlan, pub.vlan):
        assert re.search(rf"{nic}\.{vid}\s*\|\s*{vid}\s*\|\s*{nic}", vlans), vlans


def hostname(vm: VM, cluster: config.Cluster, node: config.Node) -> None:
    other = next(n for n in cluster.nodes if n.name != node.name)
    out = run(vm, f"hostname -f; getent hosts {other.fqdn}")
    assert node.fqdn in out.split() and other.ip in out, out


def sshd(vm: VM) -> None:
    out = run(vm, "systemctl is-active ssh; ls /etc/ssh/ssh_host_ed25519_key.pub")
    assert "active" in out.split() and "ssh_host_ed25519_key.pub" in out, out


def lvm_filter(vm: VM) -> None:
    out = run(vm, "lvmconfig devices/filter")
    assert 'filter=["r|/dev/cdrom|","r|/dev/drbd[0-9]+|"]' in out.replace(" ", ""), out


def ganeti_ready(vm: VM, cluster: config.Cluster, node: config.Node,
                 min_vg_gib: float = 25) -> None:
    """All of the above: the node the paper's sections 2.3-2.9 build by hand."""
    volume_group(vm, cluster, min_vg_gib)
    drbd(vm, cluster)
    bridges(vm, cluster, node)
    hostname(vm, cluster, node)
    sshd(vm)
    lvm_filter(vm)
