"""Switching a node's PC on and off: the way its `power` key in the cluster file says.

- `wol` (the default): a Wake-on-LAN magic packet (6 x 0xff, then the MAC 16 times) as a
  UDP broadcast to port 9, sent out of the provisioning interface, where the PCs' NICs are.
  It can only switch a PC on.
- `ipmi`: the BMC with `ipmitool -I lanplus`. The password goes by file (`-f`): never on a
  command line, where `ps` shows it to every user, nor in the environment.
- `manual`: what to press, for a person at the PC.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from installer.cluster.config import Cluster, Node
from installer.cluster.errors import InstallerError

ACTIONS = ("on", "off", "cycle", "status")
WOL_PORT = 9                    # "discard": what wakeonlan and etherwake send to
IPMI_TIMEOUT = 60               # ipmitool retries on its own; a dead BMC takes ~30 s


class PowerError(InstallerError):
    """Power could not be switched; the message names the node and the fix."""


@dataclass(frozen=True)
class Result:
    node: str
    action: str
    message: str                # what was done, or what a person must do


def magic_packet(mac: str) -> bytes:
    """The Wake-on-LAN payload for a MAC written aa:bb:cc:dd:ee:ff."""
    return b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) * 16


def wol_socket(interface: str) -> socket.socket:
    """A broadcast socket bound to `interface` only (SO_BINDTODEVICE: a host with several
    LANs must not wake a PC elsewhere, nor miss the PCs' LAN for its default route). OSError
    ENODEV without that interface, EPERM without root."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    except OSError:
        s.close()
        raise
    return s


def send_wol(mac: str, interface: str, port: int = WOL_PORT,
             address: str = "255.255.255.255") -> None:
    """Broadcast the magic packet on `interface` only."""
    with wol_socket(interface) as s:
        s.sendto(magic_packet(mac), (address, port))


def ipmitool_argv(node: Node, command: list[str]) -> list[str]:
    """ipmitool's command line: the BMC, the user and the password *file*. Cipher suite 3
    (SHA1 + AES-128), which every IPMI 2.0 BMC has: ipmitool's default, 17 (SHA256), is
    newer than an office PC's BMC, and asking for it first costs seconds on each call."""
    p = node.power
    assert p.address and p.user and p.password_file      # validated with the cluster file
    return ["ipmitool", "-I", "lanplus", "-C", "3", "-H", p.address, "-p", str(p.port),
            "-U", p.user, "-f", p.password_file] + command


def check_password_file(node: Node) -> None:
    """The file exists, is a regular file and only its owner may read it (as ssh insists
    of a private key): refused before ipmitool runs, with the fix."""
    path = node.power.password_file or ""
    where = f"{node.name}: power.password_file {path}"
    try:
        st = os.stat(path)
    except OSError as e:
        raise PowerError(f"{where}: cannot read it ({e.strerror}); write the BMC's "
                         f"password alone into it, then chmod 600 {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PowerError(f"{where} is not a regular file; put the BMC's password in a file")
    if st.st_mode & 0o077:
        raise PowerError(f"{where} is readable by others (mode {st.st_mode & 0o777:o}); "
                         f"chmod 600 {path}")


Run = Callable[..., subprocess.CompletedProcess]


def ipmi(node: Node, action: str, run: Run = subprocess.run) -> str:
    check_password_file(node)
    command = ["chassis", "power", "cycle" if action == "cycle" else action]
    try:
        proc = run(ipmitool_argv(node, command), capture_output=True, text=True,
                   timeout=IPMI_TIMEOUT)
    except FileNotFoundError:
        raise PowerError("ipmitool is not installed: apt-get install ipmitool") from None
    except subprocess.TimeoutExpired:
        raise PowerError(f"{node.name}: the BMC at {node.power.address} did not answer in "
                         f"{IPMI_TIMEOUT} s; check its address and that IPMI over LAN is "
                         "enabled in its setup") from None
    if proc.returncode != 0:
        said = " ".join((proc.stderr + proc.stdout).split()) or "no answer"
        raise PowerError(f"{node.name}: the BMC at {node.power.address} refused `chassis "
                         f"power {action}`: {said}; check power.user and the password in "
                         "power.password_file")
    return proc.stdout.strip()     # stderr: ipmitool's notes on cipher suites it tried


def manual(node: Node, action: str) -> str:
    what = {"on": "switch it on", "off": "hold its power button until it is off",
            "cycle": "switch it off, then on again",
            "status": "look at it: power = \"manual\" cannot tell"}[action]
    return f"{node.name} (MAC {node.mac}) is switched by hand: {what}"


def switch(cluster: Cluster, name: str, action: str, *, run: Run = subprocess.run,
           wol: Callable[[str, str], None] = send_wol) -> Result:
    """Do `action` to node `name`; PowerError (changing nothing) for what cannot be done."""
    node = _node(cluster, name)
    if action not in ACTIONS:
        raise PowerError(f"{name}: unknown power action '{action}'; use one of "
                         f"{', '.join(ACTIONS)}")
    method = node.power.method
    if method == "ipmi":
        return Result(name, action, ipmi(node, action, run))
    if method == "manual":
        return Result(name, action, manual(node, action))
    if action != "on":
        raise PowerError(f"{name}: Wake-on-LAN can only switch a PC on, not `{action}` it; "
                         "do that at the PC, or give the node a BMC in the cluster file: "
                         "power = { ipmi = \"…\", user = \"…\", password_file = \"…\" }")
    interface = cluster.provisioning.interface
    try:
        wol(node.mac, interface)
    except OSError as e:
        raise PowerError(f"{name}: cannot send Wake-on-LAN on {interface} ({e.strerror}); "
                         "run as root, on the host with network.provisioning.interface") \
            from None
    return Result(name, action, f"{name}: Wake-on-LAN packet for {node.mac} sent on "
                  f"{interface} (the PC must have Wake-on-LAN enabled in its firmware)")


def check(cluster: Cluster, name: str, *, run: Run = subprocess.run,
          wol_check: Callable[[str], None] = lambda i: wol_socket(i).close()) -> str:
    """Whether node `name`'s power can be switched from here, switching nothing: the
    Wake-on-LAN socket on the provisioning interface opens, the BMC answers `chassis power
    status`. What was found, or PowerError naming the node and the fix."""
    node = _node(cluster, name)
    if node.power.method == "ipmi":
        return f"{name}: BMC at {node.power.address}: {ipmi(node, 'status', run)}"
    if node.power.method == "manual":
        return f"{name}: power = \"manual\": you switch it on when asked"
    interface = cluster.provisioning.interface
    try:
        wol_check(interface)
    except OSError as e:
        fix = ("run as root" if e.errno == errno.EPERM else "run this on the serving host, "
               "which has network.provisioning.interface")
        raise PowerError(f"{name}: cannot send Wake-on-LAN on {interface} ({e.strerror}); "
                         f"{fix}") from None
    return f"{name}: Wake-on-LAN on {interface}"


def _node(cluster: Cluster, name: str) -> Node:
    for node in cluster.nodes:
        if node.name == name:
            return node
    raise PowerError(f"no node '{name}' in {cluster.file}: use one of "
                     f"{', '.join(n.name for n in cluster.nodes)}")
