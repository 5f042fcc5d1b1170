"""Token-once enrolment from the node's side (issue 13): the master hands a plan out once per
install cycle, so an agent that netboots again after a power cut resumes with the plan it
kept on its disk, and one that kept none says why on the console and asks once a minute
until the admin re-arms the node. The master is the real `serve` application on loopback;
the kept plan is found on a real ext4 partition named gi-root on a loop device."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess

import pytest
import requests

from installer.agent import client, retry, savedplan
from tests.serving import Server, render_outdir

# serve's SSH key pair is made with ssh-keygen; the loop device needs root's tools.
pytestmark = pytest.mark.integration

MAC = "52:54:00:20:02:22"            # node1 of the example


@pytest.fixture
def server(tmp_path):
    cluster = render_outdir(str(tmp_path / "out"))
    with Server(cluster, str(tmp_path / "out"), str(tmp_path / "state")) as s:
        yield s


def plan_url(server) -> str:
    return f"{server.url}/api/v1/plans/{MAC.replace(':', '-')}"


def waiter(lines: list[str], on_sleep=lambda: None) -> retry.Waiter:
    def sleep(seconds: float) -> None:
        lines.append(f"(slept {seconds:g} s)")
        on_sleep()
    return retry.Waiter(600, log=lines.append, sleep=sleep)


def started(server, plan: dict, when: float) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/nodes/node1/events", timeout=10,
                         json={"step": "install", "status": "started", "time": when},
                         headers={"Authorization": f"Bearer {plan['report']['token']}"})


def test_a_node_resumes_with_the_plan_it_kept(server, tmp_path):
    plan, date = client.fetch_plan(plan_url(server))
    assert date and started(server, plan, 1000.0).ok
    savedplan.save(plan, str(tmp_path))
    kept = tmp_path / savedplan.PLAN
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600      # it holds the token
    # The power comes back: the master refuses a second plan, the agent takes its own.
    asked: list[int] = []

    def find() -> dict | None:
        asked.append(1)
        return savedplan.find([MAC], running_root=str(tmp_path), log=lambda line: None)
    lines: list[str] = []
    again, date = client.fetch_plan(plan_url(server), waiter=waiter(lines), kept=find)
    assert again == plan and date is None and asked == [1] and lines == []
    assert started(server, again, 2000.0).ok                 # its token still works
    assert server.state.node("node1").attempt == 2


def test_without_a_kept_plan_the_node_says_why_and_asks_until_rearmed(server):
    first, _ = client.fetch_plan(plan_url(server))          # a stranger was first
    lines: list[str] = []
    rearm = iter([lambda: None, lambda: server.state.reinstall("node1")])
    plan, _ = client.fetch_plan(plan_url(server), kept=lambda: None,
                                waiter=waiter(lines, on_sleep=lambda: next(rearm)()))
    assert plan["report"]["token"] == server.state.node("node1").token
    assert plan["report"]["token"] != first["report"]["token"]
    said = lines[0]
    assert said.startswith("the master says no to the plan: HTTP 409 from ")
    assert "the plan of node1 was already taken by 127.0.0.1 at " in said
    assert "ganeti-installer reinstall CLUSTER OUTDIR node1" in said
    assert "asking again every 60 s" in said
    assert lines[1] == "(slept 60 s)" and lines[3] == "(slept 60 s)"


def test_a_node_told_no_keeps_asking_past_the_wait_limit(server):
    """A no is not the master being away: the agent asks on, a reinstall starts it."""
    client.fetch_plan(plan_url(server))
    lines: list[str] = []
    rounds = iter(range(100))

    def sleep(seconds: float) -> None:
        if next(rounds) == 5:
            server.state.reinstall("node1")
    short = retry.Waiter(1, log=lines.append, sleep=sleep)
    plan, _ = client.fetch_plan(plan_url(server), kept=lambda: None, waiter=short)
    assert plan["report"]["token"] == server.state.node("node1").token
    assert sum("says no" in line for line in lines) >= 5


def test_the_kept_plan_is_found_read_only_on_a_gi_root_partition(server, tmp_path,
                                                                 monkeypatch):
    """A real ext4 file system on a loop device, mounted read-only by find(). This machine's
    loop driver makes no partitions, so the loop device stands for the gi-root partition
    that lsblk names (its output is parsed in the next test)."""
    plan, _ = client.fetch_plan(plan_url(server))
    image = tmp_path / "root.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    root = loop.stdout.strip()
    try:
        where = tmp_path / "mnt"
        where.mkdir()
        subprocess.run(["mount", root, str(where)], check=True)
        try:
            savedplan.save(plan, str(where))
        finally:
            subprocess.run(["umount", str(where)], check=True)
        monkeypatch.setattr(savedplan, "partitions",
                            lambda run: [("/dev/nowhere", savedplan.ROOT_LABEL),
                                         (root, savedplan.ROOT_LABEL)])
        before = _digest(root)
        said: list[str] = []
        found = savedplan.find([MAC], running_root=str(tmp_path), log=said.append)
        assert found == plan and said == [f"resuming with the plan kept on {root}"]
        assert savedplan.find(["52:54:00:99:99:99"], running_root=str(tmp_path)) is None
        assert _digest(root) == before                      # read, never written
    finally:
        subprocess.run(["losetup", "--detach", root])


class Lsblk:
    """A runner whose lsblk prints what it prints on a node with a USB stick beside its disk."""

    def read(self, argv, check=True):
        assert argv[0] == "lsblk"
        return ("/dev/sda\n/dev/sda1 gi-bios-grub\n/dev/sda2 gi-esp\n/dev/sda4 gi-root\n"
                "/dev/sdb\n/dev/sdb1 gi-root\\x20copy\n/dev/sdb2 data\n/dev/nvme0n1p4 gi-root\n")


def test_kept_plans_are_looked_for_on_gi_root_then_gi_esp():
    assert savedplan.partitions(Lsblk()) == [
        ("/dev/sda4", "gi-root"), ("/dev/nvme0n1p4", "gi-root"), ("/dev/sda2", "gi-esp")]


def test_no_kept_plan_outlives_its_install(tmp_path):
    """A reinstall that the master refuses (a stranger took the plan) must not resume the
    earlier, finished install with its stale token."""
    for rel in (savedplan.PLAN, os.path.join(savedplan.ESP, savedplan.ESP_PLAN)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    savedplan.forget(str(tmp_path))
    assert not (tmp_path / savedplan.PLAN).exists()
    assert not (tmp_path / savedplan.ESP / savedplan.ESP_PLAN).exists()
    savedplan.forget(str(tmp_path))     # twice (a resumed finish): nothing left, no error


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_a_kept_plan_of_another_machine_or_without_a_token_is_not_taken(tmp_path, server):
    plan, _ = client.fetch_plan(plan_url(server))
    savedplan.save(plan, str(tmp_path))
    assert savedplan._plan_in(str(tmp_path / savedplan.PLAN), ["52:54:00:99:99:99"]) is None
    del plan["report"]["token"]
    savedplan.save(plan, str(tmp_path))
    assert savedplan._plan_in(str(tmp_path / savedplan.PLAN), [MAC]) is None
    (tmp_path / savedplan.PLAN).write_text('{"plan_version": 1, "cut mid-wri')
    assert savedplan._plan_in(str(tmp_path / savedplan.PLAN), [MAC]) is None
    assert os.path.exists(tmp_path / savedplan.PLAN)


def test_the_plan_is_kept_on_the_esp_too_which_the_os_image_write_leaves(server, tmp_path):
    """The OS image replaces root's file system (and root's copy) whole: the ESP's copy is
    what a cut during that write resumes with."""
    plan, _ = client.fetch_plan(plan_url(server))
    esp = tmp_path / savedplan.ESP
    esp.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "esp", str(esp)], check=True)
    try:
        savedplan.save(plan, str(tmp_path))
        kept = esp / savedplan.ESP_PLAN
        (tmp_path / savedplan.PLAN).unlink()                # root rewritten by the image
        assert savedplan._plan_in(str(kept), [MAC]) == plan
        # An ESP that takes no file costs only that copy, and says so.
        subprocess.run(["mount", "-o", "remount,ro", str(esp)], check=True)
        said: list[str] = []
        savedplan.save(plan, str(tmp_path), log=said.append)
        assert (tmp_path / savedplan.PLAN).exists()
        assert len(said) == 1 and said[0].startswith("warning: cannot keep the plan on the ESP")
    finally:
        subprocess.run(["umount", str(esp)], check=True)
