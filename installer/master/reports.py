"""The agent's progress reports: their shape, and what each one does to a node's state.

pending ─install started─▶ installing ─install installed─▶ installed ─boot booted─▶ booted
   (any failed final report ▶ failed; a new install started begins a new attempt at any time;
   installer.master.nodes.TRANSITIONS is the whole table)

A report is checked completely before anything is written; a refused report changes nothing
and gets a 4xx with the reason. Refusals are never 409: the agent retries 409 forever.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from installer.master import limits
from installer.master.nodes import Forbidden, NodeRow, NodeState
from installer.master.state import State

LIMIT = limits.BODY         # a report carries hook output (the agent keeps its last 4000 chars)
STATUSES = ("started", "running", "done", "skipped", "failed", "installed", "booted")
STEP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./+@:-]{0,199}")
KEY_TYPE = re.compile(r"[a-z0-9-]{1,32}")
HOST_KEY = re.compile(r"[a-z0-9@.-]{1,64} [A-Za-z0-9+/]{16,16384}={0,3}")


class Refused(Exception):
    """A report the master does not take: HTTP status and a message naming the fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Report:
    step: str
    status: str
    message: str = ""
    index: int = 0
    total: int = 0
    time: float = 0.0
    final: bool = False
    host_keys: dict = field(default_factory=dict)


def parse(body: bytes) -> Report:
    """A Report from a request body, or Refused(400) naming the field and what it must be.
    Every field is bounded here (installer.master.limits), before the database sees it."""
    if limits.too_deep(body):
        raise Refused(400, f"the report nests deeper than {limits.DEPTH} levels: send a flat "
                           "JSON object like {\"step\": \"os\", \"status\": \"started\"}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise Refused(400, f"the report is not JSON ({e}): send a JSON object like "
                           '{"step": "os", "status": "started", "index": 3, "total": 6}') from None
    if not isinstance(data, dict):
        raise Refused(400, "the report must be a JSON object")
    unknown = sorted(set(data) - {"step", "status", "message", "index", "total", "time",
                                  "final", "host_keys", "usage"})
    if unknown:
        raise Refused(400, f"unknown field(s) in the report: {', '.join(unknown)}")
    step = _typed(data, "step", str, None)
    if not STEP.fullmatch(step):
        raise Refused(400, f"'step' {step[:80]!r} is not a step name: letters, digits and "
                           "_./+@:- only, at most 200 characters")
    status = _typed(data, "status", str, None)
    if status not in STATUSES:
        raise Refused(400, f"'status' {status[:80]!r} is unknown: use one of "
                           f"{', '.join(STATUSES)}")
    index, total = _typed(data, "index", int, 0), _typed(data, "total", int, 0)
    if not (0 <= index <= limits.INDEX and 0 <= total <= limits.INDEX) or \
            (total and index > total):
        raise Refused(400, f"'index' {_short(index)} and 'total' {_short(total)}: need "
                           f"0 <= index <= total <= {limits.INDEX}")
    when = _typed(data, "time", float, 0.0)
    if not _number_within(when, limits.TIME):
        raise Refused(400, "'time' must be the node's clock in seconds since the epoch")
    message = _text(_typed(data, "message", str, "")) or _usage(data.get("usage", {}))
    return Report(step=step, status=status, message=message,
                  index=index, total=total, time=float(when),
                  final=_typed(data, "final", bool, False),
                  host_keys=_host_keys(data.get("host_keys", {})))


def _short(number: int) -> str:
    """An integer for a message: 10**400 is not written out."""
    return str(number) if abs(number) < 10**30 else f"(a {number.bit_length()}-bit integer)"


def _number_within(value: float, top: float) -> bool:
    """0 <= value <= top, finite; an int too large for a float is simply too large."""
    if isinstance(value, int):
        return 0 <= value <= top
    return math.isfinite(value) and 0 <= value <= top


def _text(message: str) -> str:
    if len(message) > limits.MESSAGE:
        raise Refused(400, f"'message' has {len(message)} characters: at most "
                           f"{limits.MESSAGE} (keep the end of long output)")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:      # a lone surrogate ("\ud800"): SQLite cannot store it
        raise Refused(400, "'message' is not valid Unicode (a lone surrogate)") from None
    return message


def _usage(value) -> str:
    """The agent's resource use in its final report, as the event's message."""
    keys = ("cpu_s", "max_rss_kib", "children_cpu_s", "children_max_rss_kib")
    if not isinstance(value, dict) or set(value) - set(keys) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and
            _number_within(v, limits.USAGE) for v in value.values()):
        raise Refused(400, f"'usage' must be an object of numbers from 0 to {limits.USAGE} "
                           f"with the keys {', '.join(keys)}")
    if not value:
        return ""
    return (f"agent: CPU {value.get('cpu_s', 0):g} s, peak memory "
            f"{value.get('max_rss_kib', 0) / 1024:.0f} MiB; its commands: CPU "
            f"{value.get('children_cpu_s', 0):g} s")


def _typed(data: dict, key: str, kind: type, default):
    if key not in data:
        if default is None:
            raise Refused(400, f"the report has no '{key}'")
        return default
    value = data[key]
    if kind is bool:
        ok = isinstance(value, bool)
    else:       # JSON true is not a number; an integer is a fine time
        ok = isinstance(value, (int, float) if kind is float else kind) and \
            not isinstance(value, bool)
    if not ok:
        name = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        raise Refused(400, f"'{key}' must be {name[kind]}, not {type(value).__name__}")
    return value


