#!/usr/bin/env python3
"""Install-stick benchmark: the time `ganeti-installer usb` takes to make the stick image
from a built OUTDIR (the bundled example's by default), and the image's size against what it
carries. Prints figures; asserts nothing. The install time from the stick against a PXE
install of the same PC is measured by tests/test_usb_vm.py and tests/test_install_vm.py,
which print their setup times.

    .venv/bin/python bench/bench_usb.py [--outdir out/cluster] [--runs 3]

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
    args = p.parse_args()
    cluster = os.path.join(REPO, "examples", "cluster.toml")
    times, size = [], 0
    with tempfile.TemporaryDirectory(prefix="gi-bench-usb-") as work:
        stick = os.path.join(work, "stick.img")
        for _ in range(args.runs):
            start = time.monotonic()
            subprocess.run(CLI + ["usb", cluster, args.outdir, "--output", stick, "--state",
                                  os.path.join(work, "state")], check=True, cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL)
            times.append(time.monotonic() - start)
            size = os.path.getsize(stick)
            used = os.stat(stick).st_blocks * 512
    mib = 1 << 20
    print(f"stick image: {size / mib:.0f} MiB ({used / mib:.0f} MiB allocated), carrying "
          f"{carried(args.outdir) / mib:.0f} MiB from {args.outdir}")
    print(f"made in {statistics.median(times):.2f} s (median of {args.runs}; "
          f"{', '.join(f'{t:.2f}' for t in times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
