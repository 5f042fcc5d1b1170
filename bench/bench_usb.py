#!/usr/bin/env python3
"""Install-stick benchmark: the time `ganeti-installer usb` takes to make the stick image
from a built OUTDIR (the bundled example's by default), and the image's size against what it
carries; once more with --all (OUTDIR, serve's state and the program for the master). With
--install, also the same PC (QEMU, TCG, OVMF, 1.5 GiB, 2 vCPUs) installed twice in the same
run: once from the stick with no network, once over the network from a stand-in master (the
netboot kernel and initrd loaded by QEMU, as iPXE would: bench/bench_install.py's install), each
from QEMU's start to the power-off after "installed" (the stick's with its 10 s "remove the
stick" wait), then the installed disk's boot to its login prompt.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_usb.py [--outdir out/cluster] [--runs 3] [--install]

Run ./build.sh first (it builds out/cluster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-c", "import sys; from installer.cli import main; sys.exit(main())"]


def carried(outdir: str) -> int:
    """Bytes of what the stick carries from OUTDIR: the netboot pair, the OS image the
    install writes (not the tarball a debootstrap-less wheezy would want), the plans."""
    total = 0
    for folder, keep in (("netboot", ""), ("images", ".ext4.zst"), ("plans", "")):
        for root, _, files in os.walk(os.path.join(outdir, folder)):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files if keep in f)
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--outdir", default=os.path.join(REPO, "out", "cluster"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--install", action="store_true",
                   help="also install a VM from the stick and over the network; ~10 minutes")
    args = p.parse_args()
    cluster = os.path.join(REPO, "examples", "cluster.toml")
    times, size = [], 0
    with tempfile.TemporaryDirectory(prefix="gi-bench-usb-") as work:
        stick = os.path.join(work, "stick.img")
        for _ in range(args.runs):
            start = time.monotonic()
            make_stick(cluster, args.outdir, stick, work)
            times.append(time.monotonic() - start)
            size = os.path.getsize(stick)
            used = os.stat(stick).st_blocks * 512
        start = time.monotonic()
        make_stick(cluster, args.outdir, stick + ".all", work, "--all")
        all_time, all_size = time.monotonic() - start, os.path.getsize(stick + ".all")
        if args.install:
            installs = compare_installs(work, stick, args.outdir)
    mib = 1 << 20
    print(f"stick image: {size / mib:.0f} MiB ({used / mib:.0f} MiB allocated), carrying "
          f"{carried(args.outdir) / mib:.0f} MiB from {args.outdir}")
    print(f"made in {statistics.median(times):.2f} s (median of {args.runs}; "
          f"{', '.join(f'{t:.2f}' for t in times)})")
    print(f"with --all (the master serves from it): {all_size / mib:.0f} MiB, made in "
          f"{all_time:.2f} s")
    if args.install:
        for how, (install, boot) in installs.items():
            print(f"{how:<22} install {install:6.1f} s, disk boot to login {boot:5.1f} s, "
                  f"total {install + boot:6.1f} s")
        (si, sb), (ni, nb) = installs["from the stick"], installs["over the network"]
        print(f"stick / network: {(si + sb) / (ni + nb):.2f} (install alone "
              f"{si / ni:.2f})")
    return 0


def make_stick(cluster: str, outdir: str, stick: str, work: str, *extra: str) -> None:
    subprocess.run(CLI + ["usb", cluster, outdir, "--output", stick, "--state",
                          os.path.join(work, "state"), *extra], check=True, cwd=REPO,
                   env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL)


def compare_installs(work: str, stick: str, outdir: str) -> dict[str, tuple[float, float]]:
    """(install seconds, disk boot seconds) of one PC from the stick, then over the network."""
    sys.path.insert(0, REPO)
    sys.path.insert(0, os.path.join(REPO, "bench"))
    from pathlib import Path

    import bench_install
    import pexpect

    from installer.cluster import config
    from tests.vm.qemu import make_disk

    cluster = config.load(os.path.join(REPO, "examples", "cluster.toml"))
    node = next(n for n in cluster.nodes if n.name == bench_install.NODE)
    path = Path(work)
    disk = make_disk(path / "stick-install.qcow2")
    # The node's MAC on a NIC with no cable: the stick picks the plan by it.
    vm = bench_install.vm_for(path, "stick", disk, node.mac, stick=Path(stick), nics=[],
                              extra=["-nic", "none", "-device",
                                     f"virtio-net-pci,mac={node.mac}"], uefi=True)
    start = time.monotonic()
    vm.start()
    try:
        vm.expect("remove the stick; rebooting in 10 s", timeout=2400)
        vm.child.expect(pexpect.EOF, timeout=180)
        stick_install = time.monotonic() - start    # with its 10 s "remove the stick"
    finally:
        vm.stop()
    stick_boot = bench_install.boot_disk(path, disk, node, uefi=True, nics=[],
                                         extra=["-nic", "none", "-device",
                                                f"virtio-net-pci,mac={node.mac}"])
    got = bench_install.install(path, Path(outdir), cluster, node, uefi=True)
    return {"from the stick": (stick_install, stick_boot),
            "over the network": (got["install"], got["disk_boot"])}


if __name__ == "__main__":
    sys.exit(main())
