#!/usr/bin/env python3
"""ISO benchmark: one ISO to N nodes, our way (uftp multicast once to all, then sha256 and
rename on each node: installer.master.isodist) against one `scp` after another to each node
(the way gnt-cluster copyfile sends). Prints figures; asserts nothing. Root only.

    .venv/bin/python bench/bench_iso.py [--size-mib 600] [--nodes 1,2,4,8] [--mbit 1000]

The LAN: network namespaces on one bridge (tests/isolan.py), each link shaped with tc tbf to
--mbit in both directions, as gigabit NICs on a switch. Each receiver namespace runs sshd
(for scp) and gets a uftpd per transfer; its /iso is a tmpfs directory, standing in for the
node's own disk. All nodes share this machine's cores: the checksums that real nodes
compute each on their own CPU here queue for the same two, so "ours" includes that wait;
"ours, transfer" is the multicast alone. So does the packet work: every multicast packet is
copied by the bridge to N veths, shaped N times and taken in by N uftpd, all on the same
cores, which real nodes each do on their own. "idle" is this machine's idle CPU during the
multicast: near 0 % means the figure measures this machine, not the network; a lower --mbit
(an office's 100 Mbit/s switch) shows the scaling where the cores keep up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from installer.master import isodist, isos, multicast  # noqa: E402
from installer.master.nodeshell import NetnsShell  # noqa: E402
from tests.isolan import Lan  # noqa: E402

SSHD_CONFIG = """ListenAddress {address}
HostKey {key}
AuthorizedKeysFile {authorized}
PermitRootLogin yes
StrictModes no
UsePAM no
PidFile none
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def sshd(lan: Lan, work: Path) -> tuple[str, list[subprocess.Popen]]:
    """sshd in every receiver namespace; the client key."""
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{key}.pub", work / "authorized_keys")
    os.makedirs("/run/sshd", exist_ok=True)
    procs = []
    for host in lan.receivers:
        conf = work / f"sshd-{host.name}.conf"
        conf.write_text(SSHD_CONFIG.format(address=host.address, key=key,
                                           authorized=work / "authorized_keys"))
        procs.append(subprocess.Popen(["ip", "netns", "exec", host.netns, "/usr/sbin/sshd",
                                       "-D", "-e", "-f", str(conf)],
                                      stderr=subprocess.DEVNULL))
    time.sleep(1)
    return str(key), procs


def scp_one_after_another(lan: Lan, hosts, key: str, path: str) -> float:
    start = time.monotonic()
    for host in hosts:
        subprocess.run(["ip", "netns", "exec", lan.sender.netns, "scp", "-q", "-i", key,
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "LogLevel=ERROR", path, f"root@{host.address}:{host.root}/scp.iso"],
                       check=True)
    return time.monotonic() - start


def cpu_idle() -> tuple[int, int]:
    """(idle and iowait jiffies, all jiffies) of this machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def ours(lan: Lan, hosts, iso: isos.Iso, work: Path) -> tuple[float, float, float]:
    """(all done: received, checksummed, renamed; the multicast alone; idle CPU share
    during the multicast)."""
    shells = [NetnsShell(h.name, h.address, h.root, netns=h.netns) for h in hosts]
    # uftp at 90 % of the link, as serve's default is for a gigabit LAN.
    opts = multicast.Options(lan.sender.address, rate_mbps=lan.mbit * 9 // 10,
                             prefix=("ip", "netns", "exec", lan.sender.netns))
    for shell in shells:        # what a previous round left
        Path(shell.root, iso.name).unlink(missing_ok=True)
        Path(shell.root, ".incoming").mkdir(exist_ok=True)
    sent, (idle0, all0) = time.monotonic(), cpu_idle()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        multicast_alone = multicast.send(iso.path, iso.name, shells, opts, tmp)
        transfer = time.monotonic() - sent
        idle1, all1 = cpu_idle()
        assert all(v is None for v in multicast_alone.values()), multicast_alone
    for shell in shells:
        Path(shell.root, ".incoming", iso.name).unlink(missing_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        results = isodist.distribute(iso, shells, multicast_opts=opts, workdir=tmp,
                                     record=lambda *a: None)
    took = time.monotonic() - start
    bad = [r for r in results if not r.ok or "multicast" not in r.message]
    if bad:
        print(f"  warning: {bad}")
    return took, transfer, (idle1 - idle0) / max(1, all1 - all0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=600)
    p.add_argument("--nodes", default="1,2,4,8")
    p.add_argument("--mbit", type=int, default=1000)
    args = p.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-iso-"))
    tmpfs = work / "lan"
    tmpfs.mkdir()
    size = max(counts) * 2 * args.size_mib + 256
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(tmpfs)],
                   check=True)
    try:
        source = work / "bench.iso"
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        sha = isos.sha256_of(str(source))
        iso = isos.Iso("bench.iso", sha, source.stat().st_size, str(source))
        with Lan(tmpfs, hosts=max(counts), mbit=args.mbit) as lan:
            print(f"LAN of {max(counts)} receivers at {args.mbit} Mbit/s set up in "
                  f"{lan.setup_seconds:.2f} s; ISO {args.size_mib} MiB")
            key, procs = sshd(lan, work)
            try:
                one = scp_one_after_another(lan, lan.receivers[:1], key, str(source))
                print(f"one scp to one node: {one:.1f} s "
                      f"({args.size_mib * 8.388608 / one:.0f} Mbit/s)")
                print(f"{'N':>3} {'scp one by one':>15} {'ours':>8} {'ours, transfer':>15} "
                      f"{'scp/ours':>9} {'ours/one copy':>14} {'idle':>5}")
                for n in counts:
                    hosts = lan.receivers[:n]
                    scp = scp_one_after_another(lan, hosts, key, str(source))
                    total, transfer, idle = ours(lan, hosts, iso, work)
                    print(f"{n:>3} {scp:>14.1f}s {total:>7.1f}s {transfer:>14.1f}s "
                          f"{scp / total:>9.2f} {total / one:>14.2f} {idle:>5.0%}",
                          flush=True)
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait()
    finally:
        subprocess.run(["umount", str(tmpfs)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
