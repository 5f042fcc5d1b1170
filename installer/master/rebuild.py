"""`ganeti-installer rebuild NODE`: a failed node back into its cluster, hands off.

Shaped like a Ganeti logical unit: read the cluster through its master (`gnt-node list`,
`gnt-instance list`) and decide everything first, changing nothing, then act:

1. refuse while NODE is the master, not in the cluster, or primary for instances, unless
   `--evacuate` moves them (DRBD only: a plain or file disk has no second copy to move to);
2. evacuate (`gnt-node migrate` for running instances, `gnt-instance failover` for stopped
   ones), then `gnt-node modify -O yes` so Ganeti stops using the node;
3. with --mac (new hardware), write the node's new MAC into the cluster file and have the
   running serve take it (`POST /api/v1/reload`: the old MAC forgotten); reinstall it
   (serve's API, as `reinstall`) and power it on (`power`, with the new MAC for
   Wake-on-LAN);
4. serve installs it and joins it with `gnt-node add --readd` (the join pins the host key
   the new install reported, and --readd clears the offline flag);
5. once it is joined, for every DRBD instance that has it as secondary: `gnt-instance
   activate-disks` (its DRBD device on the node, without volumes yet: replace-disks looks
   for it there first), `gnt-instance replace-disks -s` (new volumes, waits for the sync),
   and `deactivate-disks` again for an instance that is down; then `gnt-cluster verify`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from installer.cluster.errors import InstallerError

INSTANCES = ["gnt-instance", "list", "--no-headers", "--separator=|",
             "-o", "name,pnode,snodes,status,disk_template"]
NODES = ["gnt-node", "list", "--no-headers", "--separator=|", "-o", "name,master,offline"]
VERIFY = ["gnt-cluster", "verify"]
RUNNING = ("running", "ERROR_up")       # Ganeti's status of an instance that runs
MOVABLE = ("drbd",)                     # templates with a copy on a secondary node


class RebuildRefused(InstallerError):
    """The cluster's state says no; nothing was changed. The message names the fix."""


@dataclass(frozen=True)
class Instance:
    name: str
    primary: str
    secondaries: tuple[str, ...]
    status: str
    template: str

    @property
    def running(self) -> bool:
        return self.status in RUNNING


@dataclass(frozen=True)
class Steps:
    before: list[list[str]]         # on the master, before the reinstall
    after: list[list[str]]          # on the master, once the node is joined again


def parse_instances(text: str) -> list[Instance]:
    out = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, primary, secondaries, status, template = fields
        out.append(Instance(name, primary, tuple(s for s in secondaries.split(",") if s),
                            status, template))
    return out


def parse_nodes(text: str) -> dict[str, bool]:
    """{node name: whether it is the master} from NODES' output."""
    rows = [line.strip().split("|") for line in text.splitlines()]
    return {r[0]: r[1] == "Y" for r in rows if len(r) == 3}


def plan(node: str, nodes: dict[str, bool], instances: list[Instance],
         evacuate: bool) -> Steps:
    """What to run for rebuilding `node` (its FQDN); RebuildRefused when it must not be."""
    if node not in nodes:
        raise RebuildRefused(f"{node} is not in the cluster (gnt-node list names "
                             f"{', '.join(sorted(nodes)) or 'no node'}): use `reinstall` "
                             "for a node that has not joined yet")
    if nodes[node]:
        raise RebuildRefused(f"{node} is the cluster's master: make another node master "
                             "first (`gnt-cluster master-failover` on it), then rebuild")
    primaries = [i for i in instances if i.primary == node]
    if primaries and not evacuate:
        raise RebuildRefused(f"{node} is primary for {_names(primaries)}: rebuild with "
                             "--evacuate to move them to their secondaries first, or move "
                             "or stop them yourself")
    stuck = [i for i in primaries if i.template not in MOVABLE]
    if stuck:
        raise RebuildRefused(f"{node} holds the only copy of {_names(stuck)} (disk template "
                             f"{', '.join(sorted({i.template for i in stuck}))}): move them "
                             "with `gnt-instance move` or remove them, then rebuild")
    before = []
    if any(i.running for i in primaries):
        before.append(["gnt-node", "migrate", "-f", node])
    before += [["gnt-instance", "failover", "-f", i.name] for i in primaries if not i.running]
    before.append(["gnt-node", "modify", "-O", "yes", "--auto-promote", node])
    # After the evacuation the node is secondary for what it was primary of.
    touched = [i for i in instances if i.template in MOVABLE and
               (i.primary == node or node in i.secondaries)]
    after = [argv for i in touched for argv in _copies(i)] + [VERIFY]
    return Steps(before, after)


def _copies(i: Instance) -> list[list[str]]:
    """What makes the rebuilt node's DRBD copy of instance `i` again."""
    steps = [["gnt-instance", "activate-disks", i.name],
             ["gnt-instance", "replace-disks", "-s", i.name]]
    return steps + ([] if i.running else [["gnt-instance", "deactivate-disks", i.name]])


def _names(instances: list[Instance]) -> str:
    shown = ", ".join(f"{i.name} ({'running' if i.running else i.status})" for i in instances)
    return f"{len(instances)} instance(s): {shown}"


# -- carrying it out --------------------------------------------------------------------------

@dataclass
class Actions:
    """How `run` reaches the world (the CLI wires the real ones, tests fakes)."""
    on_master: Callable[[list[str], float], str]    # argv, timeout -> stdout; raises
    reinstall: Callable[[], None]
    power_on: Callable[[], str]                     # what was done or what to press
    state: Callable[[], tuple[str, str]]            # the node's (state, message) in serve
    log: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    new_mac: Callable[[], str] | None = None        # --mac: the file and serve take it


TIMEOUTS = {"read": 120, "evacuate": 4 * 3600, "replace": 12 * 3600, "verify": 900}


def run(node: str, act: Actions, *, evacuate: bool, power: bool,
        join_timeout: float = 4 * 3600, poll: float = 15) -> Steps:
    steps = plan(node, parse_nodes(act.on_master(NODES, TIMEOUTS["read"])),
                 parse_instances(act.on_master(INSTANCES, TIMEOUTS["read"])), evacuate)
    for argv in steps.before:
        act.log(f"+ {' '.join(argv)}")
        act.on_master(argv, TIMEOUTS["evacuate"])
    if act.new_mac is not None:
        act.log(act.new_mac())
    act.reinstall()
    act.log(f"{node}: marked for reinstall")
    act.log(act.power_on() if power else f"{node}: power it on (network boot) to reinstall")
    _wait_joined(node, act, join_timeout, poll)
    for argv in steps.after:
        act.log(f"+ {' '.join(argv)}")
        act.log(act.on_master(argv, TIMEOUTS["replace" if "replace-disks" in argv
                                             else "verify"]).strip())
    return steps


def _wait_joined(node: str, act: Actions, timeout: float, poll: float) -> None:
    """Until serve has installed and joined the node again (or says it failed)."""
    waited, last = 0.0, ""
    while True:
        state, message = act.state()
        if state != last:
            act.log(f"{node}: {state}{' - ' + message if message else ''}")
            last = state
        if state == "joined":
            return
        if state == "failed":
            raise InstallerError(f"{node}: the reinstall or join failed ({message}); see "
                                 "`ganeti-installer status`, fix it and `reinstall`; then run "
                                 "gnt-instance activate-disks and replace-disks -s for its "
                                 "instances")
        if waited >= timeout:
            raise InstallerError(f"{node}: not joined after {timeout / 3600:.1f} h (state "
                                 f"{state}); did it network-boot?")
        act.sleep(poll)
        waited += poll
