#!/usr/bin/env python3
"""Rebuild benchmark (issue 16): how long `ganeti-installer rebuild node2` takes, against the
same node's first install in the same run.

It runs the VM cluster test (tests/test_cluster_vm.py, about 25 minutes under TCG): two PXE
installs and the join, testvm on DRBD, its failover with node2 powered off, then the rebuild
of node2 over its own earlier install. The test hands its figures over in a JSON file; this
prints them, phase by phase:

- rebuild, from the command: its checks, the evacuation and offline marking, and the
  Wake-on-LAN packet (woken); the PC's network boot, the teardown of its old install and
  the install (installed); the boot and the join with --readd (joined); activate-disks,
  replace-disks, the DRBD resync of testvm's disk and gnt-cluster verify (in sync);
- first install, from power-on: installed, joined (node1's install ran beside it, and the
  cluster was bootstrapped on node1 first).

    .venv/bin/python bench/bench_rebuild.py [--keep-log FILE]

Prints figures; asserts nothing of them (the test asserts the rebuild's outcome).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cluster_test(figures: Path, log: Path) -> int:
    env = dict(os.environ, GI_REBUILD_FIGURES=str(figures), PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
            "tests/test_cluster_vm.py"]
    with open(log, "w") as out:
        return subprocess.run(argv, cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode


def report(figures: dict) -> None:
    r, f = figures["rebuild"], figures["first install"]
    print("rebuild of node2, seconds from the command:")
    print(f"  checks, evacuate, offline, Wake-on-LAN  {r['woken']:6d}")
    print(f"  network boot, teardown, install        {r['installed'] - r['woken']:6d}")
    print(f"  boot and join --readd                  {r['joined'] - r['installed']:6d}")
    print(f"  replace-disks, DRBD resync, verify     {r['in sync'] - r['joined']:6d}")
    print(f"  total: joined {r['joined']} s, in sync {r['in sync']} s")
    print("first install of node2, seconds from power-on (beside node1's):")
    print(f"  network boot and install               {f['installed']:6d}")
    print(f"  boot and join (after node1's init)     {f['joined'] - f['installed']:6d}")
    print(f"  total: joined {f['joined']} s")
    print(f"rebuild to joined / first install to joined: {r['joined'] / f['joined']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-log", type=Path, help="the test's output, kept here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures, log = Path(tmp) / "figures.json", args.keep_log or Path(tmp) / "test.log"
        rc = run_cluster_test(figures, log)
        if not figures.exists():
            print(f"the cluster test gave no figures (pytest exit {rc}); its output:\n"
                  + log.read_text()[-4000:], file=sys.stderr)
            return 1
        report(json.loads(figures.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
