"""How the agent waits for the master (installer/agent/retry.py): which errors it waits out,
how long it pauses, when it gives up. A fake clock stands in for time: no test sleeps."""

from __future__ import annotations

import http.client
import re
import socket

import pytest
import requests

from installer.agent import retry


class Clock:
    """Monotonic time that moves only when the Waiter sleeps (or a fetch takes time)."""

    def __init__(self):
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def waiter(clock: Clock, lines: list, limit: float = retry.LIMIT, waits=None) -> retry.Waiter:
    return retry.Waiter(limit, log=lines.append, clock=lambda: clock.now,
                        wall=lambda: 1764720000.0 + clock.now, sleep=clock.sleep,
                        rand=lambda: 0.5,
                        on_wait=(lambda what, s: waits.append((what, s))) if waits is not None
                        else None)


def failing(errors: list, result="answer"):
    """A fetch raising each of `errors` in turn, then answering."""
    calls = []

    def fetch():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result
    fetch.calls = calls
    return fetch


AWAY = [requests.ConnectionError("[Errno 111] Connection refused"),
        requests.ConnectTimeout("connect timed out"), requests.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
        ConnectionResetError(104, "Connection reset by peer"),
        http.client.IncompleteRead(b"", 100), http.client.RemoteDisconnected("closed"),
        TimeoutError("timed out"), retry.HTTPStatus("http://m/x", 500),
        retry.HTTPStatus("http://m/x", 502), retry.HTTPStatus("http://m/x", 503)]
NO = [retry.HTTPStatus("http://m/api/v1/plans/52-54-00-00-00-01", code)
      for code in (401, 403, 404, 409)]
OTHER = [retry.HTTPStatus("http://m/x", 400), retry.HTTPStatus("http://m/x", 413),
         ValueError("not JSON"), BrokenPipeError(32, "zstd died"), KeyError("url"),
         requests.exceptions.InvalidURL("bad")]


@pytest.mark.parametrize("error", AWAY, ids=lambda e: type(e).__name__ + str(e)[:12])
def test_a_master_away_or_cut_off_is_waited_for(error):
    assert retry.classify(error) == retry.RETRY
    assert retry.decide(error, 0, 0.0).action == retry.RETRY


@pytest.mark.parametrize("error", NO, ids=lambda e: str(e.status))
def test_the_masters_no_is_asked_again_once_a_minute(error):
    assert retry.decide(error, 0, 0.0) == (retry.REASK, 60.0)
    assert retry.decide(error, 7, 300.0) == (retry.REASK, 60.0)


@pytest.mark.parametrize("error", OTHER, ids=lambda e: type(e).__name__ + str(e)[:12])
def test_anything_else_fails_at_once(error):
    assert retry.decide(error, 0, 0.0) == (retry.FAIL, 0.0)


