"""The node's clock, set from the master's before anything on the node checks a date.

An old PC whose CMOS battery is flat boots in its BIOS's year. apt then refuses the archive's
Release file ("not valid yet"), and Ganeti's verify a node whose time diverges from the
master's. The HTTP Date header of the plan's answer is a clock every node reads before it
does anything else: the agent steps the system clock to it when the two differ by more than
MAX_SKEW, and writes the hardware clock too, so that the installed system boots with the
right time before its NTP daemon takes over.
"""

from __future__ import annotations

import datetime
import email.utils
import fcntl
import struct
import time
from typing import Callable, Optional

MAX_SKEW = 60.0             # seconds; Ganeti's verify allows 150 between nodes
RTC = "/dev/rtc0"
RTC_SET_TIME = 0x4024700A   # _IOW('p', 0x0a, struct rtc_time): nine ints, UTC as Debian keeps it


def master_time(date_header: Optional[str]) -> Optional[float]:
    """Seconds since the epoch in an HTTP Date header; None when it is missing or unreadable."""
    if not date_header:
        return None
    try:
        when = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:     # asctime form: HTTP dates are always UTC (RFC 9110)
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def system_clock(when: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, when)


def hardware_clock(when: float) -> None:
    """The RTC, in UTC (Debian's default), so the next boot starts at the right time."""
    tm = time.gmtime(when)
    rtc_time = struct.pack("9i", tm.tm_sec, tm.tm_min, tm.tm_hour, tm.tm_mday,
                           tm.tm_mon - 1, tm.tm_year - 1900, 0, 0, 0)
    with open(RTC, "wb") as rtc:
        fcntl.ioctl(rtc, RTC_SET_TIME, rtc_time)


def follow(master: Optional[float], *, log: Callable[[str], None] = print,
           now: Callable[[], float] = time.time,
           set_system: Callable[[float], None] = system_clock,
           set_rtc: Callable[[float], None] = hardware_clock) -> float:
    """Step this machine's clocks to the master's if they differ by more than MAX_SKEW.

    Returns the skew (master minus here, seconds). Never raises: a clock left wrong is said
    on the console, and the install goes on."""
    if master is None:
        return 0.0
    here = now()
    skew = master - here
    if abs(skew) <= MAX_SKEW:
        return skew
    was, far = _utc(here), _how_far(skew)
    try:
        set_system(master)
    except OSError as e:
        log(f"clock: this machine says {was}, {far} the master, and could not be set ({e}): "
            "dates checked on this node may be refused")
        return skew
    try:
        set_rtc(master)
        rtc = "and the hardware clock too"
    except OSError as e:
        rtc = f"but not the hardware clock ({e})"
    log(f"clock: this machine said {was}, {far} the master; set to the master's "
        f"{_utc(master)}, {rtc}")
    return skew


def _how_far(skew: float) -> str:
    days = abs(skew) / 86400
    amount = f"{days:.0f} days" if days >= 2 else f"{abs(skew):.0f} s"
    return f"{amount} {'behind' if skew > 0 else 'ahead of'}"


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
