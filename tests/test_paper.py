"""The wheezy example renders what the paper's admin typed by hand (its sections 2.4-2.9).

The paper's text is quoted here so the suite needs nothing beside the repository. Two
corrections are deliberate: the paper's `sys -w` is `sysctl -w` (its command does not
exist), and its comment "diabling" is spelled right.
"""

from __future__ import annotations

import re

import pytest

from installer.build import render
from tests.conftest import load_example

# Figure 2.8, the br-man and br-public stanzas, for node1 (192.168.20.222).
PAPER_BR_MAN = """\
auto br-man
iface br-man inet static
    address 192.168.20.222
    netmask 255.255.255.0
    gateway 192.168.20.1
    dns-nameservers 192.168.20.1
    bridge_ports eth0.100
    bridge_stp off
    bridge_fd 0
    post-up sys -w net.ipv6.conf.${IFACE}.disable_ipv6=1 #diabling IPv6 for this interface
"""
PAPER_BR_PUBLIC = """\
auto br-public
iface br-public inet manual
    bridge_ports eth0.200
    bridge_stp off
    bridge_fd 0
    post-up sys -w net.ipv6.conf.${IFACE}.disable_ipv6=1 #diabling IPv6 for this interface
"""
PAPER_LOOPBACK = "auto lo\niface lo inet loopback\n"
# Section 2.9
PAPER_DRBD = "options drbd minor_count=128 usermode_helper=/bin/true"
# Section 2.5
PAPER_LVM_FILTER = 'filter = [ "r|/dev/cdrom|", "r|/dev/drbd[0-9]+|" ]'
# Section 2.8 (its mirror host is the admin's setting; "wheezy-back ports" is a line break)
PAPER_BACKPORTS = "deb {mirror} wheezy-backports main"
PAPER_BACKPORTS_FILE = "/etc/apt/sources.list.d/wheezybackports.list"
# Section 2.4
PAPER_HOSTS = "127.0.0.1 localhost\n192.168.20.222 node1.project.edu node1\n"


def _corrected(text: str) -> str:
    text = text.replace("post-up sys -w", "post-up sysctl -w")
    return text.replace("#diabling", "# disabling")


def _norm(text: str) -> list[str]:
    return [re.sub(r"\s+", " ", line).strip() for line in text.strip().splitlines()]


@pytest.fixture(scope="module")
def files():
    cluster = load_example("paper-wheezy.toml")
    plan = render.render_plans(cluster)["node1"]
    return cluster, plan, {f["path"]: f["content"] for f in plan["files"]}


def _stanza(interfaces: str, name: str) -> str:
    """The `auto NAME` line and every line of its iface block."""
    m = re.search(rf"^auto {name}\n(iface {name} .*?)(?=\n\n|\Z)", interfaces, re.S | re.M)
    assert m, f"no stanza for {name}"
    return f"auto {name}\n{m.group(1)}\n"


def test_interfaces_match_figure_2_8(files):
    _, _, f = files
    interfaces = f["/etc/network/interfaces"]
    assert _norm(_stanza(interfaces, "br-man")) == _norm(_corrected(PAPER_BR_MAN))
    assert _norm(_stanza(interfaces, "br-public")) == _norm(_corrected(PAPER_BR_PUBLIC))
    assert _norm(PAPER_LOOPBACK)[1] in _norm(interfaces)


def test_drbd_options_and_modules_match_section_2_9(files):
    _, _, f = files
    assert f["/etc/modprobe.d/drbd.conf"].strip() == PAPER_DRBD
    assert "drbd" in f["/etc/modules"].splitlines()


def test_lvm_filter_matches_section_2_5(files):
    _, plan, _ = files
    (edit,) = plan["edits"]
    assert edit["path"] == "/etc/lvm/lvm.conf"
    assert edit["line"].strip() == PAPER_LVM_FILTER


def test_apt_sources_match_section_2_8(files):
    cluster, plan, f = files
    assert f[PAPER_BACKPORTS_FILE].strip() == PAPER_BACKPORTS.format(mirror=cluster.apt.mirror)
    assert f"deb {cluster.apt.mirror} wheezy main" in f["/etc/apt/sources.list"]
    assert "ganeti/wheezy-backports" in plan["packages"]  # apt-get install ganeti/wheezy-backports
    assert "drbd8-utils" in plan["packages"]


def test_hosts_match_section_2_4(files):
    _, _, f = files
    assert _norm(PAPER_HOSTS)[0] in _norm(f["/etc/hosts"])
    assert _norm(PAPER_HOSTS)[1] in _norm(f["/etc/hosts"])
    assert f["/etc/hostname"] == "node1.project.edu\n"