def test_pauses_double_from_one_second_up_to_thirty():
    upper = [retry.backoff(n, 0.999999) for n in range(8)]
    assert [round(u) for u in upper] == [1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize("attempt", range(8))
def test_jitter_keeps_each_pause_in_the_upper_half_of_its_step(attempt):
    step = min(30.0, 2.0 ** attempt)
    assert retry.backoff(attempt, 0.0) == step / 2
    assert step / 2 <= retry.backoff(attempt, 0.5) < step
    assert retry.backoff(attempt, 0.999) < step


def test_it_gives_up_at_the_limit_and_never_sleeps_past_it():
    refused = requests.ConnectionError("Connection refused")
    assert retry.decide(refused, 20, 1790.0, limit=1800.0) == (retry.RETRY, 10.0)
    assert retry.decide(refused, 20, 1800.0, limit=1800.0).action == retry.GIVE_UP
    assert retry.decide(NO[0], 3, 1799.0, limit=1800.0) == (retry.REASK, 1.0)


def test_the_default_limit_outlasts_a_masters_reboot():
    assert retry.LIMIT == 30 * 60


def test_a_master_back_after_a_minute_and_a_half_answers_and_the_wait_is_told():
    clock, lines, waits = Clock(), [], []
    fetch = failing([requests.ConnectionError("[Errno 111] Connection refused")] * 8)
    assert waiter(clock, lines, waits=waits).run("the plan", fetch) == "answer"
    assert len(fetch.calls) == 9
    assert clock.slept == [0.75, 1.5, 3.0, 6.0, 12.0, 22.5, 22.5, 22.5]
    assert lines[0] == ("waiting for the master since 00:00:00 UTC (0s): the plan: connection "
                        "refused; next try in 1 s")
    assert lines[-2].startswith("waiting for the master since 00:00:00 UTC (1m08s): the plan")
    assert lines[-1] == "the master answered after 1m31s: the plan"
    assert len(lines) == 9                                  # one line per pause, one at the end
    assert waits == [("the plan", 90.75)]


def test_the_wait_told_is_the_wait_not_the_download_that_followed():
    clock, lines, waits = Clock(), [], []
    errors = [requests.ConnectionError("Connection refused")] * 3

    def fetch():
        if errors:
            raise errors.pop(0)
        clock.now += 100.0      # the answer streams for 100 s
        return "image"
    assert waiter(clock, lines, waits=waits).run("the OS image", fetch) == "image"
    assert waits == [("the OS image", 5.25)]
    assert lines[-1] == "the master answered after 5s: the OS image"


def test_an_answer_at_once_says_nothing():
    clock, lines, waits = Clock(), [], []
    assert waiter(clock, lines, waits=waits).run("the plan", failing([])) == "answer"
    assert lines == [] and waits == [] and clock.slept == []


def test_a_master_away_past_the_limit_fails_naming_what_and_why():
    clock, lines = Clock(), []
    fetch = failing([requests.ConnectionError("[Errno 111] Connection refused")] * 1000)
    with pytest.raises(retry.GaveUp, match=r"gave up waiting for the master after 30m00s "
                                           r"\(limit 30m00s\): the OS image: .*refused"):
        waiter(clock, lines).run("the OS image", fetch)
    assert clock.now == retry.LIMIT
    assert max(clock.slept) <= retry.CAP


def test_a_no_is_said_and_asked_again_slowly_until_the_master_says_yes():
    clock, lines, waits = Clock(), [], []
    not_armed = retry.HTTPStatus("http://m/api/v1/plans/52-54-00-00-00-01", 409,
                                 '{"error": "node1 is installed: run reinstall"}')
    fetch = failing([not_armed, not_armed, not_armed])
    assert waiter(clock, lines, waits=waits).run("the plan", fetch) == "answer"
    assert clock.slept == [60.0, 60.0, 60.0]
    assert lines[0] == ('the master says no to the plan: HTTP 409 from http://m/api/v1/plans/'
                        '52-54-00-00-00-01: {"error": "node1 is installed: run reinstall"}; '
                        'asking again every 60 s (since 00:00:00 UTC, 0s so far)')
    assert waits == [("the plan", 180.0)]


def test_a_400_is_raised_as_it_is_without_a_wait():
    clock, lines = Clock(), []
    bad = retry.HTTPStatus("http://m/x", 400)
    with pytest.raises(retry.HTTPStatus) as got:
        waiter(clock, lines).run("the plan", failing([bad]))
    assert got.value is bad and clock.slept == [] and lines == []


def test_a_stream_that_moved_on_before_its_cut_starts_a_fresh_wait():
    """Each cut of a stream that delivered bytes is a new outage: the pause starts at 1 s
    again and the limit counts from the cut, so a long image cut often still finishes."""
    clock, lines = Clock(), []
    offset = [0]
    cut = requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")

    def fetch():
        offset[0] += 1000
        clock.now += 1000.0     # each try streams for 1000 s, then is cut
        if offset[0] < 5000:
            raise cut
        return "done"
    w = waiter(clock, lines, limit=1500.0)
    assert w.run("the OS image", fetch, progress=lambda: offset[0]) == "done"
    assert clock.slept == [0.75] * 4


def test_the_agent_wide_waiter_takes_the_limit_it_is_given():
    try:
        w = retry.configure(limit=120.0, log=lambda line: None)
        assert retry.default is w and w.limit == 120.0
    finally:
        retry.configure()
    assert retry.default.limit == retry.LIMIT


@pytest.mark.parametrize("seconds, said", [(0.4, "0s"), (59.6, "1m00s"), (200, "3m20s"),
                                           (3725, "1h02m")])
def test_durations_are_said_briefly(seconds, said):
    assert retry.span(seconds) == said


# -- the agent itself: a PC powered on before its master -----------------------------------------

@pytest.mark.integration     # the agent runs as a child process
def test_a_pc_booted_before_its_master_keeps_asking_and_starts_once_it_answers(tmp_path):
    """The real agent (`python -m installer.agent`, dry run) asks a port where nothing listens
    yet; the stand-in master comes up three seconds later. The agent gets its plan, says how
    long it waited, and starts."""
    import subprocess
    import sys
    import time

    from tests.serving import render_outdir
    from tests.vm.standin import StandinMaster

    out = tmp_path / "out"
    cluster = render_outdir(str(out))
    with socket.socket() as s:          # a free port, for the master to take later
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/plans/node1.json"
    agent = subprocess.Popen([sys.executable, "-m", "installer.agent", "--plan", url,
                              "--dry-run", "--no-reboot", "--wait", "120"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)
        master = StandinMaster(out, cluster.provisioning.base_url, port=port)
        master.url = f"http://127.0.0.1:{port}"
        with master:
            console, _ = agent.communicate(timeout=90)
    finally:
        agent.kill()
    lines = console.splitlines()
    assert any(re.fullmatch(r"waiting for the master since \S+ UTC \(\ds\): the plan: "
                            r"connection refused; next try in \d s", line) for line in lines), \
        console
    answered = [line for line in lines if line.startswith("the master answered after")]
    assert len(answered) == 1 and re.fullmatch(r"the master answered after [1-9]s: the plan",
                                               answered[0]), console
    # A dry run tells the master nothing: its reports go to the console. How the wait reaches
    # the master: test_status_shows_how_long_a_node_waited_for_its_master.
    assert not master.reports, master.reports
    assert "[0/6] install: started - ganeti-installer agent" in console, console
    # The dry run then stops at identify: this machine has not the plan's MAC.
    assert any(re.search(r"identify: failed - ", line) for line in lines), console


@pytest.mark.integration     # the real master makes its key pair with ssh-keygen
def test_status_shows_how_long_a_node_waited_for_its_master(tmp_path):
    """The agent's waits reach the real master as reports once it is back: the plan's with
    'install started' (the master takes nothing before it), a later one as <stage>/wait."""
    from installer.agent.client import Reporter
    from installer.master import status
    from tests.serving import Server, render_outdir

    out = tmp_path / "out"
    cluster = render_outdir(str(out))
    with Server(cluster, str(out), str(tmp_path / "state")) as server:
        plan = requests.get(f"{server.url}/api/v1/plans/52-54-00-20-02-22", timeout=10).json()
        rep = Reporter(plan["report"]["url"].replace(cluster.provisioning.base_url,
                                                     server.url),
                       plan["report"]["token"], log=lambda line: None)
        rep.waited("the plan", 42)
        assert rep.event("install", "started", "agent", 0, 6)
        assert rep.event("os", "started", "", 3, 6)
        rep.waited("the OS image", 200)
        assert rep.outbox == []
        shown = status.table(status.fetch(server.url))
        first = server.state.events("node1")[0]
    assert first["message"] == "agent; waited for the master 42s (the plan)"
    node1 = next(line for line in shown.splitlines() if line.startswith("node1"))
    assert re.search(r"installing\s+os/wait\s+3/6\s+.*waited for the master 3m20s "
                     r"\(the OS image\)$", node1), shown


@pytest.mark.parametrize("line, limit", [("console=ttyS0 installer.plan=http://m/p", None),
                                         ("installer.wait=3600 quiet", 3600.0),
                                         ("installer.wait=0", 0.0)])
def test_the_wait_limit_comes_from_the_kernel_command_line(line, limit):
    from installer.agent import cmdline
    assert cmdline.wait_limit(line) == limit


@pytest.mark.parametrize("value", ["soon", "-5", "inf", "nan", ""])
def test_a_wait_limit_that_is_no_number_of_seconds_is_named_with_its_fix(value):
    from installer.agent import cmdline
    with pytest.raises(ValueError, match=f"installer.wait={value} on the kernel command line "
                                         "is not a number of seconds: write e.g. "
                                         "installer.wait=3600"):
        cmdline.wait_limit(f"quiet installer.wait={value}")
