"""The master's state and the report rules, without HTTP: parsing, ordering, the node table
kept in step with the cluster file, and the join's small interface."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading

import pytest

from installer.cluster.errors import InstallerError
from installer.master import nodes, reports
from installer.master.nodes import NodeRow, NodeState
from installer.master.reports import Refused, Report
from tests.conftest import cluster_from, example_data

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPnn78oiACkS/RuNEECbmuqN5JM5YuykzKa8sbZ8ACtY"


def body(**kw) -> bytes:
    return json.dumps(dict({"step": "os", "status": "started", "index": 3, "total": 6,
                            "time": 100.0}, **kw)).encode()


def test_parse_takes_what_the_agent_sends():
    r = reports.parse(body(message="m", final=False, host_keys={"ed25519": KEY}))
    assert r == Report("os", "started", "m", 3, 6, 100.0, False, {"ed25519": KEY})
    assert reports.parse(b'{"step": "install", "status": "started", "time": 5}').time == 5.0


@pytest.mark.parametrize("raw, words", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (body(index="3"), "'index' must be an integer"),
    (body(index=True), "'index' must be an integer"),
    (body(final="yes"), "'final' must be true or false"),
    (body(time="now"), "'time' must be a number"),
    (body(status="exploded"), "'status' 'exploded' is unknown"),
    (body(step="../../etc"), "not a step name"),
    (body(index=7), "need 0 <= index <= total"),
    (body(colour="red"), "unknown field(s) in the report: colour"),
    (body(host_keys={"ed25519": "not a key"}), "host_keys['ed25519']"),
    (body(host_keys=["x"]), "'host_keys' must be an object"),
    (json.dumps({"status": "done"}).encode(), "no 'step'"),
])
def test_parse_refuses_bad_reports_naming_the_field(raw, words):
    with pytest.raises(Refused) as e:
        reports.parse(raw)
    assert e.value.status == 400 and words in e.value.message


def node(**kw) -> NodeRow:
    fields = {"name": "node1", "mac": "52:54:00:20:01:11", "ip": "10.0.100.11",
              "token": "t" * 43, "state": "installing", "step": "storage", "index": 2,
              "total": 6, "attempt": 1, "attempt_time": 50.0, "message": "", "host_keys": {},
              "updated": 60.0, **kw}
    return NodeRow(**{**fields, "state": NodeState(fields["state"])})


def booted(state, name: str) -> None:
    """Through the agent's reports, as serve takes them, to booted: where a join begins."""
    for r in (Report("install", "started", total=6, time=100),
              Report("install", "installed", index=6, total=6, time=200, final=True,
                     host_keys={"ed25519": KEY}),
              Report("boot", "booted", time=300, host_keys={"ed25519": KEY})):
        reports.record(state, name, r)


def joined(state, name: str) -> None:
    booted(state, name)
    state.set_state(name, NodeState.JOINING, "gnt-node add")
    state.set_state(name, NodeState.JOINED, "in the cluster")


@pytest.mark.parametrize("n, r, words", [
    (node(state="pending"), Report("os", "started", index=3, total=6, time=60),
     "no install has started"),
    (node(state="installed"), Report("os", "done", index=3, total=6, time=60),
     "it is installed"),
    (node(state="failed"), Report("os", "done", index=3, total=6, time=60),
     "its install failed"),
    (node(), Report("identify", "done", index=1, total=6, time=60), "index 1 after 2"),
    (node(), Report("os", "started", index=3, total=6, time=40), "older than the install"),
    (node(), Report("os", "started", index=3, total=5, time=60), "total 5"),
    (node(), Report("boot", "booted", time=60, host_keys={"ed25519": KEY}),
     "only after 'install installed'"),
    (node(state="installed", host_keys={"ed25519": KEY}),
     Report("boot", "booted", time=60, host_keys={"ed25519": KEY[:-4] + "AAAA"}),
     "differ from those its install reported"),
])
def test_out_of_order_reports_are_422_never_409(n, r, words):
    with pytest.raises(Refused) as e:
        reports.decide(n, r)
    assert e.value.status == 422 and words in e.value.message


def test_a_new_install_started_begins_a_new_attempt_from_any_state():
    for state in ("pending", "installing", "installed", "failed", "joined"):
        change = reports.decide(node(state=state, host_keys={"ed25519": KEY}),
                                Report("install", "started", total=6, time=70))
        assert change["state"] == "installing" and change["attempt"] == 2
        assert change["attempt_time"] == 70 and change["host_keys"] == {}


