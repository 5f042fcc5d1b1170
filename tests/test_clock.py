"""The agent sets the node's clock from the master's Date header (installer/agent/clock.py).

The clocks here are stand-ins: a test never sets this machine's clock. The netboot VM test
boots a guest whose hardware clock is years behind and reads what the agent did."""

from __future__ import annotations

import calendar

import pytest

from installer.agent import clock

MASTER = calendar.timegm((2026, 12, 2, 13, 40, 0))
DATE = "Wed, 02 Dec 2026 13:40:00 GMT"


class Clocks:
    """This machine's two clocks, as the agent would set them."""

    def __init__(self, now: float, rtc_error: OSError | None = None,
                 system_error: OSError | None = None):
        self.now, self.rtc = now, None
        self.rtc_error, self.system_error = rtc_error, system_error
        self.lines: list[str] = []

    def follow(self, master: float | None) -> float:
        return clock.follow(master, log=self.lines.append, now=lambda: self.now,
                            set_system=self.set_system, set_rtc=self.set_rtc)

    def set_system(self, when: float) -> None:
        if self.system_error:
            raise self.system_error
        self.now = when

    def set_rtc(self, when: float) -> None:
        if self.rtc_error:
            raise self.rtc_error
        self.rtc = when


@pytest.mark.parametrize("header", [DATE, "Wednesday, 02-Dec-26 13:40:00 GMT",
                                    "Wed Dec  2 13:40:00 2026"])
def test_the_masters_date_header_is_read_in_every_http_form(header):
    assert clock.master_time(header) == MASTER


@pytest.mark.parametrize("header", [None, "", "yesterday", "Wed, 32 Dec 2026 13:40:00 GMT"])
def test_a_missing_or_unreadable_date_is_no_time(header):
    assert clock.master_time(header) is None


def test_a_flat_cmos_battery_is_set_to_the_masters_time_with_the_hardware_clock():
    here = Clocks(now=calendar.timegm((2009, 1, 1, 0, 0, 5)))
    skew = here.follow(MASTER)
    assert skew > 17 * 365 * 86400
    assert here.now == MASTER and here.rtc == MASTER
    assert here.lines == ["clock: this machine said 2009-01-01 00:00:05 UTC, 6545 days behind "
                          "the master; set to the master's 2026-12-02 13:40:00 UTC, and the "
                          "hardware clock too"]


def test_a_clock_ahead_is_set_back():
    here = Clocks(now=MASTER + 600)
    assert here.follow(MASTER) == -600
    assert here.now == MASTER
    assert "600 s ahead of the master" in here.lines[0]


def test_a_clock_within_a_minute_is_left_alone():
    for now in (MASTER - 59, MASTER + 59):
        here = Clocks(now=now)
        here.follow(MASTER)
        assert here.now == now and here.rtc is None and here.lines == []


def test_no_master_time_leaves_the_clock_alone():
    here = Clocks(now=0.0)
    assert here.follow(None) == 0.0
    assert here.now == 0.0 and here.lines == []


def test_a_clock_that_cannot_be_set_is_said_and_the_install_goes_on():
    here = Clocks(now=MASTER - 86400 * 30, system_error=PermissionError(1, "not permitted"))
    here.follow(MASTER)                                  # does not raise
    assert here.now == MASTER - 86400 * 30 and here.rtc is None
    assert "could not be set ([Errno 1] not permitted)" in here.lines[0]
    assert "dates checked on this node may be refused" in here.lines[0]


def test_a_machine_without_a_hardware_clock_still_gets_the_system_time():
    here = Clocks(now=MASTER - 3600, rtc_error=FileNotFoundError(2, "No such file", "/dev/rtc0"))
    here.follow(MASTER)
    assert here.now == MASTER
    assert "but not the hardware clock ([Errno 2] No such file: '/dev/rtc0')" in here.lines[0]
