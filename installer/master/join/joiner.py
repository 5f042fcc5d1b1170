"""Bootstrap the cluster on the first node and join every other node, from the serving host.

Shaped like a Ganeti logical unit: each prerequisite is checked and fails on its own with a
clear message before anything changes (reachable with its reported key, Ganeti installed at
the master's version, its name resolving to its address on the master), then the change runs
(`gnt-node add` under pexpect), then `gnt-cluster verify` decides. Everything runs on the
master over SSH (installer.master.join.remote) with the nodes' reported keys pinned
(installer.cluster.sshkeys).

    joiner = Joiner(cluster, state_dir, log=lambda node, line: ...)
    joiner.bootstrap(first, host_keys)      # once; again is harmless
    joiner.join(node, host_keys, readd)     # -> JoinResult, or raises JoinError(kind, ...)
    node.fqdn in joiner.members()           # readd: the cluster has the node already

Ganeti's side of the trust (from its 3.0 sources): `gnt-cluster init` makes root's key pair
on the master (/root/.ssh/id_rsa, constants.SSH_DEFAULT_KEY_TYPE) and `gnt-node add` logs in
to the new node with it, through ssh options of its own (lib/ssh.py _BuildSshOptions:
GlobalKnownHostsFile=/var/lib/ganeti/known_hosts, UserKnownHostsFile=/dev/null,
StrictHostKeyChecking=ask). That known_hosts holds only the cluster's key under the cluster's
name and is rewritten and copied to every node by Ganeti (and verify compares the copies), so
the node's key is not pinned there: the pty driver answers ssh's question for the node's
reported key and refuses any other. Before the add, the master's root key is appended to
the node's authorized_keys, so no password is asked.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from installer.cluster import sshkeys
from installer.cluster.config import Cluster, Node
from installer.cluster.sshkeys import PublicKey
from installer.master import statedir
from installer.master.join import gnt, prompts
from installer.master.join.errors import JoinError, JoinKind
from installer.master.join.remote import Remote

__all__ = ["Joiner", "JoinResult", "JoinError", "JoinKind"]

# Root's public keys on the master: Ganeti 3.0 makes id_rsa (2.x made id_dsa).
MASTER_KEYS = ["sh", "-c", "cat /root/.ssh/id_*.pub"]
# Appends the keys on stdin to root's authorized_keys unless a line has the key already
# (compared by type and blob, as Ganeti's ssh.AddAuthorizedKeys does). No value is in the
# script: the keys come on stdin, validated.
AUTHORIZE = r"""set -e
umask 077
mkdir -p /root/.ssh
f=/root/.ssh/authorized_keys
touch "$f"
while read -r t b rest; do
  [ -n "$b" ] || continue
  if ! awk -v t="$t" -v b="$b" '{for (i = 1; i < NF; i++) if ($i == t && $(i+1) == b) f = 1}
      END {exit !f}' "$f"; then
    if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f"; fi
    printf '%s\n' "$t $b${rest:+ $rest}" >> "$f"
  fi
