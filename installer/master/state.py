"""The master's state in SQLite (stdlib, WAL): nodes, their install steps and events, and the
MACs that asked for a plan but are not in the cluster file. The only module with SQL.

Every change is one transaction, so a restart of `serve` (or a crash) loses nothing that was
acknowledged. Other processes may open the same file: the join component and the `reinstall`
command change a node through the same methods, and SQLite serialises the writers. Every
change of a node's state is checked against installer.master.nodes.TRANSITIONS.

The file carries its schema version (PRAGMA user_version); opening an older one migrates it
(MIGRATIONS), a newer one is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError
from installer.master import limits
from installer.master.nodes import JOIN_STATES, NodeRow, NodeState, check

UNKNOWN_KEEP = 1024             # a flood of made-up MACs cannot grow the table past this
EVENTS_KEEP = limits.EVENTS     # a node's events kept: its oldest are dropped, and counted

# -- schema -----------------------------------------------------------------------------------
# Version 0: the release before schema versions (no user_version). Version 1: nodes.state
# may hold only a NodeState. Version 2: events are kept to a bound per node, and the ones
# dropped counted. Version 3: the cluster's ISOs and their state on each node. Version 4:
# who took each node's plan in its install cycle, and the fetches refused since
# (token-once enrolment). A later version adds a step to MIGRATIONS and leaves these
# texts as they are: a new database is made as version 1, then migrated like an old one.
SCHEMA_VERSION = 4
V1_STATES = ("pending", "installing", "installed", "booted", "joining", "joined", "failed")
NODES_V1 = """CREATE TABLE {table} (
    name TEXT PRIMARY KEY,
    mac TEXT NOT NULL UNIQUE,
    ip TEXT NOT NULL,
    token TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ({states})),
    step TEXT NOT NULL DEFAULT '',
    idx INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    attempt_time REAL NOT NULL DEFAULT 0,    -- the node's clock at its install started
    message TEXT NOT NULL DEFAULT '',
    host_keys TEXT NOT NULL DEFAULT '{{}}',
    updated REAL NOT NULL
)"""
NODE_COLUMNS = ("name", "mac", "ip", "token", "state", "step", "idx", "total", "attempt",
                "attempt_time", "message", "host_keys", "updated")
TABLES = (
    NODES_V1.format(table="nodes", states=", ".join(f"'{s}'" for s in V1_STATES)),
    """CREATE TABLE steps (
    node TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    idx INTEGER NOT NULL,
    total INTEGER NOT NULL,
    message TEXT NOT NULL,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (node, attempt, step)
)""",
    """CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    idx INTEGER NOT NULL,
    total INTEGER NOT NULL,
    final INTEGER NOT NULL,
    node_time REAL NOT NULL,
    received REAL NOT NULL,
    authenticated INTEGER NOT NULL
)""",
    "CREATE INDEX events_by_node ON events (node, node_time)",
    """CREATE TABLE unknown (
    mac TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL,
    source TEXT NOT NULL
)""",
)


def _v0_to_v1(db: sqlite3.Connection, path: str) -> None:
    """nodes gets its CHECK on state: SQLite adds none to a table, so the table is rebuilt."""
    marks = ",".join("?" * len(V1_STATES))
    for row in db.execute(f"SELECT name, state FROM nodes WHERE state NOT IN ({marks})",
                          V1_STATES):
        raise InstallerError(f"{path}: node {row['name']} has the state {row['state']!r}, "
                             "which no release of ganeti-installer writes: move state.db "
                             "aside to start over (every node then installs again)")
    states = ", ".join(f"'{s}'" for s in V1_STATES)
    columns = ", ".join(NODE_COLUMNS)
    db.execute(NODES_V1.format(table="nodes_v1", states=states))
    db.execute(f"INSERT INTO nodes_v1 ({columns}) SELECT {columns} FROM nodes")
    db.execute("DROP TABLE nodes")
    db.execute("ALTER TABLE nodes_v1 RENAME TO nodes")


def _v1_to_v2(db: sqlite3.Connection, path: str) -> None:
    """A node's events by id (dropping the oldest, pages of them), and the count dropped."""
    db.execute("CREATE INDEX events_by_node_id ON events (node, id)")
    db.execute("CREATE TABLE dropped (node TEXT PRIMARY KEY, events INTEGER NOT NULL)")