def test_the_agents_report_stream_moves_the_state(state):
    steps = [("install", "started", 0), ("identify", "started", 1), ("identify", "done", 1),
             ("storage", "started", 2), ("storage/part-1", "running", 0),
             ("hook/post-partition/10-x", "done", 0), ("storage", "done", 2),
             ("os", "skipped", 3)]
    for i, (step, status, index) in enumerate(steps):
        out = reports.record(state, "node1", Report(step, status, index=index,
                                                    total=6 if index or not i else 0,
                                                    time=100 + i))
        assert out.node.state == "installing" and out.node.step == step
    assert out.node.index == 3
    flipped = []
    out = reports.record(state, "node1", Report("install", "installed", index=6, total=6,
                                                time=200, final=True,
                                                host_keys={"ed25519": KEY}),
                         on_installed=flipped.append)
    assert out.installed and out.node.state == "installed" and flipped == [out.node]
    assert out.node.host_keys == {"ed25519": KEY}
    out = reports.record(state, "node1", Report("boot", "booted", time=300,
                                                host_keys={"ed25519": KEY}))
    assert out.booted and out.node.state == "booted"
    assert [s["step"] for s in state.steps("node1")][:3] == ["install", "identify", "storage"]
    assert len(state.events("node1")) == len(steps) + 2


def test_a_duplicate_report_is_taken_once(state):
    r = Report("install", "started", total=6, time=100)
    assert not reports.record(state, "node1", r).duplicate
    again = reports.record(state, "node1", r)
    assert again.duplicate and again.node.attempt == 1
    assert len(state.events("node1")) == 1


def test_a_failed_pxe_flip_records_nothing(state):
    reports.record(state, "node1", Report("install", "started", total=6, time=100))
    before = (state.node("node1"), state.events("node1"))

    def broken(node):
        raise InstallerError("no PXE entry")
    with pytest.raises(InstallerError):
        reports.record(state, "node1", Report("install", "installed", index=6, total=6,
                                              time=200, final=True), on_installed=broken)
    assert (state.node("node1"), state.events("node1")) == before


def test_a_plan_goes_out_once_per_install_cycle(state, monkeypatch):
    """The first fetch of an armed node takes its plan; later ones are refused and counted,
    with an event when the address changes or a minute passed; reinstall re-arms."""
    taken, node, fetch = state.take_plan("node1", "10.99.0.20", 1000.0)
    assert taken and node.state == "pending"
    assert fetch == {"taken_by": "10.99.0.20", "taken_at": 1000.0, "refused_by": "",
                     "refused_at": 0.0, "refusals": 0}
    noted = []
    for when, address in ((1001.0, "10.99.0.66"), (1002.0, "10.99.0.66"),
                          (1003.0, "10.99.0.67")):
        taken, node, fetch = state.take_plan("node1", address, when)
        assert not taken
        noted.append(fetch["noted"])
    assert noted == [True, False, True]
    assert fetch["taken_by"] == "10.99.0.20" and fetch["refusals"] == 3
    assert (fetch["refused_by"], fetch["refused_at"]) == ("10.99.0.67", 1003.0)
    refused = [e for e in state.events("node1") if e["status"] == "refused"]
    assert [e["message"] for e in refused] == [
        "plan fetch from 10.99.0.66 refused (pending, taken by 10.99.0.20)",
        "plan fetch from 10.99.0.67 refused (pending, taken by 10.99.0.20)"]
    assert state.node("node1").state == "pending"           # nothing else moved
    state.reinstall("node1")
    assert state.plan_fetch("node1")["taken_at"] == 0
    assert state.take_plan("node1", "10.99.0.21", 2000.0)[0]


def test_a_node_that_is_not_pending_gets_no_plan(state):
    joined(state, "node3")
    taken, node, fetch = state.take_plan("node3", "10.99.0.66", 1000.0)
    assert not taken and node.state == "joined" and fetch["refusals"] == 1
    assert fetch["taken_at"] == 0


