#!/usr/bin/env python3
"""Install benchmark: a blank VM installs node1 of the bundled example from the OS image and
boots its own disk, against the raw cost of the same work measured in the same run.

- install: QEMU start to the VM powering off after "installed", with the time of every stage
  (from the agent's reports), then the boot of the installed disk to its login prompt;
- floor: the netboot image's boot (QEMU start to the agent's first report), plus the same
  root file system image streamed from the same server, decompressed and written raw to the
  same kind of virtual disk (a shell in the same netboot image, `rdinit=/bin/sh`), plus the
  disk's boot;
- the agent's own CPU time and peak memory, and its children's, from its final report;
- the OS image's bytes fetched against its size (the agent's console line): a write that
  resumed after a cut fetches the image at most once plus what was in flight.

Target: install + boot ≤ 1.3 × floor. TCG, 1.5 GiB, 2 vCPUs, QEMU user networking. Prints
figures; asserts nothing.

    .venv/bin/python bench/bench_install.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pexpect  # noqa: E402

from installer.build import builder as build  # noqa: E402
from installer.cluster import config  # noqa: E402
from tests.vm.qemu import VM, make_disk  # noqa: E402
from tests.vm.standin import StandinMaster  # noqa: E402

NODE = "node1"
CONSOLE = "console=ttyS0,115200n8"
SHELL = "BENCH# "
FETCHED = re.compile(r"os image: fetched (\d+) bytes for an image of (\d+) bytes "
                     r"\((\d+) resumed, (\d+) restarted\)")


class TimedMaster(StandinMaster):
    """The stand-in master, noting when each report arrived (host clock)."""

    def _record(self, path: str, report: dict) -> None:
        report["received"] = time.monotonic()
        super()._record(path, report)


def vm_for(work: Path, name: str, disk: Path, mac: str, **kw) -> VM:
    kw.setdefault("nics", [f"user,model=virtio-net-pci,mac={mac}"])
    return VM(name, work, memory=1536, cpus=2, disks=[disk], **kw)


def install(work: Path, outdir: Path, cluster, node, **kw) -> dict:
    """`kw`: more VM settings for the install and the disk's boot (uefi=True)."""
    disk = make_disk(work / "install.qcow2")
    with TimedMaster(outdir, cluster.provisioning.base_url) as master:
        vm = vm_for(work, "install", disk, node.mac, kernel=str(outdir / "netboot/vmlinuz"),
                    initrd=str(outdir / "netboot/initrd"),
                    append=f"{CONSOLE} installer.plan={master.url}/plans/{NODE}.json", **kw)
        start = time.monotonic()
        vm.start()
        vm.expect(f"installed {node.fqdn}", timeout=1800)
        vm.child.expect(pexpect.EOF, timeout=300)
        end = time.monotonic()
        reports = [r for _, r in master.reports]
    first = reports[0]["received"] - start
    fetched = FETCHED.search(vm.log_path.read_text(errors="replace"))
    boot = boot_disk(work, disk, node, **kw)
    return {"install": end - start, "netboot_boot": first, "disk_boot": boot,
            "fetched": fetched.groups() if fetched else None,
            "stages": stage_times(reports),
            "usage": next(r.get("usage") for r in reports if r["status"] == "installed")}


def stage_times(reports: list[dict]) -> list[tuple[str, float]]:
    """Each stage's time, from its `started` to its `done` report (the agent's clock)."""
    started, out = {}, []
    for r in reports:
        if r["status"] == "started":
            started[r["step"]] = r["time"]
        elif r["status"] == "done" and r["step"] in started:
            out.append((r["step"], r["time"] - started[r["step"]]))
    return out


def boot_disk(work: Path, disk: Path, node, **kw) -> float:
    vm = vm_for(work, "boot", disk, node.mac, **kw)
    start = time.monotonic()
    vm.start()
    try:
        vm.expect(f"{node.name} login:", timeout=600)
        return time.monotonic() - start
    finally:
        vm.stop()


