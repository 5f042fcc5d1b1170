"""The state database's schema version: a state.db of the release before versions (0) opens
in this one with every node, event, step and unknown MAC kept; a newer one is refused.

tests/fixtures/state-v0.db was written by that release's own code (State and
reports.record, as serve uses them): node1 installed, booted and joined, node2 failed by an
unauthenticated 'plan failed', node3 pending; their events and steps; two unknown MACs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3

import pytest

from installer.cluster.errors import InstallerError
from installer.master import reports
from installer.master import state as st
from installer.master.nodes import NodeRow, NodeState
from installer.master.reports import Report
from installer.master.state import open_state

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state-v0.db")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPnn78oiACkS/RuNEECbmuqN5JM5YuykzKa8sbZ8ACtY"


def raw(path, sql: str) -> list[tuple]:
    """Read the file as it is, without the state code."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def v0(tmp_path):
    """A copy of the old release's state directory."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    shutil.copy(FIXTURE, state_dir / "state.db")
    return state_dir


def schema(path) -> list[str]:
    """The tables and indexes as SQLite keeps them (a renamed table's name is quoted)."""
    return sorted(sql.replace('"nodes"', "nodes") for (sql,) in
                  raw(path, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))


def test_the_fixture_is_a_version_0_database(v0):
    db = v0 / "state.db"
    assert raw(db, "PRAGMA user_version") == [(0,)]
    nodes_sql = raw(db, "SELECT sql FROM sqlite_master WHERE name = 'nodes'")[0][0]
    assert nodes_sql.startswith("CREATE TABLE nodes") and "CHECK" not in nodes_sql


def test_a_version_0_database_opens_with_everything_kept(v0):
    db = v0 / "state.db"
    nodes = raw(db, "SELECT * FROM nodes ORDER BY name")
    events = raw(db, "SELECT * FROM events ORDER BY id")
    steps = raw(db, "SELECT * FROM steps ORDER BY node, attempt, step")
    unknown = raw(db, "SELECT * FROM unknown ORDER BY mac")
    assert len(nodes) == 3 and len(events) == 9 and len(steps) == 5 and len(unknown) == 2
    state = open_state(str(v0))
    try:
        rows = state.nodes()
        assert all(isinstance(n, NodeRow) for n in rows)
        assert [(n.name, n.state, n.attempt) for n in rows] == [
            ("node1", NodeState.JOINED, 1), ("node2", NodeState.FAILED, 0),
            ("node3", NodeState.PENDING, 0)]
        assert rows[0].host_keys == {"ed25519": KEY}
        assert rows[0].message == "gnt-cluster verify: no errors"
        assert "plan_version 9" in rows[1].message
        assert [e["status"] for e in state.events("node1")][-3:] == ["joining", "log", "joined"]
        assert [s["step"] for s in state.steps("node1")] == [
            "install", "identify", "storage", "boot"]
        assert [(u["mac"], u["count"], u["source"]) for u in state.unknown()] == [
            ("52:54:00:aa:bb:02", 2, "pxe"), ("52:54:00:aa:bb:01", 1, "plan")]
    finally:
        state.close()
    # Row for row what the old release wrote, tokens included: the nodes' plans still work.
    assert raw(db, "SELECT * FROM nodes ORDER BY name") == nodes
    assert raw(db, "SELECT * FROM events ORDER BY id") == events
    assert raw(db, "SELECT * FROM steps ORDER BY node, attempt, step") == steps
    assert raw(db, "SELECT * FROM unknown ORDER BY mac") == unknown
    assert raw(db, "PRAGMA user_version") == [(st.SCHEMA_VERSION,)]


def test_a_migrated_database_is_a_new_one_and_takes_reports(v0, tmp_path):
    state = open_state(str(v0))
    try:
        out = reports.record(state, "node3", Report("install", "started", total=6, time=10))
        assert out.node.state == NodeState.INSTALLING
        node = state.reinstall("node1")
        assert node.state == NodeState.PENDING
    finally:
        state.close()
    open_state(str(tmp_path / "fresh")).close()
    assert schema(v0 / "state.db") == schema(tmp_path / "fresh" / "state.db")
    assert raw(tmp_path / "fresh" / "state.db", "PRAGMA user_version") == \
        [(st.SCHEMA_VERSION,)]


def test_the_database_holds_only_node_states(v0):
    open_state(str(v0)).close()
    db = sqlite3.connect(v0 / "state.db")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute("UPDATE nodes SET state = 'exploded' WHERE name = 'node1'")
    finally:
        db.close()
    # A new state is a new schema version: the version-1 list is frozen.
    assert tuple(NodeState) == st.V1_STATES


def test_a_second_open_changes_nothing(v0):
    open_state(str(v0)).close()
    before = (schema(v0 / "state.db"), raw(v0 / "state.db", "SELECT * FROM nodes"))
    open_state(str(v0)).close()
    assert (schema(v0 / "state.db"), raw(v0 / "state.db", "SELECT * FROM nodes")) == before


def test_a_newer_database_is_refused_and_left_as_it_is(v0):
    db = v0 / "state.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {st.SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(db)
    with pytest.raises(InstallerError) as e:
        open_state(str(v0))
    message = str(e.value)
    assert str(db) in message and f"schema version {st.SCHEMA_VERSION + 1}" in message
    assert "newer than this ganeti-installer" in message and "--state" in message
    assert digest(db) == before and sorted(os.listdir(v0)) == ["state.db"]


def test_a_version_0_database_with_a_state_no_release_wrote_is_refused(v0):
    db = v0 / "state.db"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE nodes SET state = 'exploded' WHERE name = 'node3'")
    conn.commit()
    conn.close()
    with pytest.raises(InstallerError, match="node node3 has the state 'exploded'"):
        open_state(str(v0))
    assert raw(db, "PRAGMA user_version") == [(0,)]
    assert raw(db, "SELECT state FROM nodes WHERE name = 'node3'") == [("exploded",)]
    assert "CHECK" not in raw(db, "SELECT sql FROM sqlite_master WHERE name = 'nodes'")[0][0]


def test_a_version_1_database_gets_the_event_bound(tmp_path, monkeypatch):
    """Version 2: events by node and id, and the count of events dropped past the bound."""
    state_dir = tmp_path / "v1"
    state_dir.mkdir(mode=0o700)
    db = sqlite3.connect(state_dir / "state.db")
    for ddl in st.TABLES:
        db.execute(ddl)
    db.execute("INSERT INTO nodes (name, mac, ip, token, updated) VALUES "
               "('node1', '52:54:00:20:02:22', '10.0.0.1', 'tok', 0)")
    db.executemany("INSERT INTO events (node, attempt, step, status, message, idx, total, "
                   "final, node_time, received, authenticated) VALUES "
                   "('node1', 0, 's', 'log', ?, 0, 0, 0, ?, 0, 1)",
                   [(f"m{i}", i) for i in range(5)])
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    state = open_state(str(state_dir))
    try:
        assert [e["message"] for e in state.events("node1")] == [f"m{i}" for i in range(5)]
        assert state.events_dropped("node1") == 0
        monkeypatch.setattr(st, "EVENTS_KEEP", 3)
        state.note("node1", "m5")
        assert [e["message"] for e in state.events("node1")] == ["m3", "m4", "m5"]
        assert state.events_dropped("node1") == 3
    finally:
        state.close()
    assert raw(state_dir / "state.db", "PRAGMA user_version") == [(st.SCHEMA_VERSION,)]
    open_state(str(tmp_path / "fresh")).close()
    assert schema(state_dir / "state.db") == schema(tmp_path / "fresh" / "state.db")


def test_events_come_in_pages(tmp_path):
    state = open_state(str(tmp_path / "s"))
    try:
        state.db.execute("INSERT INTO nodes (name, mac, ip, token, updated) VALUES "
                         "('node1', '52:54:00:20:02:22', '10.0.0.1', 'tok', 0)")
        for i in range(10):
            state.note("node1", "x" * 100 + str(i))
        first = state.events("node1", limit=4, after=0)
        assert [e["message"][-1] for e in first] == ["0", "1", "2", "3"]
        rest = state.events("node1", limit=100, after=first[-1]["id"])
        assert [e["message"][-1] for e in rest] == [str(i) for i in range(4, 10)]
        assert [e["message"][-1] for e in state.events("node1", limit=2)] == ["8", "9"]
        # A page stops at its byte budget, but holds at least one event.
        assert len(state.events("node1", after=0, budget=250)) == 2
        assert len(state.events("node1", after=0, budget=1)) == 1
    finally:
        state.close()


def test_a_migrated_pending_node_is_armed_and_the_others_are_not(v0):
    """Version 3: plans go out once per install cycle. A pending node of an older release
    is armed as it was; a joined or failed one gets no plan."""
    state = open_state(str(v0))
    try:
        assert [state.take_plan(n, "10.99.0.20", 100.0)[0]
                for n in ("node1", "node2", "node3")] == [False, False, True]
        assert state.take_plan("node3", "10.99.0.66", 101.0)[0] is False
        assert state.plan_fetch("node3")["taken_by"] == "10.99.0.20"
    finally:
        state.close()
    assert raw(v0 / "state.db", "SELECT node, taken_by, refusals FROM plan_fetches "
                                "ORDER BY node") == [
        ("node1", "", 1), ("node2", "", 1), ("node3", "10.99.0.20", 1)]
