#!/usr/bin/env python3
"""Netboot benchmark: sizes of the whole-root initramfs against a squashfs of the same root,
and boot times under QEMU (TCG, 1 GiB) to the kernel's initramfs unpack and to the agent.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_netboot.py [OUTDIR]    (OUTDIR of a build; default out/cluster)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from installer.build import images  # noqa: E402
from installer.cluster import sizes  # noqa: E402
from tests.vm.qemu import VM  # noqa: E402


def unpack_initrd(initrd: Path, root: Path) -> None:
    """Both archives of the initrd: the plain agent cpio, then the zstd root after it."""
    agent, compressed = images.split_initrd(initrd.read_bytes())
    cpio = ["cpio", "-idm", "--quiet", "--no-absolute-filenames"]
    subprocess.run(cpio, input=agent, cwd=root, check=True)
    root_cpio = subprocess.run(["zstd", "-dc"], input=compressed, capture_output=True,
                               check=True).stdout
    subprocess.run(cpio, input=root_cpio, cwd=root, check=True)


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def sizes_report(initrd: Path, kernel: Path) -> None:
    print(f"kernel: {sizes.human(kernel.stat().st_size)}")
    print(f"initrd (whole root, cpio + zstd): {sizes.human(initrd.stat().st_size)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        unpack_initrd(initrd, root)
        print(f"root unpacked in RAM (tmpfs): {sizes.human(du(root))}")
        for comp in ("zstd", "xz"):
            sq = Path(tmp) / f"root.{comp}.squashfs"
            subprocess.run(["mksquashfs", str(root), str(sq), "-comp", comp, "-quiet",
                            "-no-progress"], check=True, stdout=subprocess.DEVNULL)
            print(f"same root as squashfs ({comp}): {sizes.human(sq.stat().st_size)}")


def boot_times(initrd: Path, kernel: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vm = VM("bench", Path(tmp), memory=1024, kernel=str(kernel), initrd=str(initrd),
                append="console=ttyS0,115200n8")
        start = time.monotonic()
        vm.start()
        try:
            vm.expect(r"Freeing initrd memory", timeout=600)
            unpacked = time.monotonic() - start
            vm.expect(r"ganeti-installer agent \S+", timeout=600)
            agent = time.monotonic() - start
        finally:
            vm.stop()
        log = vm.log_path.read_text(errors="replace")
    stamp = re.search(r"\[\s*([\d.]+)\] Freeing initrd memory", log)
    print(f"QEMU TCG 1 GiB: initramfs unpacked at {unpacked:.1f} s wall "
          f"(kernel clock {stamp.group(1) if stamp else '?'} s); agent banner at {agent:.1f} s")


def main() -> None:
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "out" / "cluster")
    kernel, initrd = outdir / "netboot/vmlinuz", outdir / "netboot/initrd"
    if not initrd.exists():
        sys.exit(f"{initrd} is missing: run ./build.sh first")
    sizes_report(initrd, kernel)
    boot_times(initrd, kernel)


if __name__ == "__main__":
    main()