done
"""
TIMEOUTS = {"short": 60, "init": 600, "modify": 300, "add": 900, "verify": 900}
# Ganeti 3's WConfd copies config.data to a new master candidate asynchronously: just after
# `gnt-node add` on a busy master, verify can still find the copies differing. Only that
# settles by itself; verify is asked again, SETTLE_TRIES times in all, before it counts.
SETTLING = frozenset({"ECLUSTERFILECHECK"})
SETTLE_TRIES = 4


def management_address(node: Node) -> str:
    """How serve reaches a node by default: its management address (no DNS needed)."""
    return node.ip


@dataclass
class JoinResult:
    node: str                       # the node's name
    readd: bool
    verify: gnt.VerifyReport        # no errors about the node; its warnings, others' findings
    output: str = ""                # what gnt-node add (or init) printed


@dataclass
class Joiner:
    """Joins nodes of `cluster` from the serving host; `log(node_name, line)` is the node's
    event log. `port`, `ssh` and `address` say how to reach a node (default: port 22, the
    `ssh` client, the node's management address)."""
    cluster: Cluster
    state_dir: str
    log: Callable[[str, str], None]
    port: int = 22
    ssh: tuple[str, ...] = ("ssh",)
    address: Callable[[Node], str] = management_address
    timeouts: dict = field(default_factory=lambda: dict(TIMEOUTS))
    settle_pause: float = 20.0      # seconds between verifies while files settle
    # What a node gets once Ganeti has it, before the verify that looks for it there: serve's
    # ISOs (verify checks every instance's cdrom_image_path on every node).
    before_verify: Callable[[Node], None] | None = None

    def __post_init__(self):
        self.timeouts = dict(TIMEOUTS, **self.timeouts)     # seconds, per kind of command
        self.known_hosts = sshkeys.known_hosts_path(self.state_dir)
        self.remote = Remote(statedir.key_path(self.state_dir), self.known_hosts,
                             port=self.port, ssh=tuple(self.ssh))

    # -- trust ----------------------------------------------------------------------------

    def pin(self, node: Node, host_keys: Mapping[str, str]) -> None:
        """Make the node's reported keys the only ones serve accepts for its names (a
        rebuilt node's old keys go)."""
        self._pin(node, self._reported(node, host_keys))

    def _pin(self, node: Node, keys: list[PublicKey]) -> None:
        patterns = sshkeys.host_patterns([node.fqdn, node.name, self.address(node)], self.port)
        sshkeys.replace(self.known_hosts, patterns, keys)
        self._log(node, "pinned its host keys: " + ", ".join(k.describe() for k in keys))

    def pinned(self, node: Node) -> list[PublicKey]:
        """The keys serve's known_hosts holds for the node's address."""
        pattern = sshkeys.host_patterns([self.address(node)], self.port)[0]
        return sshkeys.keys_for(self.known_hosts, pattern)

    def _reported(self, node: Node, host_keys: Mapping[str, str]) -> list[PublicKey]:
        try:
            return sshkeys.reported_keys(host_keys)
        except ValueError as e:
            raise JoinError(JoinKind.HOST_KEY, f"{node.name}'s reported host keys: {e}") from None

    # -- the first node -------------------------------------------------------------------

    def bootstrap(self, first: Node, host_keys: Mapping[str, str]) -> JoinResult:
        """`gnt-cluster init` on the first node (once) and the paper's kvm parameters."""
        if first.name != self.cluster.master:
            raise JoinError(JoinKind.FAILED, f"{first.name} is not the master the cluster "
                            f"file names ({self.cluster.master}): only the master is "
                            "bootstrapped")
        keys = self._reported(first, host_keys)
        self._pin(first, keys)
        self._version(first)
        output = ""
        if self._initialised(first):
            self._log(first, f"the cluster {self.cluster.fqdn} exists already: no init")
        else:
            output = self._ganeti(first, gnt.init_argv(self.cluster), keys, "init")
        modify = gnt.modify_argv(self.cluster)
        if modify:
            self._ganeti(first, modify, keys, "modify")
        self._before_verify(first)
        return JoinResult(first.name, False, self._verify(first), output)

    def _initialised(self, first: Node) -> bool:
        done = self.remote.run(self.address(first), ["cat", gnt.CLUSTER_NAME_FILE],
                               check=False, timeout=self.timeouts["short"])
        name = done.stdout.strip()
        if done.returncode != 0 or not name:
            return False
        if name != self.cluster.fqdn:
            raise JoinError(JoinKind.FAILED, f"{first.name} is the master of another cluster, "
                            f"{name}, not {self.cluster.fqdn}: destroy it there "
                            "(gnt-cluster destroy --yes-do-it) or reinstall the node")
        return True

    # -- every other node -----------------------------------------------------------------

    def members(self) -> set[str]:
        """The FQDNs of the cluster's nodes as the master knows them: a node among them
        is joined again with readd=True (it was rebuilt)."""
        master = self.cluster.node(self.cluster.master)
        done = self.remote.run(self.address(master), gnt.MEMBERS_ARGV,
                               timeout=self.timeouts["short"])
        return {line.strip() for line in done.stdout.splitlines() if line.strip()}

    def join(self, node: Node, host_keys: Mapping[str, str], readd: bool) -> JoinResult:
        """`gnt-node add` on the master for `node`, then `gnt-cluster verify`."""
        master = self.cluster.node(self.cluster.master)
        if node.name == master.name:
            raise JoinError(JoinKind.FAILED, f"{node.name} is the master: it is bootstrapped, "
                            "not joined")
        keys = self._reported(node, host_keys)
        self._pin(node, keys)
        master_keys = self.pinned(master)
        if not master_keys:
            raise JoinError(JoinKind.HOST_KEY, f"no host key is pinned for the master "
                            f"{master.name}: it joins nodes only after its own bootstrap")
        self._prerequisites(node, master)
        self._authorize_master(node, master)
        # After prepare-node-join the node shows the cluster's (the master's) rsa/ecdsa
        # keys: those are as trusted as its own for the rest of the add.
        trusted = keys + sshkeys.cluster_keys(master_keys)
        result = self.remote.converse(
            self.address(master), gnt.add_argv(node, readd), trusted=trusted,
            log=lambda line: self._log(node, line), timeout=self.timeouts["add"],
            confirm=readd)
        if result.status != 0:
            raise self._add_failed(node, result)
        self._pin(node, trusted)
        self._before_verify(node)
        return JoinResult(node.name, readd, self._verify(node, readd), result.output)

    def _before_verify(self, node: Node) -> None:
        if self.before_verify is not None:
            self.before_verify(node)

    def _prerequisites(self, node: Node, master: Node) -> None:
        """Each as its own failure, before anything changes."""
        node_version = self._version(node)
        master_version = self._version(master)
        if not gnt.compatible(master_version, node_version):
            raise JoinError(JoinKind.VERSION, f"{node.name} has Ganeti {node_version[2]}, the "
                            f"master {master_version[2]}: they cannot talk (same major.minor "
                            "needed); install the master's version on the node")
        self._resolves(node, master)

    def _version(self, node: Node) -> tuple[int, int, str]:
        done = self.remote.run(self.address(node), gnt.VERSION_ARGV, check=False,
                               timeout=self.timeouts["short"])
        version = gnt.release(done.stdout)
        if version is None:
            raise JoinError(JoinKind.VERSION, f"Ganeti is not installed on {node.name} "
                            f"(`gnt-cluster --version` said: "
                            f"{prompts.tail(done.stderr + done.stdout, 3) or 'nothing'})")
        self._log(node, f"Ganeti {version[2]} is installed")
        return version

    def _resolves(self, node: Node, master: Node) -> None:
        """Ganeti adds a node by name: the master must resolve it to its management address
        (not to 127.0.1.1 or an old address), or the add fails halfway."""
        done = self.remote.run(self.address(master), ["getent", "ahostsv4", node.fqdn],
                               check=False, timeout=self.timeouts["short"])
        found = done.stdout.split()[:1]
        if found != [node.ip]:
            got = found[0] if found else "nothing"
            raise JoinError(JoinKind.FAILED, f"{node.fqdn} resolves to {got} on the master "
                            f"{master.name}, not to its management address {node.ip}: fix "
                            "/etc/hosts or DNS there")

    def _authorize_master(self, node: Node, master: Node) -> None:
        """Put the master's root key(s) in the node's authorized_keys, once."""
        done = self.remote.run(self.address(master), MASTER_KEYS, check=False,
                               timeout=self.timeouts["short"])
        keys = []
        for line in done.stdout.splitlines():
            try:
                keys.append(sshkeys.parse(line))
            except ValueError:
                continue
        if not keys:
            raise JoinError(JoinKind.FAILED, f"the master {master.name} has no root SSH key "
                            "(/root/.ssh/id_*.pub), which gnt-cluster init makes: was the "
                            "cluster initialised there?")
        lines = [f"{k.line} {k.comment}".rstrip() for k in keys]
        self.remote.run(self.address(node), ["sh", "-c", AUTHORIZE],
                        input="".join(line + "\n" for line in lines),
                        timeout=self.timeouts["short"])
        self._log(node, "the master's root key is in its authorized_keys: "
                  + ", ".join(k.describe() for k in keys))

    def _add_failed(self, node: Node, result: prompts.Result) -> JoinError:
        what = f"gnt-node add {node.fqdn}"
        failure = gnt.add_failure(result.output, node) or prompts.ssh_failure(result.output)
        if failure:
            return JoinError(failure[0], f"{what}: {failure[1]}", output=result.output)
        return JoinError(JoinKind.FAILED, f"{what} exited {result.status}:\n"
                         f"{prompts.tail(result.output)}", output=result.output)

    # -- Ganeti commands ------------------------------------------------------------------

    def _ganeti(self, node: Node, argv: list[str], trusted, step: str) -> str:
        result = self.remote.converse(
            self.address(node), argv, trusted=trusted, log=lambda line: self._log(node, line),
            timeout=self.timeouts[step])
        if result.status != 0:
            failure = prompts.ssh_failure(result.output)
            kind, why = failure if failure else (JoinKind.FAILED, prompts.tail(result.output))
            raise JoinError(kind, f"`{shlex.join(argv)}` on {node.name} failed: {why}",
                            output=result.output)
        return result.output

    def _verify(self, node: Node, readd: bool = False) -> gnt.VerifyReport:
        """`gnt-cluster verify` on the master; the node is fine only if no ERROR names it
        (readd: but for the instance copies it lost, which replace-disks makes again).
        Errors that are only Ganeti's file copies still settling are verified again."""
        for _ in range(SETTLE_TRIES - 1):
            try:
                return self._verify_once(node, readd)
            except JoinError as e:
                report = e.details
                if report is None or not report.errors or \
                        {f.code for f in report.errors} - SETTLING:
                    raise
                self._log(node, f"verify: {', '.join(sorted(SETTLING))} may be Ganeti still "
                          f"copying its files to {node.name}; verifying again in "
                          f"{self.settle_pause:g} s")
                time.sleep(self.settle_pause)
        return self._verify_once(node, readd)

    def _verify_once(self, node: Node, readd: bool = False) -> gnt.VerifyReport:
        master = self.cluster.node(self.cluster.master)
        result = self.remote.converse(
            self.address(master), gnt.VERIFY_ARGV, trusted=self.pinned(master),
            log=lambda line: self._log(node, line), timeout=self.timeouts["verify"])
        report = gnt.parse_verify(result.output, node.fqdn)
        if readd:
            warned = len(report.warnings)
            report = gnt.readded(report)
            lost = len(report.warnings) - warned
            if lost:
                self._log(node, f"verify: {lost} finding(s) are the instance copies "
                          f"{node.name} lost with its disk; gnt-instance activate-disks and "
                          "replace-disks -s make them again (rebuild runs them next; after "
                          "a reinstall, run them yourself)")
        found = report.errors or report.warnings or report.others
        if result.status != 0 and not found:
            raise JoinError(JoinKind.VERIFY, f"gnt-cluster verify did not run on {master.name}:\n"
                            f"{prompts.tail(result.output)}", output=result.output,
                            details=report)
        if report.errors:
            raise JoinError(JoinKind.VERIFY, f"gnt-cluster verify reports errors about {node.fqdn}:"
                            "\n" + "\n".join(str(f) for f in report.errors),
                            output=result.output, details=report)
        return report

    def _log(self, node: Node, line: str) -> None:
        self.log(node.name, line)