ISO_STATES = ("sending", "present", "failed")


def _v2_to_v3(db: sqlite3.Connection, path: str) -> None:
    """The cluster's ISOs (serve's copy of each) and each one's state on each node."""
    db.execute("CREATE TABLE isos (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
               "size INTEGER NOT NULL, path TEXT NOT NULL, added REAL NOT NULL)")
    states = ", ".join(f"'{s}'" for s in ISO_STATES)
    db.execute("CREATE TABLE iso_nodes (iso TEXT NOT NULL, node TEXT NOT NULL, "
               f"state TEXT NOT NULL CHECK (state IN ({states})), message TEXT NOT NULL, "
               "updated REAL NOT NULL, PRIMARY KEY (iso, node))")


def _v3_to_v4(db: sqlite3.Connection, path: str) -> None:
    """A node's plan goes out once per install cycle: to whom and when, and the fetches
    refused since. No row: the node was never fetched in this cycle (a pending node of an
    older release is armed, as it was)."""
    db.execute("""CREATE TABLE plan_fetches (
    node TEXT PRIMARY KEY,
    taken_by TEXT NOT NULL DEFAULT '',      -- the client address that got the plan
    taken_at REAL NOT NULL DEFAULT 0,       -- the master's clock; 0: not taken
    refused_by TEXT NOT NULL DEFAULT '',    -- the last address refused a plan
    refused_at REAL NOT NULL DEFAULT 0,
    refusals INTEGER NOT NULL DEFAULT 0
)""")


# MIGRATIONS[v] brings a database from version v to v + 1, inside the opening transaction.
MIGRATIONS: tuple[Callable[[sqlite3.Connection, str], None], ...] = (_v0_to_v1, _v1_to_v2,
                                                                      _v2_to_v3, _v3_to_v4)
# A refused plan fetch is an event at most this often per node (each one is counted).
REFUSAL_EVENT_EVERY = 60.0


