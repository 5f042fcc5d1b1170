"""The master's state in SQLite (stdlib, WAL): nodes, their install steps and events, and the
MACs that asked for a plan but are not in the cluster file.

Every change is one transaction, so a restart of `serve` (or a crash) loses nothing that was
acknowledged. Other processes may open the same file: the join component and the `reinstall`
command change a node through the same methods, and SQLite serialises the writers.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError

STATES = ("pending", "installing", "installed", "booted", "joining", "joined", "failed")
# States a join component may set (installer/join.py): the install's own states come from
# the node's reports only.
JOIN_STATES = ("booted", "joining", "joined", "failed")
# A node in one of these states is not meant to install: its plan (and token) is not served.
INSTALLED = ("installed", "booted", "joining", "joined")
UNKNOWN_KEEP = 1024             # a flood of made-up MACs cannot grow the table past this

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    mac TEXT NOT NULL UNIQUE,
    ip TEXT NOT NULL,
    token TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    step TEXT NOT NULL DEFAULT '',
    idx INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    attempt_time REAL NOT NULL DEFAULT 0,    -- the node's clock at its install started
    message TEXT NOT NULL DEFAULT '',
    host_keys TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
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
);
CREATE TABLE IF NOT EXISTS events (
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
);
CREATE INDEX IF NOT EXISTS events_by_node ON events (node, node_time);
CREATE TABLE IF NOT EXISTS unknown (
    mac TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL,
    source TEXT NOT NULL
);
"""

# What the API and `status` show of a node: never its token.
PUBLIC = ("name", "mac", "ip", "state", "step", "index", "total", "attempt", "updated",
          "message")


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
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged report survives a power cut of the master too.
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise InstallerError(f"cannot open the state database {self.path}: {e}; check "
                                 "the --state directory (serve creates it) and its "
                                 "permissions") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.row_factory = sqlite3.Row
        return db

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """SELECT on this thread's reading connection; while the thread writes (transaction(),
        together()), on the writing one, which sees what it has written so far."""
        if getattr(self._local, "writing", False):
            return self.db.execute(sql, args).fetchall()
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            with self._readers_lock:
                self._readers.append(db)
        return db.execute(sql, args).fetchall()

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
                row = db.execute("SELECT mac FROM nodes WHERE name = ?",
                                 (node.name,)).fetchone()
                if row is None:
                    db.execute("INSERT INTO nodes (name, mac, ip, token, updated) "
                               "VALUES (?, ?, ?, ?, ?)",
                               (node.name, node.mac, node.ip, new_token(), now))
                elif row["mac"] != node.mac:
                    db.execute("UPDATE nodes SET mac = ?, ip = ?, token = ?, state = 'pending', "
                               "step = '', idx = 0, total = 0, host_keys = '{}', "
                               "message = 'new MAC in the cluster file', updated = ? "
                               "WHERE name = ?",
                               (node.mac, node.ip, new_token(), now, node.name))
                else:
                    db.execute("UPDATE nodes SET ip = ? WHERE name = ?", (node.ip, node.name))

    def node(self, name: str) -> dict | None:
        rows = self._query("SELECT * FROM nodes WHERE name = ?", (name,))
        return node_from_row(rows[0]) if rows else None

    def node_by_mac(self, mac: str) -> dict | None:
        rows = self._query("SELECT * FROM nodes WHERE mac = ?", (mac,))
        return node_from_row(rows[0]) if rows else None

    def nodes(self) -> list[dict]:
        rows = self._query("SELECT * FROM nodes ORDER BY name")
        return [node_from_row(r) for r in rows]

    def set_state(self, name: str, state: str, message: str = "") -> None:
        """For the join component: booted → joining → joined, or failed, with a message."""
        if state not in JOIN_STATES:
            raise InstallerError(f"set_state({name!r}, {state!r}): a join may set only "
                                 f"{', '.join(JOIN_STATES)}")
        with self.transaction() as db:
            row = db.execute("SELECT attempt FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise InstallerError(f"set_state: no node '{name}' in the state database")
            now = time.time()
            db.execute("UPDATE nodes SET state = ?, step = 'join', message = ?, updated = ? "
                       "WHERE name = ?", (state, message, now, name))
            insert_event(db, name, row["attempt"], "join", state, message, 0, 0,
                          state in ("joined", "failed"), now, now, True)

    def note(self, name: str, message: str, step: str = "join") -> None:
        """A line for the node's event log (what the join's commands print)."""
        with self.transaction() as db:
            row = db.execute("SELECT attempt FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise InstallerError(f"note: no node '{name}' in the state database")
            now = time.time()
            insert_event(db, name, row["attempt"], step, "log", message, 0, 0, False, now, now,
                         True)

    def reinstall(self, name: str, before_commit=lambda node: None) -> dict:
        """Back to pending with a new token (an old disk's token stops working).

        before_commit(node) runs inside the transaction (the PXE flip back to install): if
        it raises, nothing changes."""
        with self.transaction() as db:
            row = db.execute("SELECT attempt FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is None:
                names = [r["name"] for r in db.execute("SELECT name FROM nodes ORDER BY name")]
                raise InstallerError(f"no node '{name}' in the cluster: use one of "
                                     f"{', '.join(names)}")
            now = time.time()
            db.execute("UPDATE nodes SET state = 'pending', step = '', idx = 0, total = 0, "
                       "token = ?, host_keys = '{}', message = 'marked for reinstall', "
                       "updated = ? WHERE name = ?", (new_token(), now, name))
            insert_event(db, name, row["attempt"], "reinstall", "pending",
                         "marked for reinstall", 0, 0, False, now, now, True)
            node = node_from_row(db.execute("SELECT * FROM nodes WHERE name = ?",
                                            (name,)).fetchone())
            before_commit(node)
        return node

    # -- events -----------------------------------------------------------------------------

    def events(self, name: str, limit: int = 1000) -> list[dict]:
        """The node's latest events, oldest first."""
        rows = self._query(
            "SELECT * FROM (SELECT * FROM events WHERE node = ? ORDER BY id DESC LIMIT ?) "
            "ORDER BY id", (name, limit))
        return [_event(r) for r in rows]

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


def new_token() -> str:
    """A per-node API token: URL-safe, as the plan schema requires."""
    return secrets.token_urlsafe(32)


def node_from_row(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["index"] = out.pop("idx")
    out["host_keys"] = json.loads(out["host_keys"])
    return out


def public(node: dict) -> dict:
    return {k: node[k] for k in PUBLIC}


def _event(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "attempt": row["attempt"], "step": row["step"],
            "status": row["status"], "message": row["message"], "index": row["idx"],
            "total": row["total"], "final": bool(row["final"]), "time": row["node_time"],
            "received": row["received"], "authenticated": bool(row["authenticated"])}


def insert_event(db, node, attempt, step, status, message, idx, total, final, node_time,
                  received, authenticated) -> None:
    db.execute("INSERT INTO events (node, attempt, step, status, message, idx, total, final, "
               "node_time, received, authenticated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (node, attempt, step, status, message, idx, total, int(final), node_time,
                received, int(authenticated)))


def open_state(state_dir: str) -> State:
    """The state database in STATE_DIR (created, mode 0700: it holds the node tokens)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    return State(os.path.join(state_dir, "state.db"))