def test_of_two_fetches_at_once_one_takes_the_plan(state):
    results = []
    threads = [threading.Thread(target=lambda a=a: results.append(
        state.take_plan("node2", a, 1000.0)[0])) for a in ("10.0.0.1", "10.0.0.2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False, True]


def test_a_joined_node_that_reboots_stays_joined(state):
    joined(state, "node1")
    out = reports.record(state, "node1", Report("boot", "booted", time=500,
                                                host_keys={"ed25519": KEY}))
    assert not out.booted and out.node.state == "joined"


def test_sync_keeps_tokens_and_starts_new_hardware_over(tmp_path, state):
    tokens = {n.name: n.token for n in state.nodes()}
    assert len(set(tokens.values())) == 3 and all(len(t) > 40 for t in tokens.values())
    joined(state, "node2")
    data = example_data()
    data["nodes"][1]["mac"] = "52:54:00:20:02:99"      # node2's board was replaced
    del data["nodes"][2]
    state.sync_nodes(cluster_from(data))
    after = {n.name: n for n in state.nodes()}
    assert sorted(after) == ["node1", "node2"]
    assert after["node1"].token == tokens["node1"]
    assert after["node2"].state == "pending" and after["node2"].token != tokens["node2"]


def test_sync_follows_a_mac_moved_to_another_node(state):
    data = example_data()
    data["nodes"][0]["mac"], data["nodes"][1]["mac"] = \
        data["nodes"][1]["mac"], data["nodes"][0]["mac"]
    state.sync_nodes(cluster_from(data))
    assert state.node_by_mac(data["nodes"][0]["mac"]).name == "node1"


def test_set_state_is_for_join_states_only(state):
    with pytest.raises(InstallerError, match="a join may set only"):
        state.set_state("node1", "installed")
    with pytest.raises(InstallerError, match="no node 'nodeX'"):
        state.set_state("nodeX", "joined")
    with pytest.raises(InstallerError, match="node1 cannot go from pending to joining"):
        state.set_state("node1", "joining", "gnt-node add")
    booted(state, "node1")
    state.set_state("node1", "joining", "gnt-node add")
    assert state.node("node1").state == "joining"
    assert state.events("node1")[-1]["step"] == "join"


def test_reinstall_gives_a_new_token_or_changes_nothing(state):
    token = state.node("node1").token
    joined(state, "node1")

    def broken(node):
        raise InstallerError("flip failed")
    with pytest.raises(InstallerError):
        state.reinstall("node1", before_commit=broken)
    assert state.node("node1").state == "joined" and state.node("node1").token == token
    node = state.reinstall("node1")
    assert node.state == "pending" and node.token != token
    with pytest.raises(InstallerError, match="use one of node1, node2, node3"):
        state.reinstall("nodeX")


def test_unknown_macs_are_counted_and_bounded(state, monkeypatch):
    monkeypatch.setattr("installer.master.state.UNKNOWN_KEEP", 3)
    for i in range(5):
        state.record_unknown(f"52:54:00:00:00:0{i}", "plan")
    state.record_unknown("52:54:00:00:00:04", "pxe")
    seen = state.unknown()
    assert [u["mac"][-1] for u in seen] == ["4", "3", "2"]
    assert seen[0]["count"] == 2 and seen[0]["source"] == "pxe"


def test_a_read_sees_the_last_commit_while_a_writer_holds_the_database(state):
    """A plan or status read does not wait for a report's commit (its fsync)."""
    got, writing, release = [], threading.Event(), threading.Event()

    def writer():
        with state.transaction() as db:
            db.execute("UPDATE nodes SET message = 'uncommitted' WHERE name = 'node1'")
            writing.set()
            release.wait(30)
    hold = threading.Thread(target=writer)
    hold.start()
    try:
        assert writing.wait(10)
        reader = threading.Thread(target=lambda: got.append(state.node("node1")))
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "the read waited for the writer"
        assert got[0].message != "uncommitted"
    finally:
        release.set()
        hold.join(10)
    assert state.node("node1").message == "uncommitted"


# -- node states: the one table of allowed moves, enforced where the state is written ---------

# The table as the docs describe it: (from, to) a node may take, and who takes it.
ALLOWED = {
    "pending": "pending installing",                  # reinstall; install started
    "installing": "pending installing installed failed",
    "installed": "pending installing booted",
    "booted": "pending installing booted joining failed",
    "joining": "pending installing joined failed booted",   # booted: serve stopped mid-join
    "joined": "pending installing",                   # a rebooting member stays joined
    "failed": "pending installing failed booted",     # a node whose join failed boots again
}
PAIRS = [(old, new) for old in NodeState for new in NodeState]


def force(state, name: str, to: str) -> None:
    """Set a state the way no code of the master may: for the table's test only."""
    with state.transaction() as db:
        db.execute("UPDATE nodes SET state = ? WHERE name = ?", (to, name))


@pytest.mark.parametrize("old, new", PAIRS, ids=[f"{o}-{n}" for o, n in PAIRS])
def test_the_state_writer_takes_exactly_the_allowed_moves(state, old, new):
    force(state, "node1", old)
    before = (state.node("node1"), state.events("node1"))
    if new in ALLOWED[old].split():
        state.update_node("node1", {"state": new}, 123.0)
        assert state.node("node1").state is NodeState(new)
        return
    with pytest.raises(nodes.Forbidden) as e:
        state.update_node("node1", {"state": new, "message": "x"}, 123.0)
    assert f"node1 cannot go from {old} to {new}" in str(e.value)
    assert isinstance(e.value, InstallerError)
    assert (state.node("node1"), state.events("node1")) == before


@pytest.mark.parametrize("old, new, allowed", [
    ("pending", "joined", "pending, installing"),
    ("installed", "joining", "pending, installing, booted"),
    ("joined", "failed", "pending, installing"),
    ("pending", "booted", "pending, installing"),
])
def test_a_forbidden_move_names_both_states_and_the_way_on(old, new, allowed):
    with pytest.raises(nodes.Forbidden) as e:
        nodes.check("node2", NodeState(old), NodeState(new))
    assert str(e.value) == (f"node2 cannot go from {old} to {new}: from {old} a node goes "
                            f"only to {allowed}")


def test_the_join_cannot_fail_a_joined_node(state):
    joined(state, "node1")
    before = (state.node("node1"), state.events("node1"))
    with pytest.raises(nodes.Forbidden, match="node1 cannot go from joined to failed"):
        state.set_state("node1", NodeState.FAILED, "late")
    assert (state.node("node1"), state.events("node1")) == before


def test_a_report_the_table_forbids_is_422_and_changes_nothing(state):
    """decide() refuses it first; were it to let one through, the writer still would."""
    joined(state, "node1")
    before = (state.node("node1"), state.events("node1"))
    with pytest.raises(Refused) as e:
        reports.record(state, "node1", Report("os", "failed", time=900, final=True))
    assert e.value.status == 422
    with pytest.raises(Refused) as e:
        reports.record(state, "node1", Report("install", "installed", index=6, total=6,
                                              time=900, final=True))
    assert e.value.status == 422 and "it is joined" in e.value.message
    assert (state.node("node1"), state.events("node1")) == before


# -- the node row -----------------------------------------------------------------------------

def test_a_node_is_a_typed_frozen_row(state):
    booted(state, "node1")
    node = state.node("node1")
    assert isinstance(node, NodeRow) and node.state is NodeState.BOOTED
    assert (node.name, node.mac, node.ip) == ("node1", "52:54:00:20:02:22", "192.168.20.222")
    assert (node.index, node.total, node.attempt, node.step) == (6, 6, 1, "boot")
    assert node.host_keys == {"ed25519": KEY} and node.attempt_time == 100.0
    assert node.on_disk and not state.node("node2").on_disk
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.state = NodeState.PENDING
    assert node.token not in repr(node)      # a logged row shows no secret


def test_public_is_what_the_api_showed_before_rows_had_a_type(state):
    node = state.node("node2")
    public = node.public()
    assert list(public) == ["name", "mac", "ip", "state", "step", "index", "total", "attempt",
                            "updated", "message"]
    assert json.loads(json.dumps(public)) == {
        "name": "node2", "mac": "52:54:00:20:02:23", "ip": "192.168.20.223", "state": "pending",
        "step": "", "index": 0, "total": 0, "attempt": 0, "updated": node.updated,
        "message": ""}
    assert type(public["state"]) is str and node.token not in json.dumps(public)


def test_states_are_stored_as_their_strings(state):
    booted(state, "node1")
    with state.transaction() as db:
        got = db.execute("SELECT state, typeof(state) FROM nodes WHERE name = 'node1'")
        assert tuple(got.fetchone()) == ("booted", "text")
    assert [s.value for s in NodeState] == ["pending", "installing", "installed", "booted",
                                            "joining", "joined", "failed"]


# -- SQL lives in installer/master/state.py only ---------------------------------------------

SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE (TABLE|INDEX)|"
                 r"PRAGMA|BEGIN|COMMIT|ROLLBACK|SAVEPOINT)\b|\.execute(script|many)?\(")
MASTER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "installer", "master")


def sql_outside_state(root: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path == os.path.join(root, "state.py"):
                continue
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if SQL.search(line):
                        found.append(f"{os.path.relpath(path, root)}:{number}: {line.strip()}")
    return found


def test_no_sql_outside_the_state_module():
    assert sql_outside_state(MASTER) == []


def test_the_sql_check_finds_sql(tmp_path):
    (tmp_path / "state.py").write_text('db.execute("SELECT 1")\n')
    (tmp_path / "join").mkdir()
    (tmp_path / "join" / "x.py").write_text('    db.execute("UPDATE nodes SET a = 1")\n')
    assert sql_outside_state(str(tmp_path)) == [
        'join/x.py:1: db.execute("UPDATE nodes SET a = 1")']
