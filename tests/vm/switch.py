"""The office LAN for VM tests: a VLAN-aware switch with hosts on its ports.

It stands in for the paper's managed switch: trunk ports carry the untagged provisioning VLAN
plus tagged VLAN 100 and 200 (what each node's NIC is plugged into), access ports put one host
on one VLAN. The host kernel here has neither VLAN filtering in its bridge nor 8021q, so the
switch is VDE's `vde_switch` (a userspace VLAN-aware switch QEMU plugs into directly), and each
host is a network namespace made by the test whose tap `vde_plug2tap` plugs into an access port.
Nothing here touches the machine's own network.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

UNTAGGED = 0          # VDE's default VLAN: untagged frames
TRUNK_PORTS = range(1, 9)


@dataclass
class Host:
    """A network namespace with a NIC (`eth0`) on an access port of the switch (and more
    NICs on other VLANs' ports: Switch.plug)."""
    netns: str
    port: int
    vlan: int
    addresses: list[str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns] + argv

    def run(self, argv: list[str], check: bool = True, timeout: float = 60) -> str:
        out = subprocess.run(self.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{self.netns}: {' '.join(argv)} failed:\n{out.stdout}")
        return out.stdout

    def ok(self, argv: list[str]) -> bool:
        return subprocess.run(self.argv(argv), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0

    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv(argv), **kwargs)
        self.procs.append(proc)
        return proc

    def ping(self, address: str, count: int = 2) -> bool:
        return self.ok(["ping", "-c", str(count), "-W", "2", address])


class Switch:
    opened = itertools.count()

    def __init__(self, workdir: Path, vlans=(100, 200)):
        self.workdir = Path(workdir)
        self.sock = self.workdir / "switch"
        self.vlans = tuple(vlans)
        # One prefix per switch: the office's switch lives for the whole session, so another
        # switch of the same process may have hosts of the same names.
        self.prefix = f"gi{os.getpid() % 100000}s{next(Switch.opened)}"
        self.hosts: list[Host] = []
        self.next_port = 20
        self.pids: list[Path] = []

    def __enter__(self) -> Switch:
        for tool in ("vde_switch", "vde_plug2tap", "ip", "ping"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} is missing: run ./build.sh --deps-only")
        self.workdir.mkdir(parents=True, exist_ok=True)
        rc = [f"vlan/create {vid}" for vid in self.vlans]
        for port in TRUNK_PORTS:
            rc.append(f"port/create {port}")
            rc += [f"vlan/addport {vid} {port}" for vid in self.vlans]
        (self.workdir / "switch.rc").write_text("\n".join(rc) + "\n")
        pid = self.workdir / "switch.pid"
        subprocess.run(["vde_switch", "--sock", str(self.sock), "--mgmt",
                        str(self.workdir / "switch.mgmt"), "--rcfile",
                        str(self.workdir / "switch.rc"), "--daemon", "--pidfile", str(pid)],
                       check=True)
        self.pids.append(pid)
        _wait_for(self.sock / "ctl")
        return self

    def __exit__(self, *exc) -> None:
        for host in self.hosts:
            for proc in host.procs:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for pid in reversed(self.pids):
            try:
                os.kill(int(pid.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        for host in self.hosts:
            subprocess.run(["ip", "netns", "delete", host.netns], stderr=subprocess.DEVNULL)

    def trunk(self, port: int, mac: str) -> str:
        """A QEMU `-nic` option: a virtio NIC on trunk port `port` (untagged + 100 + 200)."""
        assert port in TRUNK_PORTS
        return f"vde,sock={self.sock},port={port},model=virtio-net-pci,mac={mac}"

    def host(self, name: str, vlan: int, addresses: list[str]) -> Host:
        """A namespace `<prefix>-<name>` on an access port of `vlan` (0: untagged)."""
        host = Host(f"{self.prefix}-{name}", self.next_port, vlan, addresses)
        if Path(f"/run/netns/{host.netns}").exists():
            raise RuntimeError(f"{host.netns} exists, left by an earlier test run: "
                               f"ip netns delete {host.netns}")
        subprocess.run(["ip", "netns", "add", host.netns], check=True)
        self.hosts.append(host)
        _wait_for(Path(f"/run/netns/{host.netns}"))
        host.run(["ip", "link", "set", "lo", "up"])
        self.plug(host, vlan, "eth0", addresses)
        return host

    def plug(self, host: Host, vlan: int, ifname: str, addresses: list[str]) -> None:
        """A tap `ifname` in the host's namespace on a new access port of `vlan`."""
        port, self.next_port = self.next_port, self.next_port + 1
        if vlan != UNTAGGED:
            self._mgmt(f"port/create {port}", f"port/setvlan {port} {vlan}")
        pid = self.workdir / f"plug-{host.netns}-{ifname}.pid"
        subprocess.run(host.argv(["vde_plug2tap", "--sock", str(self.sock), "--port", str(port),
                                  "--daemon", "--pidfile", str(pid), ifname]), check=True)
        self.pids.append(pid)
        for _ in range(100):   # the tap appears once vde_plug2tap is running
            if host.ok(["ip", "link", "show", ifname]):
                break
            time.sleep(0.1)
        for address in addresses:
            host.run(["ip", "addr", "add", address, "dev", ifname])
        host.run(["ip", "link", "set", ifname, "up"])

    def _mgmt(self, *commands: str) -> None:
        """Commands on the switch's management console (as a managed switch's CLI)."""
        import socket
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.workdir / "switch.mgmt"))
            s.settimeout(5)
            s.recv(4096)   # banner and prompt
            for command in commands:
                s.sendall(command.encode() + b"\n")
                reply = b""
                while b"1000 Success" not in reply and b"\n10" not in reply[-200:]:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                if b"1000 Success" not in reply:
                    raise RuntimeError(f"switch: {command}: {reply.decode(errors='replace')}")


def _wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.05)
