"""The paper's test ISO, shrunk to what TCG inside TCG can boot in seconds: GRUB (Debian's
grub-pc-bin, put on a CD by grub-mkrescue and xorriso) printing a marker on the serial line
over and over, so a reader that attaches late (Ganeti's serial socket keeps no backlog), or
after a migration, still sees it. No `sleep` between: GRUB times it by the TSC, and a guest
migrated between two TCG nodes can find its TSC behind where it left it (CI once saw no
marker for 120 s after a migration), so a timed loop could wait that long."""

from __future__ import annotations

import subprocess
from pathlib import Path

MARKER = "GI-TESTVM booted from CD"
GRUB_CFG = f"""\
serial --unit=0 --speed=38400
terminal_input serial
terminal_output serial
while true; do echo "{MARKER}"; done
"""


def build(path: Path) -> Path:
    """A BIOS-bootable ISO at path (about 10 MiB)."""
    root = path.parent / (path.name + ".root")
    (root / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    (root / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    subprocess.run(["grub-mkrescue", "-d", "/usr/lib/grub/i386-pc", "-o", str(path),
                    str(root)], check=True, capture_output=True)
    return path
