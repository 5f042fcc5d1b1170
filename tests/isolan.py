"""A management VLAN made of network namespaces for the ISO tests and bench/bench_iso.py:
one namespace holds a bridge (the switch), each host namespace is plugged into it by a veth
pair, optionally shaped with tc to a link's speed. Nothing touches the machine's own network.

    with Lan(tmp_path, hosts=4, mbit=1000) as lan:
        lan.sender.netns, lan.receivers[0].address ...
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.231.0"


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: str
    root: str           # its ISO directory (each namespace shares our file system)


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    done = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed: {done.stderr.strip()}")
    return done.stdout


class Lan:
    def __init__(self, workdir: Path, hosts: int, mbit: int = 0):
        self.workdir = Path(workdir)
        self.count, self.mbit = hosts, mbit
        self.prefix = f"gii{os.getpid() % 100000}"
        self.switch = f"{self.prefix}-sw"
        self.sender: Host
        self.receivers: list[Host] = []
        self.made: list[str] = []
        self.setup_seconds = 0.0

    def __enter__(self) -> Lan:
        start = time.monotonic()
        try:
            self._netns(self.switch)
            sh("ip", "link", "add", "br0", "type", "bridge", netns=self.switch)
            sh("ip", "link", "set", "br0", "up", netns=self.switch)
            self.sender = self._host("master", 1)
            self.receivers = [self._host(f"node{i}", 10 + i) for i in range(1, self.count + 1)]
        except BaseException:
            self.__exit__()
            raise
        self.setup_seconds = time.monotonic() - start
        return self

    def __exit__(self, *exc) -> None:
        for netns in reversed(self.made):
            for pid in sh("ip", "netns", "pids", netns, check=False).split():
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            sh("ip", "netns", "delete", netns, check=False)

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "link", "set", "lo", "up", netns=name)

    def _host(self, name: str, octet: int) -> Host:
        netns = f"{self.prefix}-{name}"
        self._netns(netns)
        port = f"p{octet}"
        sh("ip", "link", "add", port, "netns", self.switch, "type", "veth", "peer", "name",
           "eth0", "netns", netns)
        sh("ip", "link", "set", port, "master", "br0", "up", netns=self.switch)
        address = f"{SUBNET}.{octet}"
        sh("ip", "addr", "add", f"{address}/24", "dev", "eth0", netns=netns)
        sh("ip", "link", "set", "eth0", "up", netns=netns)
        if self.mbit:
            # Both directions of the link at a NIC's speed: the host's send side, and the
            # switch port's send side (what the host receives).
            for ns, dev in ((netns, "eth0"), (self.switch, port)):
                sh("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{self.mbit}mbit",
                   "burst", "256kb", "latency", "20ms", netns=ns)
        root = self.workdir / name / "iso"
        root.mkdir(parents=True, exist_ok=True)
        return Host(name, netns, address, str(root))
