"""Sizes as people write them ("10GiB", "2G", "512M") and as the disk sees them (bytes)."""

from __future__ import annotations

import re
from decimal import Decimal

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
# At most 12 digits before and 6 after the point: any real size, and no 309-digit overflow.
_SIZE = re.compile(r"\s*(\d{1,12}(?:\.\d{1,6})?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse(text: str) -> int:
    """Bytes in a size; binary units whatever the spelling (10G = 10GiB), as parted and LVM do."""
    m = _SIZE.fullmatch(str(text)[:64])
    if not m or len(str(text)) > 64:
        raise ValueError(f"not a size: {str(text)[:64]!r}")
    return int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n: int) -> str:
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"
