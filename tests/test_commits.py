"""Group commit: reports that arrive together share one COMMIT (one fsync), each is still all
or nothing, and none is acknowledged before its commit."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from installer.master import reports
from installer.master.commits import GroupCommit
from tests.conftest import CommitFails


def started(t: float) -> reports.Report:
    return reports.parse(json.dumps({"step": "install", "status": "started",
                                     "total": 6, "time": t}).encode())


def record(state, name: str, t: float):
    return reports.record(state, name, started(t))


def commits_of(state) -> list[str]:
    seen: list[str] = []
    state.db.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def test_what_queues_behind_a_commit_goes_into_the_next_one(state):
    commits = commits_of(state)
    group = GroupCommit(state)
    hold, holding = threading.Event(), threading.Event()
    try:
        first = group.submit(lambda: (holding.set(), hold.wait(10)))
        assert holding.wait(10)
        later = [group.submit(record, state, name, 100.0 + i)
                 for i in range(20) for name in ("node1", "node2", "node3")]
        assert not any(f.done() for f in later)     # nothing acknowledged before its commit
        hold.set()
        outcomes = [f.result(10) for f in later]
        first.result(10)
    finally:
        group.close()
    assert commits == ["COMMIT", "COMMIT"]
    assert [o.node.attempt for o in outcomes[-3:]] == [20, 20, 20]
    assert len(state.events("node1")) == 20


def test_a_call_that_fails_is_rolled_back_alone(state):
    def half_then_fail():
        with state.transaction() as db:
            db.execute("UPDATE nodes SET message = 'half' WHERE name = 'node2'")
            raise reports.Refused(422, "out of order")
    outcomes = state.together([lambda: record(state, "node1", 5.0), half_then_fail,
                               lambda: record(state, "node3", 5.0)])
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], reports.Refused)
    assert state.node("node2").message != "half"
    assert state.node("node1").state == state.node("node3").state == "installing"


def test_a_group_that_cannot_begin_fails_every_call(state):
    # Another connection holds the write lock: BEGIN IMMEDIATE gives up after its timeout.
    state.db.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(state.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        outcomes = state.together([lambda: record(state, "node1", 5.0),
                                   lambda: record(state, "node2", 5.0)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [ok for ok, _ in outcomes] == [False, False]
    assert all(isinstance(e, sqlite3.OperationalError) for _, e in outcomes)
    assert state.node("node1").state == "pending"
    record(state, "node1", 6.0)                         # and the state works on
    assert state.node("node1").state == "installing"


def test_a_commit_that_fails_after_the_calls_ran_fails_them_all(state):
    real, state.db = state.db, CommitFails(state.db)
    try:
        outcomes = state.together([lambda: record(state, "node1", 5.0),
                                   lambda: record(state, "node2", 5.0)])
    finally:
        state.db = real
    assert [(ok, str(e)) for ok, e in outcomes] == [(False, "disk I/O error")] * 2
    assert not state.db.in_transaction
    assert state.node("node1").state == state.node("node2").state == "pending"
    assert state.events("node1") == []


def test_a_group_sqlite_rolled_back_on_its_own_writes_nothing_after(state):
    """SQLite ends the whole transaction on some errors (a full disk): the calls after it
    must not run in autocommit mode, each saved on its own."""
    def disk_full():
        with state.transaction() as db:
            db.execute("ROLLBACK")          # what SQLite does itself on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")
    outcomes = state.together([lambda: record(state, "node1", 5.0), disk_full,
                               lambda: record(state, "node3", 5.0)])
    assert [ok for ok, _ in outcomes] == [False] * 3
    assert "disk is full" in str(outcomes[0][1])
    assert [state.node(n).state for n in ("node1", "node2", "node3")] == ["pending"] * 3


def test_the_group_thread_answers_every_call_even_when_the_group_breaks(state, monkeypatch):
    def broken(calls):
        raise MemoryError("out of memory")
    monkeypatch.setattr(state, "together", broken)
    group = GroupCommit(state)
    try:
        futures = [group.submit(record, state, "node1", 5.0) for _ in range(3)]
        assert all(isinstance(f.exception(10), MemoryError) for f in futures)
        monkeypatch.undo()
        assert group.submit(record, state, "node1", 6.0).result(10).node.attempt == 1
    finally:
        group.close()
    with pytest.raises(RuntimeError, match="closed"):
        group.submit(record, state, "node1", 7.0)
