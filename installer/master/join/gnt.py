"""Ganeti's command lines, built from the cluster model, and what Ganeti prints, understood.

The command lines are the paper's (section 2.10), values from the cluster file:

    gnt-cluster init --master-netdev=br-man --enabled-hypervisors=kvm -N link=br-public
        --vg-name ganeti cluster.project.edu
    gnt-cluster modify -H kvm:kernel_path=,initrd_path=,vnc_bind_address=0.0.0.0
    gnt-node add [-s SECONDARY] [--readd] node2.project.edu
    gnt-cluster verify --error-codes

The messages recognised below are quoted from Ganeti 3.0's sources (Debian bookworm's
ganeti 3.0.2): lib/client/gnt_node.py (AddNode), lib/cmdlib/node.py (LUNodeAdd.CheckPrereq),
lib/cmdlib/cluster/verify.py (_VerifyErrors._ErrorMsgList, _VerifyNode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from installer.cluster.config import Cluster, Node
from installer.master.join.errors import JoinKind

# Every value put on a Ganeti command line; the command also goes through shlex quoting on
# its way over SSH, this check is so that nothing odd reaches Ganeti's own option parser.
SAFE_VALUE = re.compile(r"[A-Za-z0-9/][A-Za-z0-9_.+:=,/-]*")     # never "-..."
DEFAULT_DRBD_HELPER = "/bin/true"       # Ganeti's own default (constants.DEFAULT_DRBD_HELPER)
VERSION_ARGV = ["gnt-cluster", "--version"]
VERIFY_ARGV = ["gnt-cluster", "verify", "--error-codes"]
MEMBERS_ARGV = ["gnt-node", "list", "--no-headers", "-o", "name"]
CLUSTER_NAME_FILE = "/var/lib/ganeti/ssconf_cluster_name"   # exists once init has run


def _value(value: str, what: str) -> str:
    if not isinstance(value, str) or not SAFE_VALUE.fullmatch(value):
        raise ValueError(f"{what} {str(value)[:60]!r} is not a value for a Ganeti command line")
    return value


def init_argv(cluster: Cluster, secondary_ip: str | None = None) -> list[str]:
    """The paper's `gnt-cluster init`, with the cluster file's bridges, hypervisors and VG.

    `secondary_ip` (-s) makes the cluster dual-homed; the cluster file has no storage
    network yet, so callers pass None until it does."""
    argv = ["gnt-cluster", "init",
            "--master-netdev=" + _value(cluster.management.bridge, "bridge"),
            "--enabled-hypervisors=" + ",".join(_value(h, "hypervisor")
                                                for h in cluster.hypervisors),
            "-N", "link=" + _value(cluster.public.bridge, "bridge"),
            "--vg-name", _value(cluster.storage.vg, "volume group")]
    if cluster.drbd.usermode_helper != DEFAULT_DRBD_HELPER:
        # verify compares each node's drbd usermode_helper with this (ENODEDRBDHELPER)
        argv += ["--drbd-usermode-helper", _value(cluster.drbd.usermode_helper, "helper")]
    if secondary_ip is not None:
        argv += ["-s", _value(secondary_ip, "secondary IP")]
    return argv + [_value(cluster.fqdn, "cluster name")]


def modify_argv(cluster: Cluster) -> list[str] | None:
    """The paper's kvm parameters (no kernel of the host for guests, VNC on all addresses)
    and the cluster file's; None when kvm is not enabled (Ganeti refuses parameters of a
    disabled hypervisor)."""
    if "kvm" not in cluster.hypervisors:
        return None
    params = ",".join(f"{name}={value}" for name, value in cluster.kvm_params)
    return ["gnt-cluster", "modify", "-H", "kvm:" + _value(params, "kvm parameters")]


def add_argv(node: Node, readd: bool, secondary_ip: str | None = None) -> list[str]:
    """`gnt-node add` by FQDN. With --readd Ganeti reuses the secondary IP it has, so -s is
    only given for a new node (and only once the cluster file has a storage network)."""
    argv = ["gnt-node", "add"]
    if secondary_ip is not None and not readd:
        argv += ["-s", _value(secondary_ip, "secondary IP")]
    if readd:
        argv.append("--readd")
    return argv + [_value(node.fqdn, "node name")]


# -- gnt-node add's failures --------------------------------------------------------------

_ALREADY = re.compile(r"Node (\S+) already in the cluster|Node (\S+) is already in the "
                      r"configuration")
_NOT_MEMBER = re.compile(r"Node (\S+) not in the cluster|Node (\S+) is not in the "
                         r"configuration")
_VERSION = re.compile(r"Version mismatch master version (\S+), node version (\S+)")
_NO_PING = re.compile(r"Node not reachable by ping|Node secondary ip not reachable|"
                      r"Can't get version information from node")
_MASTER = re.compile(r"is the master, cannot readd|Cannot readd the master node")


def add_failure(output: str, node: Node) -> tuple[JoinKind, str] | None:
    """(kind, message) for a failed `gnt-node add`, from Ganeti's own words; None if unknown."""
    name = node.fqdn
    if _ALREADY.search(output):
        return (JoinKind.ALREADY_MEMBER, f"{name} is already in the cluster: a rebuilt node is "
                "added again with --readd; a node to start over is removed first "
                f"(gnt-node remove {name})")
    if _NOT_MEMBER.search(output):
        return (JoinKind.NOT_MEMBER, f"{name} is not in the cluster, so it cannot be re-added: "
                "it is added as a new node (without --readd)")
    m = _VERSION.search(output)
    if m:
        return (JoinKind.VERSION, f"Ganeti on {name} speaks protocol {m[2]}, the master "
                f"{m[1]}: install the master's Ganeti version on the node")
    if _MASTER.search(output):
        return (JoinKind.FAILED, f"{name} is the master: the master is never re-added")
    if _NO_PING.search(output):
        return (JoinKind.UNREACHABLE, f"the master cannot reach Ganeti's node daemon on {name} "
                "(TCP port 1811): check the node's management address and firewall")
    return None


