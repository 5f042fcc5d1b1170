#!/usr/bin/env python3
"""Build benchmark: render time for a generated 40-node cluster, warm rebuild time with no
change, and the sizes of the kernel, initrd and OS image. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_build.py [--nodes 40] [--images] [--cold]

--images also times `build` twice on the bundled example (the second run is the warm
rebuild; target < 10 s). --cold points the image cache at an empty directory first, so the
first build is a cold one (minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tomli_w  # noqa: E402

from installer.build import builder as build
from installer.build import render
from installer.cluster import (
    config,
    sizes,  # noqa: E402
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cluster_file(nodes: int, folder: str) -> str:
    with open(os.path.join(REPO, "examples", "cluster.toml"), "rb") as f:
        data = tomllib.load(f)
    data["network"]["management"]["cidr"] = "192.168.16.0/21"
    data["network"]["management"]["gateway"] = "192.168.16.1"
    data["network"]["management"]["dns"] = ["192.168.16.1"]
    data["nodes"] = [{"name": f"node{i + 1}", "mac": f"52:54:00:20:{i // 256:02x}:{i % 256:02x}",
                      "ip": f"192.168.{17 + i // 250}.{10 + i % 250}"} for i in range(nodes)]
    path = os.path.join(folder, f"cluster-{nodes}.toml")
    with open(path, "wb") as f:
        tomli_w.dump(data, f)
    return path


def bench_render(nodes: int, runs: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = cluster_file(nodes, tmp)
        times = []
        for i in range(runs):
            start = time.perf_counter()
            cluster = config.load(path)
            written = render.render(cluster, os.path.join(tmp, f"out{i}"))
            times.append(time.perf_counter() - start)
        print(f"render, {nodes} nodes (validate + plans + PXE + dnsmasq, {len(written)} files): "
              f"median {statistics.median(times):.3f} s, max {max(times):.3f} s over {runs} "
              f"runs (target < 2 s)")


def bench_images(cold: bool) -> None:
    if cold:
        os.environ["GANETI_INSTALLER_CACHE"] = tempfile.mkdtemp(prefix="gi-cold-cache-")
    cluster = config.load(os.path.join(REPO, "examples", "cluster.toml"))
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("first" + (" (cold)" if cold else ""), "warm rebuild, no change"):
            start = time.perf_counter()
            summary = build.build(cluster, tmp, progress=lambda m: None)
            took = time.perf_counter() - start
            print(f"build, {label}: {took:.1f} s")
        for name, a in summary["artifacts"].items():
            print(f"  {name}: {sizes.human(a['size'])} ({a['size']} bytes)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=40)
    p.add_argument("--images", action="store_true")
    p.add_argument("--cold", action="store_true")
    args = p.parse_args()
    bench_render(args.nodes)
    if args.images or args.cold:
        bench_images(args.cold)


if __name__ == "__main__":
    main()
