"""The journal's resume decisions: after a power cut in each stage, a new run skips exactly
the stages the journal holds as done; a journal of another plan, or a corrupt one, skips
nothing; and root's journal is read the same by a real run (mounted) and a dry run (debugfs)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

import pytest

from installer.agent import journal
from installer.agent.install import STAGES, Installer
from installer.agent.proc import Runner
from installer.build import render
from tests.conftest import load_example
from tests.fake_node import DiskState, FakeNode, GiB


@pytest.fixture(scope="module")
def plan():
    return render.render_plans(load_example())["node1"]


class PowerCut(Exception):
    pass


class Events:
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def event(self, step, status, *args, **kw):
        self.seen.append((step, status))
        return True

    def attach(self, target):
        pass


class Stages(Installer):
    """The install's driver and journal, each stage replaced by a note of its run; storage
    attaches the journal on the target as the real stage does once root is mounted."""

    def __init__(self, plan, target, cut=None):
        super().__init__(plan, Events(), target=str(target), log=lambda line: None)
        self.cut, self.ran = cut, []
        for stage in STAGES:
            name = "identify" if stage == "identify" else f"{stage}_stage"
            setattr(self, name, lambda stage=stage: self._stage(stage))

    def _stage(self, stage):
        self.ran.append(stage)
        if stage == "storage":
            self.journal.attach(self.target)
        if stage == self.cut:
            raise PowerCut(stage)


@pytest.mark.parametrize("cut, skipped", [
    ("identify", []), ("storage", []), ("os", []), ("configure", ["os"]),
    ("bootloader", ["os", "configure"]), ("finish", ["os", "configure", "bootloader"])])
def test_a_cut_in_each_stage_resumes_after_the_last_stage_done(plan, tmp_path, cut, skipped):
    with pytest.raises(PowerCut):
        Stages(plan, tmp_path, cut=cut).run_all()
    again = Stages(plan, tmp_path)
    again.run_all()
    assert again.ran == [s for s in STAGES if s not in skipped]
    assert [step for step, status in again.reporter.seen if status == "skipped"] == skipped
    assert ("install", "installed") in again.reporter.seen


def test_a_finished_install_run_again_redoes_only_the_unjournaled_stages(plan, tmp_path):
    Stages(plan, tmp_path).run_all()
    again = Stages(plan, tmp_path)
    again.run_all()
    # identify and storage check the machine and disk themselves; finish reports the keys
    assert again.ran == ["identify", "storage", "finish"]


def write_journal(target, content: str) -> None:
    path = target / journal.JOURNAL
    path.parent.mkdir(parents=True)
    path.write_text(content)


def test_a_journal_of_another_plan_is_ignored_and_replaced(plan, tmp_path):
    write_journal(tmp_path, json.dumps({"plan": "0" * 64, "done": STAGES}))
    again = Stages(plan, tmp_path)
    again.run_all()
    assert again.ran == STAGES
    kept = json.loads((tmp_path / journal.JOURNAL).read_text())
    assert kept == {"plan": journal.plan_hash(plan), "done": ["os", "configure", "bootloader"]}


@pytest.mark.parametrize("content", ['{"plan": "', "", "[1, 2]\n", "\x00" * 64])
def test_a_corrupt_journal_skips_nothing_and_is_rewritten(plan, tmp_path, content):
    write_journal(tmp_path, content)
    again = Stages(plan, tmp_path)
    again.run_all()
    assert again.ran == STAGES
    assert json.loads((tmp_path / journal.JOURNAL).read_text())["plan"] == \
        journal.plan_hash(plan)


def test_the_journal_keeps_what_it_marked_before_it_was_attached_again(plan, tmp_path):
    """The image install re-mounts root after writing its blocks, and attaches again."""
    j = journal.Journal(plan)
    j.attach(str(tmp_path))
    j.mark("os")
    (tmp_path / journal.JOURNAL).unlink()       # the new file system's root is empty
    j.attach(str(tmp_path))
    assert j.is_done("os")
    assert json.loads((tmp_path / journal.JOURNAL).read_text())["done"] == ["os"]
    assert not list(tmp_path.rglob("*.gi-new"))


# -- root_done: is the OS on this root partition this plan's, and finished? -----------------

def on_root(plan, done, *, fstype="ext4", owner=None) -> FakeNode:
    text = json.dumps({"plan": journal.plan_hash(owner or plan), "done": done})
    return FakeNode(DiskState("/dev/sda", parts=[(4, 10 * GiB, "gi-root")],
                              fstypes={"/dev/sda4": fstype},
                              files={"/dev/sda4": {f"/{journal.JOURNAL}": text}}))


@pytest.mark.parametrize("node, expected", [
    (lambda p: on_root(p, ["os", "configure"]), True),
    (lambda p: on_root(p, []), False),
    (lambda p: on_root(p, ["os"], owner=dict(p, packages=[])), False),
    (lambda p: on_root(p, ["os"], fstype="xfs"), False),
    (lambda p: FakeNode(DiskState("/dev/sda", parts=[(4, GiB, "gi-root")],
                                  fstypes={"/dev/sda4": "ext4"})), False),
], ids=["os done", "nothing done", "another plan", "not ext4", "no journal"])
def test_root_done_in_a_dry_run(plan, monkeypatch, node, expected):
    fake = node(plan)
    monkeypatch.setattr(subprocess, "run", fake.run)
    assert journal.root_done("/dev/sda4", plan, Runner(dry_run=True)) is expected
    assert not any(argv[0] == "mount" for argv in fake.ran)


def mount_points() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("gi-probe-")}


@pytest.mark.integration
@pytest.mark.parametrize("dry_run", [False, True], ids=["mounted", "debugfs"])
def test_root_done_reads_a_real_ext4_root(plan, tmp_path, dry_run):
    tree = tmp_path / "tree"
    write_journal(tree, json.dumps({"plan": journal.plan_hash(plan), "done": ["os"]}))
    image = tmp_path / "root.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "16M"], check=True)
    before, probes = image.read_bytes(), mount_points()
    assert journal.root_done(str(image), plan, Runner(dry_run=dry_run))
    assert not journal.root_done(str(image), dict(plan, packages=[]), Runner(dry_run=dry_run))
    if dry_run:
        assert image.read_bytes() == before
    assert mount_points() == probes     # the real run's mount point is gone again