# -- versions -----------------------------------------------------------------------------

_VERSION_LINE = re.compile(r"gnt-cluster \(ganeti [^)]*\) (\d+)\.(\d+)(\S*)")


def release(version_output: str) -> tuple[int, int, str] | None:
    """(major, minor, full) from `gnt-cluster --version` ("gnt-cluster (ganeti v3.0.2)
    3.0.2", lib/cli.py GenericMain); None if Ganeti did not answer that."""
    m = _VERSION_LINE.search(version_output)
    if m is None:
        return None
    return int(m[1]), int(m[2]), f"{m[1]}.{m[2]}{m[3]}"


def compatible(master: tuple[int, int, str], node: tuple[int, int, str]) -> bool:
    """Ganeti's internode protocol is major*1000000 + minor*10000 (PROTOCOL_VERSION): the
    same major.minor join; a patch release apart is only a verify warning."""
    return master[:2] == node[:2]


# -- gnt-cluster verify -------------------------------------------------------------------

# `--error-codes`: "  - ERROR:ENODEHV:node:node2.example.org:hypervisor kvm verify failure"
_CODED = re.compile(r"^\s*- (?P<severity>ERROR|WARNING):(?P<code>[A-Z0-9_]+):"
                    r"(?P<domain>[a-z]+):(?P<name>[^:]*):(?P<message>.*)$")
# without: "  - ERROR: node node2.example.org: hypervisor kvm verify failure"
_PLAIN = re.compile(r"^\s*- (?P<severity>ERROR|WARNING): (?P<domain>[a-z]+) ?"
                    r"(?P<name>\S*): (?P<message>.*)$")
# Each message arrives as a job log entry the client prints after time.ctime():
# "Thu Nov  2 10:00:00 2023 " (lib/cli.py StdioJobPollReportCb.ReportLogMessage).
_CTIME = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} ")