def _known_version(db: sqlite3.Connection, path: str) -> int:
    """The file's schema version; InstallerError if this code is too old for it."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise InstallerError(
            f"{path} has schema version {version}, newer than this ganeti-installer knows "
            f"({SCHEMA_VERSION}): a newer release wrote it; run that release (or a later "
            "one), or give this one another --state directory")
    return version


def upgrade(db: sqlite3.Connection, path: str) -> int:
    """Create the tables of a new database or migrate an older one; the version it had."""
    version = _known_version(db, path)
    new = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nodes'"
                     ).fetchone() is None
    if new:
        for ddl in TABLES:
            db.execute(ddl)
        version = 1                     # TABLES is version 1's schema
    for migrate in MIGRATIONS[version:]:
        migrate(db, path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return version


class State:
    """One SQLite file; safe to share between threads and processes (SQLite). Writes go
    through one connection and lock; each thread reads on a connection of its own, which in
    WAL mode sees the last commit without waiting for a writer's fsync."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()   # not self.lock: a writer may hold that
        try:
            self.db = self._connect()
        except sqlite3.Error as e:
            raise self._unopened(e) from None
        try:
            _known_version(self.db, path)   # before WAL mode: a newer file stays as it is
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged report survives a power cut of the master too.
            self.db.execute("PRAGMA synchronous=FULL")
            with self.transaction() as db:  # IMMEDIATE: a second opener waits, then sees it
                upgrade(db, path)
        except sqlite3.Error as e:
            self.db.close()
            raise self._unopened(e) from None
        except BaseException:
            self.db.close()
            raise

    def _unopened(self, e: sqlite3.Error) -> InstallerError:
        return InstallerError(f"cannot open the state database {self.path}: {e}; check the "
                              "--state directory (serve creates it) and its permissions")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.row_factory = sqlite3.Row
        return db

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """SELECT on this thread's reading connection; while the thread writes (transaction(),
        together()), on the writing one, which sees what it has written so far."""
        return self._reader().execute(sql, args).fetchall()

    def _reader(self) -> sqlite3.Connection:
        """This thread's reading connection (the writing one while it writes)."""
        if getattr(self._local, "writing", False):
            return self.db
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            with self._readers_lock:
                self._readers.append(db)
        return db

    def close(self) -> None:
        with self._readers_lock:
            for db in self._readers:
                db.close()      # from this thread: why they are check_same_thread=False
            self._readers.clear()
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: all or nothing. Inside
        together() it is a savepoint of the group's transaction, all or nothing as well."""
        if getattr(self._local, "writing", False):
            self.db.execute("SAVEPOINT one")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:  # else SQLite rolled back the whole group
                    self.db.execute("ROLLBACK TO one")
                    self.db.execute("RELEASE one")
                raise
            self.db.execute("RELEASE one")
            return
        with self.lock, self._writing():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def together(self, calls: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run CALLS, whose writes use transaction(), under one COMMIT: one fsync for all of
        them. A call that raises is rolled back alone. For each call (True, its result) or
        (False, its exception); if the COMMIT fails, every call failed with its error."""
        outcomes: list[tuple[bool, Any]] = []
        with self.lock, self._writing():
            try:
                self.db.execute("BEGIN IMMEDIATE")
                for call in calls:
                    try:
                        outcomes.append((True, call()))
                    except Exception as e:  # noqa: BLE001 - handed to the caller
                        outcomes.append((False, e))
                        if not self.db.in_transaction:  # an I/O error, a full disk
                            raise sqlite3.OperationalError(
                                f"the transaction was rolled back: {e}") from e
                self.db.execute("COMMIT")
            except BaseException as e:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                if not isinstance(e, sqlite3.Error):
                    raise
                return [(False, e)] * len(calls)
        return outcomes

    @contextmanager
    def _writer(self) -> Iterator[sqlite3.Connection]:
        """The caller's transaction when there is one (no savepoint: a report's few writes
        cost what they did as plain SQL), else one of its own."""
        if getattr(self._local, "writing", False):
            yield self.db
        else:
            with self.transaction() as db:
                yield db

    @contextmanager
    def _writing(self) -> Iterator[None]:
        self._local.writing = True
        try:
            yield
        finally:
            self._local.writing = False

    # -- nodes ------------------------------------------------------------------------------

    def sync_nodes(self, cluster: Cluster) -> None:
        """Make the node table match the cluster file; a node whose MAC changed (new hardware)
        starts over as pending with a new token. Known nodes keep their state and token."""
        now = time.time()
        with self.transaction() as db:
            names = [n.name for n in cluster.nodes]
            db.execute(f"DELETE FROM nodes WHERE name NOT IN ({','.join('?' * len(names))})",
                       names)
            macs = {n.mac: n.name for n in cluster.nodes}
            for row in db.execute("SELECT name, mac FROM nodes").fetchall():
                if macs.get(row["mac"], row["name"]) != row["name"]:   # a MAC moved nodes
                    db.execute("DELETE FROM nodes WHERE name = ?", (row["name"],))
            for node in cluster.nodes:
                old = self.node(node.name)
                if old is None:
                    db.execute("INSERT INTO nodes (name, mac, ip, token, state, updated) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               (node.name, node.mac, node.ip, new_token(), NodeState.PENDING,
                                now))
                elif old.mac != node.mac:
                    check(node.name, old.state, NodeState.PENDING)
                    db.execute("UPDATE nodes SET mac = ?, ip = ?, token = ?, state = ?, "
                               "step = '', idx = 0, total = 0, host_keys = '{}', "
                               "message = 'new MAC in the cluster file', updated = ? "
                               "WHERE name = ?",
                               (node.mac, node.ip, new_token(), NodeState.PENDING, now,
                                node.name))
                else:
                    db.execute("UPDATE nodes SET ip = ? WHERE name = ?", (node.ip, node.name))
                    continue
                db.execute("DELETE FROM plan_fetches WHERE node = ?", (node.name,))
            db.execute("DELETE FROM plan_fetches WHERE node NOT IN (SELECT name FROM nodes)")

    def node(self, name: str) -> NodeRow | None:
        rows = self._query("SELECT * FROM nodes WHERE name = ?", (name,))
        return _node(rows[0]) if rows else None

    def node_by_mac(self, mac: str) -> NodeRow | None:
        rows = self._query("SELECT * FROM nodes WHERE mac = ?", (mac,))
        return _node(rows[0]) if rows else None

    def nodes(self) -> list[NodeRow]:
        rows = self._query("SELECT * FROM nodes ORDER BY name")
        return [_node(r) for r in rows]

    def require(self, name: str, what: str) -> NodeRow:
        """The node, or InstallerError naming `what` wanted it and the nodes there are."""
        node = self.node(name)
        if node is None:
            names = [n.name for n in self.nodes()]
            raise InstallerError(f"{what}: no node '{name}' in the cluster: use one of "
                                 f"{', '.join(names)}")
        return node

    def set_state(self, name: str, state: NodeState | str, message: str = "") -> NodeRow:
        """For the join component: booted → joining → joined, or failed, with a message."""
        if state not in JOIN_STATES:
            raise InstallerError(f"set_state({name!r}, {str(state)!r}): a join may set only "
                                 f"{', '.join(JOIN_STATES)}")
        state = NodeState(state)
        with self.transaction() as db:
            node = self.require(name, "set_state")
            check(name, node.state, state)
            now = time.time()
            db.execute("UPDATE nodes SET state = ?, step = 'join', message = ?, updated = ? "
                       "WHERE name = ?", (state, message, now, name))
            self.add_event(name, node.attempt, "join", state, message,
                           final=state in (NodeState.JOINED, NodeState.FAILED),
                           node_time=now, received=now, authenticated=True)
            return self.require(name, "set_state")

    def note(self, name: str, message: str, step: str = "join") -> None:
        """A line for the node's event log (what the join's commands print)."""
        with self.transaction():
            node = self.require(name, "note")
            now = time.time()
            self.add_event(name, node.attempt, step, "log", message, node_time=now,
                           received=now, authenticated=True)

    def reinstall(self, name: str,
                  before_commit: Callable[[NodeRow], None] = lambda node: None) -> NodeRow:
        """Back to pending with a new token (an old disk's token stops working).

        before_commit(node) runs inside the transaction (the PXE flip back to install): if
        it raises, nothing changes."""
        with self.transaction() as db:
            node = self.require(name, "reinstall")
            check(name, node.state, NodeState.PENDING)
            now = time.time()
            db.execute("UPDATE nodes SET state = ?, step = '', idx = 0, total = 0, "
                       "token = ?, host_keys = '{}', message = 'marked for reinstall', "
                       "updated = ? WHERE name = ?",
                       (NodeState.PENDING, new_token(), now, name))
            db.execute("DELETE FROM plan_fetches WHERE node = ?", (name,))   # armed again
            self.add_event(name, node.attempt, "reinstall", NodeState.PENDING,
                           "marked for reinstall", node_time=now, received=now,
                           authenticated=True)
            after = self.require(name, "reinstall")
            before_commit(after)
        return after

    def update_node(self, name: str, change: dict[str, Any], now: float) -> None:
        """Apply a report's change ({"state": ..., "index": ..., ...}); a new state must be
        one the node may move to (nodes.Forbidden otherwise, and nothing changes)."""
        unknown = set(change) - set(_CHANGEABLE)
        if unknown:
            raise ValueError(f"update_node: no such node field(s) {', '.join(sorted(unknown))}")
        with self._writer() as db:
            if "state" in change:
                change = dict(change, state=NodeState(change["state"]))
                check(name, self.require(name, "update_node").state, change["state"])
            values = [json.dumps(v) if k == "host_keys" else v for k, v in change.items()]
            sets = ", ".join(f"{_CHANGEABLE[k]} = ?" for k in change)
            db.execute(f"UPDATE nodes SET {sets}, updated = ? WHERE name = ?",
                       (*values, now, name))

    # -- plans: once per install cycle ------------------------------------------------------

    def take_plan(self, name: str, address: str, now: float) -> tuple[bool, NodeRow, dict]:
        """Hand the node's plan to ADDRESS if the node is armed (pending, its plan not yet
        taken in this cycle): (True, node, fetch). Otherwise the refusal is counted (and an
        event, at most one per REFUSAL_EVENT_EVERY or new address; fetch["noted"] says if
        it made one): (False, node, fetch). One transaction,
        so of two fetches at once exactly one gets the plan."""
        with self._writer() as db:
            node = self.require(name, "take_plan")
            fetch = self.plan_fetch(name)
            if node.state == NodeState.PENDING and not fetch["taken_at"]:
                db.execute("INSERT INTO plan_fetches (node, taken_by, taken_at) VALUES "
                           "(?, ?, ?) ON CONFLICT (node) DO UPDATE SET taken_by = "
                           "excluded.taken_by, taken_at = excluded.taken_at",
                           (name, address, now))
                return True, node, self.plan_fetch(name)
            db.execute("INSERT INTO plan_fetches (node, refused_by, refused_at, refusals) "
                       "VALUES (?, ?, ?, 1) ON CONFLICT (node) DO UPDATE SET refused_by = "
                       "excluded.refused_by, refused_at = excluded.refused_at, "
                       "refusals = refusals + 1", (name, address, now))
            noted = now - fetch["refused_at"] >= REFUSAL_EVENT_EVERY or \
                fetch["refused_by"] != address
            if noted:
                self.add_event(name, node.attempt, "plan", "refused",
                               f"plan fetch from {address} refused ({node.state}"
                               + (f", taken by {fetch['taken_by']}" if fetch["taken_at"]
                                  else "") + ")",
                               node_time=now, received=now, authenticated=False)
            return False, node, dict(self.plan_fetch(name), noted=noted)

    def plan_fetch(self, name: str) -> dict:
        """Who took the node's plan in this install cycle and when (taken_at 0: nobody),
        and the refused fetches since."""
        rows = self._query("SELECT * FROM plan_fetches WHERE node = ?", (name,))
        return _fetch(rows[0]) if rows else dict(NO_FETCH)

    def plan_fetches(self) -> dict[str, dict]:
        return {r["node"]: _fetch(r) for r in self._query("SELECT * FROM plan_fetches")}

    # -- steps and events -------------------------------------------------------------------

    def save_step(self, name: str, attempt: int, step: str, status: str, index: int,
                  total: int, message: str, now: float) -> None:
        """The step's latest status in the node's attempt (begun now if it is new)."""
        with self._writer() as db:
            db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (node, attempt, step) DO UPDATE SET status = "
                       "excluded.status, idx = excluded.idx, total = excluded.total, "
                       "message = excluded.message, updated = excluded.updated",
                       (name, attempt, step, status, index, total, message, now, now))

    def add_event(self, name: str, attempt: int, step: str, status: str, message: str, *,
                  index: int = 0, total: int = 0, final: bool = False, node_time: float,
                  received: float, authenticated: bool) -> None:
        """A new event; past EVENTS_KEEP of the node's, its oldest is dropped and counted."""
        with self._writer() as db:
            db.execute("INSERT INTO events (node, attempt, step, status, message, idx, total, "
                       "final, node_time, received, authenticated) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (name, attempt, step, status, message, index, total, int(final),
                        node_time, received, int(authenticated)))
            self._drop_old_events(db, name)

    def _drop_old_events(self, db: sqlite3.Connection, name: str) -> None:
        gone = db.execute(
            "DELETE FROM events WHERE node = ? AND id <= (SELECT id FROM events WHERE "
            "node = ? ORDER BY id DESC LIMIT 1 OFFSET ?)", (name, name, EVENTS_KEEP)).rowcount
        if gone > 0:
            db.execute("INSERT INTO dropped VALUES (?, ?) ON CONFLICT (node) DO UPDATE SET "
                       "events = events + excluded.events", (name, gone))

    def events_dropped(self, name: str) -> int:
        """How many of the node's oldest events were dropped to keep EVENTS_KEEP."""
        rows = self._query("SELECT events FROM dropped WHERE node = ?", (name,))
        return rows[0][0] if rows else 0

    def has_event(self, name: str, node_time: float, step: str, status: str,
                  index: int) -> bool:
        """Whether the node reported this already (the agent resends a lost answer's)."""
        return bool(self._query(
            "SELECT 1 FROM events WHERE node = ? AND node_time = ? AND step = ? "
            "AND status = ? AND idx = ?", (name, node_time, step, status, index)))

    def events(self, name: str, limit: int = 1000, after: int | None = None,
               budget: int = limits.PAGE_BYTES) -> list[dict]:
        """The node's events, oldest first: the latest LIMIT, or the first LIMIT after the
        event with id AFTER (a page); fewer once their messages pass BUDGET characters.
        Rows are read one by one: a page is never more than that in memory."""
        args: tuple = (name,) if after is None else (name, after)
        sql = "SELECT * FROM events WHERE node = ? ORDER BY id DESC" if after is None else \
            "SELECT * FROM events WHERE node = ? AND id > ? ORDER BY id"
        page: list[dict] = []
        size = 0
        rows = self._reader().execute(f"{sql} LIMIT ?", (*args, limit))
        try:
            for row in rows:
                size += len(row["message"])
                if page and size > budget:
                    break
                page.append(_event(row))
        finally:
            rows.close()        # ends the read: WAL checkpoints need no reader behind
        return page if after is not None else page[::-1]

    def step_count(self, name: str, attempt: int) -> int:
        return self._query("SELECT COUNT(*) FROM steps WHERE node = ? AND attempt = ?",
                           (name, attempt))[0][0]

    def has_step(self, name: str, attempt: int, step: str) -> bool:
        return bool(self._query("SELECT 1 FROM steps WHERE node = ? AND attempt = ? AND "
                                "step = ?", (name, attempt, step)))

    def steps(self, name: str) -> list[dict]:
        """The steps of the node's latest attempt, in the order they began."""
        rows = self._query(
            "SELECT s.* FROM steps s JOIN nodes n ON n.name = s.node AND "
            "n.attempt = s.attempt WHERE s.node = ? ORDER BY s.started", (name,))
        return [{"step": r["step"], "status": r["status"], "index": r["idx"],
                 "total": r["total"], "message": r["message"], "started": r["started"],
                 "updated": r["updated"]} for r in rows]

    # -- unknown MACs -----------------------------------------------------------------------

    def record_unknown(self, mac: str, source: str) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO unknown (mac, first_seen, last_seen, count, source) "
                       "VALUES (?, ?, ?, 1, ?) ON CONFLICT (mac) DO UPDATE SET "
                       "last_seen = excluded.last_seen, count = count + 1, "
                       "source = excluded.source", (mac, now, now, source))
            db.execute("DELETE FROM unknown WHERE mac NOT IN (SELECT mac FROM unknown "
                       "ORDER BY last_seen DESC LIMIT ?)", (UNKNOWN_KEEP,))

    def unknown(self) -> list[dict]:
        """MACs seen but not in the cluster file (a node adopted since is left out)."""
        rows = self._query(
            "SELECT * FROM unknown WHERE mac NOT IN (SELECT mac FROM nodes) "
            "ORDER BY last_seen DESC")
        return [dict(r) for r in rows]


    # -- ISOs -------------------------------------------------------------------------------

    def add_iso(self, name: str, sha256: str, size: int, path: str) -> None:
        """A new ISO, or the same bytes again (kept as they were)."""
        with self.transaction() as db:
            db.execute("INSERT INTO isos VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO "
                       "NOTHING", (name, sha256, size, path, time.time()))

    def iso(self, name: str) -> dict | None:
        rows = self._query("SELECT * FROM isos WHERE name = ?", (name,))
        return dict(rows[0]) if rows else None

    def isos(self) -> list[dict]:
        """Every ISO with its state on each node: {"nodes": {node: {...}}}."""
        out = []
        for row in self._query("SELECT * FROM isos ORDER BY name"):
            nodes = {r["node"]: {"state": r["state"], "message": r["message"],
                                 "updated": r["updated"]}
                     for r in self._query("SELECT * FROM iso_nodes WHERE iso = ? ORDER BY "
                                          "node", (row["name"],))}
            out.append(dict(row, nodes=nodes))
        return out

    def set_iso_node(self, iso: str, node: str, state: str, message: str) -> None:
        if state not in ISO_STATES:
            raise ValueError(f"set_iso_node: {state!r} is not one of {', '.join(ISO_STATES)}")
        with self.transaction() as db:
            db.execute("INSERT INTO iso_nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT (iso, node) "
                       "DO UPDATE SET state = excluded.state, message = excluded.message, "
                       "updated = excluded.updated", (iso, node, state, message, time.time()))

    def drop_iso_node(self, iso: str, node: str) -> None:
        """The node has the ISO no longer (removed there)."""
        with self.transaction() as db:
            db.execute("DELETE FROM iso_nodes WHERE iso = ? AND node = ?", (iso, node))

    def remove_iso(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM iso_nodes WHERE iso = ?", (name,))
            db.execute("DELETE FROM isos WHERE name = ?", (name,))


# NodeRow's fields a report may change, and their columns.
_CHANGEABLE = {"state": "state", "attempt": "attempt", "attempt_time": "attempt_time",
               "step": "step", "index": "idx", "total": "total", "message": "message",
               "host_keys": "host_keys"}


def new_token() -> str:
    """A per-node API token: URL-safe, as the plan schema requires."""
    return secrets.token_urlsafe(32)


def _node(row: sqlite3.Row) -> NodeRow:
    return NodeRow(name=row["name"], mac=row["mac"], ip=row["ip"], token=row["token"],
                   state=NodeState(row["state"]), step=row["step"], index=row["idx"],
                   total=row["total"], attempt=row["attempt"],
                   attempt_time=row["attempt_time"], message=row["message"],
                   host_keys=json.loads(row["host_keys"]), updated=row["updated"])


NO_FETCH = {"taken_by": "", "taken_at": 0.0, "refused_by": "", "refused_at": 0.0,
             "refusals": 0}


def _fetch(row: sqlite3.Row) -> dict:
    return {k: row[k] for k in NO_FETCH}


def _event(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "attempt": row["attempt"], "step": row["step"],
            "status": row["status"], "message": row["message"], "index": row["idx"],
            "total": row["total"], "final": bool(row["final"]), "time": row["node_time"],
            "received": row["received"], "authenticated": bool(row["authenticated"])}


def open_state(state_dir: str) -> State:
    """The state database in STATE_DIR (created, mode 0700: it holds the node tokens)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    return State(os.path.join(state_dir, "state.db"))