def _host_keys(value) -> dict:
    if not isinstance(value, dict):
        raise Refused(400, "'host_keys' must be an object like {\"ed25519\": \"ssh-ed25519 "
                           "AAAA...\"}")
    if len(value) > limits.HOST_KEYS:
        raise Refused(400, f"'host_keys' has {len(value)} keys: at most {limits.HOST_KEYS}")
    for kind, key in value.items():
        if not KEY_TYPE.fullmatch(kind) or not isinstance(key, str) or \
                not HOST_KEY.fullmatch(key):
            raise Refused(400, f"host_keys[{kind[:40]!r}] is not '<type> <base64>' as in "
                               "/etc/ssh/ssh_host_*_key.pub")
    return dict(value)


@dataclass(frozen=True)
class Outcome:
    node: NodeRow               # the node after the report
    duplicate: bool = False     # the same report again (the agent's answer was lost)
    installed: bool = False     # flipped to installed by this report
    booted: bool = False        # flipped to booted: the join may start


def record(state: State, name: str, report: Report, *,
           on_installed: Callable[[NodeRow], None] = lambda node: None) -> Outcome:
    """Check `report` (whose token the caller checked) against the node's state and apply
    it, in one transaction.

    on_installed(node) runs inside the transaction (the PXE flip): if it raises, nothing
    is recorded and the agent, which retries, sends the report again."""
    now = time.time()
    with state.transaction():
        node = state.node(name)
        if node is None:
            raise Refused(404, f"no node '{name}' in the cluster file")
        if state.has_event(name, report.time, report.step, report.status, report.index):
            return Outcome(node, duplicate=True)
        change = decide(node, report)
        attempt = change.get("attempt", node.attempt)
        if change:
            _bounded_steps(state, name, attempt, report.step)
        state.add_event(name, attempt, report.step, report.status, report.message,
                        index=report.index, total=report.total, final=report.final,
                        node_time=report.time, received=now, authenticated=True)
        if change:
            try:
                state.update_node(name, change, now)
            except Forbidden as e:      # decide() lets no such report through: a backstop
                raise Refused(422, f"report '{report.step} {report.status}': {e}") from None
            state.save_step(name, attempt, report.step, report.status, report.index,
                            report.total, report.message, now)
        after = state.require(name, "record")
        installed = change.get("state") == NodeState.INSTALLED
        if installed:
            on_installed(after)
        return Outcome(after, installed=installed,
                       booted=change.get("state") == NodeState.BOOTED)


def _bounded_steps(state: State, name: str, attempt: int, step: str) -> None:
    """A node's steps table does not grow past limits.STEPS in one attempt."""
    if not state.has_step(name, attempt, step) and \
            state.step_count(name, attempt) >= limits.STEPS:
        raise Refused(422, f"{name} reported {limits.STEPS} different steps in this install "
                           f"attempt: a new step '{step}' is not taken")


def decide(node: NodeRow, r: Report) -> dict:
    """The node's changed fields after an authenticated report; Refused(422) if out of order."""
    name, state = node.name, node.state
    if (r.step, r.status) == ("install", "started"):
        return {"state": NodeState.INSTALLING, "attempt": node.attempt + 1,
                "attempt_time": r.time, "step": "install", "index": 0, "total": r.total,
                "message": r.message, "host_keys": {}}
    if (r.step, r.status) == ("boot", "booted"):
        return _booted(node, r)
    if state != NodeState.INSTALLING:
        why = {NodeState.PENDING: "no install has started",
               NodeState.FAILED: "its install failed"}.get(state, f"it is {state}")
        raise Refused(422, f"report '{r.step} {r.status}' for {name} is out of order: {why}; "
                           "an install's reports begin with 'install started'")
    if r.time < node.attempt_time:
        raise Refused(422, f"report '{r.step} {r.status}' for {name} is older than the "
                           "install attempt it would belong to (a leftover of an earlier one)")
    if r.index and r.index < node.index:
        raise Refused(422, f"report '{r.step} {r.status}' for {name} is out of order: "
                           f"index {r.index} after {node.index}")
    if r.total and node.total and r.total != node.total:
        raise Refused(422, f"report '{r.step} {r.status}' for {name} has total {r.total}, "
                           f"but its install started with {node.total} stages")
    change = {"step": r.step, "message": r.message, "index": r.index or node.index}
    if (r.step, r.status) == ("install", "installed"):
        return dict(change, state=NodeState.INSTALLED, host_keys=r.host_keys)
    if r.status == "failed" and r.final:
        return dict(change, state=NodeState.FAILED)
    return change


def _booted(node: NodeRow, r: Report) -> dict:
    """The node booted its own disk: only after its install, and with the same host keys."""
    name, state = node.name, node.state
    if not r.host_keys:
        raise Refused(400, "a 'boot booted' report must carry the node's host_keys")
    if state in (NodeState.PENDING, NodeState.INSTALLING):
        raise Refused(422, f"'boot booted' for {name} is out of order: it is {state}, and "
                           "a node reports booted only after 'install installed'")
    known = node.host_keys
    # gnt-node add gives every node the master's rsa/ecdsa host keys; its own ed25519 key
    # stays, so that is the key that tells a joined node from another disk.
    common = set(known) & set(r.host_keys)
    common = common & {"ed25519"} or common
    if known and (not common or any(known[k] != r.host_keys[k] for k in common)):
        raise Refused(422, f"the host keys {name} reports differ from those its install "
                           "reported: not the disk that was installed; check the machine and "
                           f"run ganeti-installer reinstall for {name}")
    if state in (NodeState.JOINING, NodeState.JOINED):
        return {}       # a member rebooted: recorded, and the join is not run again
    return {"state": NodeState.BOOTED, "step": "boot", "message": r.message,
            "host_keys": known or r.host_keys}