def raw_write(work: Path, outdir: Path, node) -> dict:
    """The same image bytes over the same network, decompressed and written raw to a disk."""
    disk = make_disk(work / "raw.qcow2")
    with TimedMaster(outdir, "http://unused") as master:
        vm = vm_for(work, "raw", disk, node.mac, kernel=str(outdir / "netboot/vmlinuz"),
                    initrd=str(outdir / "netboot/initrd"), append=f"{CONSOLE} rdinit=/bin/sh")
        vm.start()
        try:
            vm.expect(r"[#$] ", timeout=300)
            for line in ("mount -t proc proc /proc; mount -t sysfs sys /sys; "
                         "mount -t devtmpfs dev /dev",
                         "modprobe -a virtio_pci virtio_blk virtio_net",
                         "ip link set lo up; ip link set eth0 up; "
                         "ip addr add 10.0.2.15/24 dev eth0", "PS1='BENCH''# '"):
                vm.child.sendline(line)
            vm.expect(SHELL, timeout=120)
            url = f"{master.url}/images/bookworm.ext4.zst"
            fetch = ("import requests,shutil,sys; r=requests.get(sys.argv[1],stream=True); "
                     "shutil.copyfileobj(r.raw,sys.stdout.buffer,1<<20)")
            # Timed on the host: the guest's clock has jumped under TCG mid-write.
            start = time.monotonic()
            vm.child.sendline(
                f"python3 -c '{fetch}' {url} | zstd -dc | "
                "dd of=/dev/vda bs=4M oflag=direct iflag=fullblock 2>/tmp/dd; "
                "echo RAW$((1+1)) $(tail -1 /tmp/dd)")
            vm.expect(r"RAW2 (\d+) bytes", timeout=1800)
            return {"seconds": time.monotonic() - start,
                    "bytes": int(vm.child.match.group(1))}
        finally:
            vm.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="keep VMs' logs here (default: a temporary directory)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        cluster = config.load(str(REPO / "examples/cluster.toml"))
        outdir = work / "out"
        build.build(cluster, str(outdir), progress=lambda m: None)     # images: from the cache
        node = next(n for n in cluster.nodes if n.name == NODE)
        got = install(work, outdir, cluster, node)
        raw = raw_write(work, outdir, node)
    report(got, raw, outdir)


def report(got: dict, raw: dict, outdir: Path) -> None:
    print("install stages (agent clock):")
    for step, seconds in got["stages"]:
        print(f"  {step:<11} {seconds:7.1f} s")
    total = got["install"] + got["disk_boot"]
    floor = got["netboot_boot"] + raw["seconds"] + got["disk_boot"]
    print(f"netboot boot to the agent's first report: {got['netboot_boot']:.1f} s")
    print(f"install, QEMU start to power-off:         {got['install']:.1f} s")
    print(f"installed disk's boot to login:           {got['disk_boot']:.1f} s")
    print(f"raw write of the root image's {raw['bytes'] / 2**20:.0f} MiB (fetch, unzstd, dd): "
          f"{raw['seconds']:.1f} s")
    print(f"total (install + boot): {total:.1f} s; floor (boot + raw write + boot): "
          f"{floor:.1f} s; ratio {total / floor:.2f} (target <= 1.30)")
    if got["fetched"]:
        fetched, size, resumed, restarted = map(int, got["fetched"])
        print(f"OS image: fetched {fetched} bytes for its {size} bytes ({resumed} resumed, "
              f"{restarted} restarted)")
    else:
        print("OS image: the agent said no bytes fetched (an agent older than the resume?)")
    u = got["usage"] or {}
    print(f"agent: CPU {u.get('cpu_s')} s, peak RSS {u.get('max_rss_kib', 0) / 1024:.1f} MiB; "
          f"its children: CPU {u.get('children_cpu_s')} s, largest peak RSS "
          f"{u.get('children_max_rss_kib', 0) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