@dataclass(frozen=True)
class Finding:
    severity: str       # "ERROR" or "WARNING"
    code: str           # "ENODEHV"; "" without --error-codes
    domain: str         # "cluster", "group", "node", "instance"
    name: str           # the object's name ("" for the cluster)
    message: str

    def __str__(self) -> str:
        code = f" {self.code}" if self.code else ""
        return f"{self.severity}{code} {self.domain} {self.name}: {self.message}".replace(
            "  ", " ")


@dataclass
class VerifyReport:
    node: str                                        # the FQDN the report was read for
    errors: list[Finding] = field(default_factory=list)      # naming the node
    warnings: list[Finding] = field(default_factory=list)    # naming the node
    others: list[Finding] = field(default_factory=list)      # about anything else

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_verify(text: str, node_fqdn: str) -> VerifyReport:
    """Sort `gnt-cluster verify` findings into those naming the node and the rest.

    A finding names the node when it is about the node (domain node, its FQDN or short
    name) or its message names the node's FQDN (another node's "ssh communication with
    node 'node2.example.org': ..." is about the new node too)."""
    report = VerifyReport(node_fqdn)
    short = node_fqdn.split(".")[0]
    mention = re.compile(r"(?<![\w.-])" + re.escape(node_fqdn) + r"(?![\w-]|\.\w)", re.I)
    for raw in text.splitlines():
        finding = _finding(_CTIME.sub("", raw.strip("\r")))
        if finding is None:
            continue
        about = (finding.domain == "node" and finding.name.lower() in
                 (node_fqdn.lower(), short.lower())) or mention.search(finding.message)
        if not about:
            report.others.append(finding)
        elif finding.severity == "ERROR":
            report.errors.append(finding)
        else:
            report.warnings.append(finding)
    return report


# A node added again with --readd (rebuilt: a blank disk) no longer holds its DRBD copies of
# the instances it is secondary for, and verify says so in these words (Ganeti 3.0.2,
# lib/cmdlib/cluster/verify.py: _VerifyInstance, _VerifyNodeDrbd). `gnt-instance
# replace-disks -s`, the rebuild's next step, makes them again: they do not fail the join.
# Once ganeti-watcher has activated the instance's disks, the node's DRBD runs without its
# volumes: "disk/0 on node2 is degraded; local disk state is 'faulty'".
_LOST_COPIES = [
    ("EINSTANCEMISSINGDISK", re.compile(r"^volume \S+ missing on node (?P<node>\S+)$")),
    ("EINSTANCEFAULTYDISK", re.compile(r"^couldn't retrieve status for disk/\d+ on "
                                       r"(?P<node>\S+): ")),
    ("EINSTANCEFAULTYDISK", re.compile(r"^disk/\d+ on (?P<node>\S+) is degraded; local disk "
                                       r"state is '(faulty|unknown)'$")),
    ("ENODEDRBD", re.compile(r"^drbd minor \d+ of disk \S+ \(attached in instance '[^']+'\) "
                             r"is not active$")),
]


def lost_copy(finding: Finding, node_fqdn: str) -> bool:
    """Whether an error is only the rebuilt node's own missing instance copy."""
    for code, pattern in _LOST_COPIES:
        m = pattern.search(finding.message) if finding.code == code else None
        if m:
            where = m.groupdict().get("node") or finding.name
            return where.lower() == node_fqdn.lower()
    return False


def readded(report: VerifyReport) -> VerifyReport:
    """The report of a node joined again: its missing instance copies count as warnings."""
    lost = [f for f in report.errors if lost_copy(f, report.node)]
    return VerifyReport(report.node, [f for f in report.errors if f not in lost],
                        report.warnings + lost, report.others)


def _finding(line: str) -> Finding | None:
    m = _CODED.match(line)
    if m:
        name = "" if m["name"] == "None" else m["name"]      # the cluster's name is None
        return Finding(m["severity"], m["code"], m["domain"], name, m["message"].strip())
    m = _PLAIN.match(line)
    if m:
        return Finding(m["severity"], "", m["domain"], m["name"], m["message"].strip())
    return None
