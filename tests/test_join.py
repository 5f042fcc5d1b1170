"""The join: Ganeti command lines against the paper, verify output from Ganeti's sources, and
the SSH and pty driving against a real sshd.

The sshd runs as root on loopback addresses (127.0.0.2-4 play node1-3) at a free high port,
in a mount namespace the test makes: /root, /var/lib/ganeti, /etc/hosts and /usr/local/sbin
are the test's own directories there, so nothing of this machine's root account is touched,
and `gnt-cluster`/`gnt-node` are fakes that print Ganeti's texts (the real Ganeti is run by
the VM tests). The fake `gnt-node add` logs in to the node with real ssh and Ganeti's own
options (lib/ssh.py _BuildSshOptions), so its host-key questions are ssh's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
import subprocess
import textwrap
import time

import pytest

from installer.cluster import sshkeys
from installer.master import statedir
from installer.master.join import gnt, prompts
from installer.master.join.errors import JoinError, JoinKind
from installer.master.join.joiner import Joiner
from installer.master.join.remote import Remote
from installer.master.nodes import NodeState
from tests.conftest import cluster_from, example_data, load_example

NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3", "node3": "127.0.0.4"}


# -- command lines --------------------------------------------------------------------------

# Section 2.10 of the paper, with its line breaks ("--enabled-\nhypervisors") joined.
PAPER_INIT = ("gnt-cluster init --master-netdev=br-man --enabled-hypervisors=kvm "
              "-N link=br-public --vg-name ganeti cluster.project.edu")
PAPER_MODIFY = "gnt-cluster modify -H kvm:kernel_path=,initrd_path=,vnc_bind_address=0.0.0.0"
PAPER_ADD = "gnt-node add node2.project.edu"


@pytest.mark.parametrize("example", ["cluster.toml", "paper-wheezy.toml"])
def test_command_lines_are_the_papers(example):
    cluster = load_example(example)
    assert shlex.join(gnt.init_argv(cluster)) == PAPER_INIT
    assert shlex.join(gnt.modify_argv(cluster)) == PAPER_MODIFY
    assert shlex.join(gnt.add_argv(cluster.node("node2"), readd=False)) == PAPER_ADD
    assert gnt.add_argv(cluster.node("node2"), readd=True) == \
        ["gnt-node", "add", "--readd", "node2.project.edu"]


def test_kvm_parameters_of_the_cluster_file_go_over_the_papers():
    data = example_data()
    data["hypervisor"] = {"kvm": {"kvm_path": "/usr/bin/qemu-system-x86_64",
                                  "vnc_bind_address": "192.168.20.222"}}
    assert gnt.modify_argv(cluster_from(data)) == [
        "gnt-cluster", "modify", "-H", "kvm:kernel_path=,initrd_path=,"
        "vnc_bind_address=192.168.20.222,kvm_path=/usr/bin/qemu-system-x86_64"]


def test_command_lines_follow_the_cluster_file():
    base = load_example()
    cluster = dataclasses.replace(
        base, hypervisors=("fake",),
        management=dataclasses.replace(base.management, bridge="br-mgmt"),
        drbd=dataclasses.replace(base.drbd, usermode_helper="/usr/local/bin/drbd-helper"))
    assert gnt.init_argv(cluster, secondary_ip="10.0.0.1") == [
        "gnt-cluster", "init", "--master-netdev=br-mgmt", "--enabled-hypervisors=fake",
        "-N", "link=br-public", "--vg-name", "ganeti",
        "--drbd-usermode-helper", "/usr/local/bin/drbd-helper", "-s", "10.0.0.1",
        "cluster.project.edu"]
    assert gnt.modify_argv(cluster) is None         # no kvm, no kvm parameters
    node = cluster.node("node3")
    assert gnt.add_argv(node, False, secondary_ip="10.0.0.3") == \
        ["gnt-node", "add", "-s", "10.0.0.3", "node3.project.edu"]
    assert gnt.add_argv(node, True, secondary_ip="10.0.0.3") == \
        ["gnt-node", "add", "--readd", "node3.project.edu"]       # Ganeti keeps its sip
    with pytest.raises(ValueError):
        gnt.add_argv(dataclasses.replace(node, fqdn="node3;reboot"), False)


def test_versions():
    assert gnt.release("gnt-cluster (ganeti v3.0.2) 3.0.2\n") == (3, 0, "3.0.2")
    assert gnt.release("bash: gnt-cluster: command not found") is None
    assert gnt.compatible((3, 0, "3.0.2"), (3, 0, "3.0.1"))
    assert not gnt.compatible((3, 0, "3.0.2"), (2, 16, "2.16.2"))


# -- gnt-cluster verify ---------------------------------------------------------------------

# Composed from Ganeti 3.0.2's own strings: the step lines are LUClusterVerifyConfig/Group's
# feedback_fn calls and the findings _ErrorMsgList's two formats (lib/cmdlib/cluster/
# verify.py), the texts _VerifyNode ("incompatible protocol versions", "software version
# mismatch"), _VerifyNodeNetwork ("ssh communication with node") and the kvm hypervisor's
# Verify ("The KVM binary ('%s') does not exist", lib/hypervisor/hv_kvm/__init__.py); every
# log line is printed after time.ctime() (lib/cli.py), as in the paper's figure 3.2.
T = "Tue Nov 17 17:20:51 2015"
VERIFY_CODED = "\n".join([
    "Submitted jobs 23, 24",
    "Waiting for job 23 ...",
    f"{T} * Verifying cluster config",
    f"{T} * Verifying cluster certificate files",
    f"{T} * Verifying hypervisor parameters",
    f"{T} * Verifying all nodes belong to an existing group",
    "Waiting for job 24 ...",
    f"{T} * Verifying group 'default'",
    f"{T} * Gathering data (3 nodes)",
    f"{T} * Gathering disk information (3 nodes)",
    f"{T} * Verifying configuration file consistency",
    f"{T} * Verifying node status",
    f"{T}   - ERROR:ENODEHV:node:node2.project.edu:hypervisor kvm verify failure: "
    "'The KVM binary ('/usr/bin/kvm') does not exist'",
    f"{T}   - WARNING:ENODEVERSION:node:node2.project.edu:software version mismatch: "
    "master 3.0.2, node 3.0.1",
    f"{T}   - ERROR:ENODESSH:node:node1.project.edu:ssh communication with node "
    "'node2.project.edu': ssh problem: Host key verification failed.",
    f"{T}   - ERROR:ENODENET:node:node3.project.edu:cannot reach the master IP",
    f"{T}   - ERROR:ECLUSTERCFG:cluster:None:the following nodes (and their instances) "
    "belong to a non existing group: node22.project.edu ()",
    f"{T} * Verifying instance status",
    f"{T} * Verifying orphan volumes",
    f"{T} * Verifying N+1 Memory redundancy",
    f"{T} * Other Notes",
    f"{T} * Hooks Results",
]) + "\n"


def test_parse_verify_sorts_findings_by_the_node_they_name():
    report = gnt.parse_verify(VERIFY_CODED, "node2.project.edu")
    assert [(f.code, f.name) for f in report.errors] == [
        ("ENODEHV", "node2.project.edu"), ("ENODESSH", "node1.project.edu")]
    assert report.errors[0].message == \
        "hypervisor kvm verify failure: 'The KVM binary ('/usr/bin/kvm') does not exist'"
    assert [f.code for f in report.warnings] == ["ENODEVERSION"]
    assert [(f.code, f.domain, f.name) for f in report.others] == [
        ("ENODENET", "node", "node3.project.edu"), ("ECLUSTERCFG", "cluster", "")]
    assert not report.ok
    # node22 in a message is not node2, node3's report has its own error only
    assert [f.code for f in gnt.parse_verify(VERIFY_CODED, "node3.project.edu").errors] == \
        ["ENODENET"]


def test_parse_verify_reads_the_format_without_error_codes_too():
    text = "\n".join([
        f"{T} * Verifying node status",
        f"{T}   - ERROR: node node2.project.edu: incompatible protocol versions: "
        "master 3000000, node 2160000",
        f"{T}   - WARNING: node node2: missing bridges: br-public",
        f"{T}   - ERROR: cluster : the following instances have a non-existing "
        "primary-node: web1"])
    report = gnt.parse_verify(text, "node2.project.edu")
    assert [f.message for f in report.errors] == \
        ["incompatible protocol versions: master 3000000, node 2160000"]
    assert [f.message for f in report.warnings] == ["missing bridges: br-public"]
    assert [(f.domain, f.name) for f in report.others] == [("cluster", "")]


def test_parse_verify_of_a_clean_cluster_is_ok():
    clean = "\n".join(ln for ln in VERIFY_CODED.splitlines() if " - " not in ln)
    report = gnt.parse_verify(clean, "node2.project.edu")
    assert report.ok and not report.warnings and not report.others


# After `gnt-node add --readd` of node2, rebuilt on a blank disk: testvm (primary node1) lost
# its DRBD copy there. Ganeti 3.0.2's texts: _VerifyInstance and _VerifyNodeDrbd.
READDED = "\n".join([
    f"{T} * Verifying node status",
    f"{T}   - ERROR:ENODEDRBD:node:node2.project.edu:drbd minor 0 of disk "
    "5b0c2d3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e (attached in instance 'testvm.project.edu') is not "
    "active",
    f"{T} * Verifying instance status",
    f"{T}   - ERROR:EINSTANCEMISSINGDISK:instance:testvm.project.edu:volume "
    "ganeti/8e1f0a2b-3c4d.disk0_data missing on node node2.project.edu",
    f"{T}   - ERROR:EINSTANCEMISSINGDISK:instance:testvm.project.edu:volume "
    "ganeti/8e1f0a2b-3c4d.disk0_meta missing on node node2.project.edu",
    f"{T}   - ERROR:EINSTANCEFAULTYDISK:instance:testvm.project.edu:couldn't retrieve "
    "status for disk/0 on node2.project.edu: Can't find device <DRBD8(hosts=...)>",
    f"{T}   - WARNING:EINSTANCEFAULTYDISK:instance:testvm.project.edu:disk/0 on "
    "node1.project.edu is degraded; local disk state is 'ok'",
]) + "\n"
# The same once ganeti-watcher has activated the disks (node2's DRBD up without its volumes)
READDED_ACTIVATED = (f"{T}   - ERROR:EINSTANCEFAULTYDISK:instance:testvm.project.edu:disk/0 "
                     "on node2.project.edu is degraded; local disk state is 'faulty'\n")


def test_a_readded_nodes_lost_instance_copies_are_warnings_and_nothing_else_is():
    report = gnt.parse_verify(READDED, "node2.project.edu")
    assert [f.code for f in report.errors] == ["ENODEDRBD", "EINSTANCEMISSINGDISK",
                                                "EINSTANCEMISSINGDISK", "EINSTANCEFAULTYDISK"]
    readded = gnt.readded(report)
    assert readded.ok and len(readded.warnings) == 4
    assert [f.code for f in readded.others] == ["EINSTANCEFAULTYDISK"]     # node1's
    # Anything else naming the node still fails it, and so do those texts under other codes
    other = gnt.parse_verify(VERIFY_CODED + READDED, "node2.project.edu")
    assert [f.code for f in gnt.readded(other).errors] == ["ENODEHV", "ENODESSH"]
    unallocated = f"{T}   - ERROR:ENODEDRBD:node:node2.project.edu:unallocated drbd minor 3 " \
        "is in use\n"
    assert not gnt.readded(gnt.parse_verify(unallocated, "node2.project.edu")).ok
    assert gnt.readded(gnt.parse_verify(READDED_ACTIVATED, "node2.project.edu")).ok
    # ... the rebuilt node's own copies only: node1's faulty disk is no copy node2 lost
    faulty = gnt.Finding("ERROR", "EINSTANCEFAULTYDISK", "instance", "testvm.project.edu",
                         "disk/0 on node1.project.edu is degraded; local disk state is 'faulty'")
    assert gnt.lost_copy(faulty, "node1.project.edu")
    assert not gnt.lost_copy(faulty, "node2.project.edu")


def test_add_failures_in_ganetis_words():
    node = load_example().node("node2")
    cases = {   # lib/client/gnt_node.py AddNode, lib/cmdlib/node.py LUNodeAdd.CheckPrereq
        "Node node2.project.edu already in the cluster (as node2.project.edu) - please retry "
        "with '--readd'": JoinKind.ALREADY_MEMBER,
        "Node node2.project.edu not in the cluster - please retry without '--readd'":
            JoinKind.NOT_MEMBER,
        "Failure: prerequisites not met for this operation:\nerror type: environment_error, "
        "error details:\nVersion mismatch master version 3000000, node version 2160000":
            JoinKind.VERSION,
        "Failure: prerequisites not met for this operation:\nNode not reachable by ping":
            JoinKind.UNREACHABLE,
    }
    for output, kind in cases.items():
        assert gnt.add_failure(output, node)[0] is kind, output
    assert gnt.add_failure("Failure: something new", node) is None
    assert "--readd" in gnt.add_failure(next(iter(cases)), node)[1]


def test_ssh_failures_in_ssh_words():
    cases = {
        "ssh: connect to host 127.0.0.2 port 1: Connection refused": JoinKind.UNREACHABLE,
        "ssh: connect to host 10.0.0.9 port 22: No route to host": JoinKind.UNREACHABLE,
        "ssh: Could not resolve hostname node9.project.edu: Name or service not known":
            JoinKind.UNREACHABLE,
        "No ED25519 host key is known for [127.0.0.2]:2222 and you have requested strict "
        "checking.\nHost key verification failed.": JoinKind.HOST_KEY,
        "root@127.0.0.2: Permission denied (publickey,password).": JoinKind.PASSWORD,
    }
    for output, kind in cases.items():
        assert prompts.ssh_failure(output)[0] is kind, output
    assert prompts.ssh_failure("all fine") is None


def test_a_join_error_has_a_kind_of_the_enum():
    """The kind's value begins the failed node's message: the strings stay what they were."""
    assert [k.value for k in JoinKind] == [
        "unreachable", "password", "host-key", "version", "already-member", "not-member",
        "verify", "timeout", "failed"]
    with pytest.raises(TypeError, match="JoinError kind 'host-key' is not a JoinKind"):
        JoinError("host-key", "the key differs")
    e = JoinError(JoinKind.HOST_KEY, "the key differs")
    assert f"{e.kind}: {e.message}" == "host-key: the key differs"


# -- a real sshd on loopback ----------------------------------------------------------------

FAKE_GNT_CLUSTER = r'''#!/usr/bin/python3
"""gnt-cluster as far as the join uses it (texts from Ganeti 3.0.2)."""
import json, os, subprocess, sys, time
G = "/var/lib/ganeti"
scenario = json.load(open(G + "/scenario.json"))
with open(G + "/calls.log", "a") as f:
    f.write(json.dumps(["gnt-cluster"] + sys.argv[1:]) + "\n")
args = sys.argv[1:]
here = (os.environ.get("SSH_CONNECTION", "").split() + ["", "", ""])[2]
if args == ["--version"]:
    v = scenario["versions"].get(here, "3.0.2")
    print("gnt-cluster (ganeti v%s) %s" % (v, v))
elif args[:1] == ["init"]:
    time.sleep(scenario.get("init_seconds", 0))
    # Ganeti's InitSSHSetup: root's key pair, and the master trusts its own key
    if not os.path.exists("/root/.ssh/id_rsa"):
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C",
                        "root@node1", "-f", "/root/.ssh/id_rsa"], check=True)
    with open("/root/.ssh/authorized_keys", "a") as f:
        f.write(open("/root/.ssh/id_rsa.pub").read())
    open(G + "/ssconf_cluster_name", "w").write(args[-1] + "\n")
elif args[:1] == ["modify"]:
    pass
elif args[:1] == ["verify"]:
    # "verifies": what successive verifies print (the last one repeats); else "verify"
    texts = scenario.get("verifies") or [scenario.get("verify", "")]
    n = int(open(G + "/verify.n").read()) if os.path.exists(G + "/verify.n") else 0
    open(G + "/verify.n", "w").write(str(n + 1))
    text = texts[min(n, len(texts) - 1)]
    sys.stdout.write(text)
    sys.exit(1 if "- ERROR" in text else 0)
else:
    sys.exit(2)
'''

FAKE_GNT_NODE = r'''#!/usr/bin/python3
"""gnt-node add: Ganeti 3.0.2's messages, and its two logins to the node with its own ssh
options (prepare-node-join, then reading the node's new root key)."""
import json, subprocess, sys, time
G = "/var/lib/ganeti"
scenario = json.load(open(G + "/scenario.json"))
with open(G + "/calls.log", "a") as f:
    f.write(json.dumps(["gnt-node"] + sys.argv[1:]) + "\n")
args = sys.argv[1:]
if args[:1] == ["list"]:
    print("\n".join(scenario.get("members", [])))
    sys.exit(0)
node, readd, add = args[-1], "--readd" in args, scenario.get("add", "ok")
if add == "already" and not readd:
    sys.stderr.write("Node %s already in the cluster (as %s) - please retry with '--readd'\n"
                     % (node, node))
    sys.exit(1)
if add == "confirm":
    sys.stdout.write("Re-add node %s?\ny/[n]/?: " % node)
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    print("answered " + answer)
    sys.exit(0 if answer == "y" else 1)
sys.stderr.write("-- WARNING -- \nPerforming this operation is going to perform the "
                 "following\nchanges to the target machine (%s) and the current cluster\n"
                 "nodes:\n" % node)
ssh = ["ssh", "-oEscapeChar=none", "-oHashKnownHosts=no",
       "-oGlobalKnownHostsFile=/var/lib/ganeti/known_hosts", "-oUserKnownHostsFile=/dev/null",
       "-oCheckHostIp=no", "-oStrictHostKeyChecking=ask", "-oPort=%d" % scenario["port"],
       "root@" + node]
for command in ("test -d /root/.ssh", "cat /root/.ssh/id_rsa.pub"):
    done = subprocess.run(ssh + [command], stdout=subprocess.DEVNULL)
    if done.returncode:
        sys.stderr.write("Failure: command execution error:\nCommand '%s' failed: exited "
                         "with exit code %d\n" % (" ".join(ssh), done.returncode))
        sys.exit(1)
if add == "version":
    sys.stderr.write("Failure: prerequisites not met for this operation:\nerror type: "
                     "environment_error, error details:\nVersion mismatch master version "
                     "3000000, node version 2160000\n")
    sys.exit(1)
print(time.ctime() + " - INFO: Node will be a master candidate")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(address: str, port: int, proc, log) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd ended: {log.read_text()}")
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd does not listen on {address}:{port}: {log.read_text()}")


def keygen(path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)],
                   check=True)
    return " ".join(open(f"{path}.pub").read().split()[:2])


@dataclasses.dataclass
class Sshd:
    port: int
    base: object                # the test's directory
    root: object                # the namespace's /root
    ganeti: object              # the namespace's /var/lib/ganeti
    host_keys: dict             # what an agent would report: {"ed25519": "ssh-ed25519 ..."}
    key: str                    # serve's private key, authorized for root
    serve_pub: str


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    base = tmp_path_factory.mktemp("sshd")
    root, ganeti, sbin, keys = (base / d for d in ("root", "ganeti", "sbin", "hostkeys"))
    for d in (root, root / ".ssh", ganeti, sbin, keys):
        d.mkdir()
        d.chmod(0o700)
    sbin.chmod(0o755)
    (sbin / "gnt-cluster").write_text(FAKE_GNT_CLUSTER)
    (sbin / "gnt-node").write_text(FAKE_GNT_NODE)
    for f in ("gnt-cluster", "gnt-node"):
        (sbin / f).chmod(0o755)
    (base / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
        f"{ip} {name}.project.edu {name}\n" for name, ip in NODES.items()))
    host_keys = {kind: keygen(keys / f"ssh_host_{kind}_key", kind)
                 for kind in ("ed25519", "rsa")}
    state = base / "state"
    serve_pub = statedir.serve_key(str(state), "ganeti-installer@test")
    port = free_port()
    config = base / "sshd_config"
    config.write_text("".join(f"ListenAddress {ip}:{port}\n" for ip in NODES.values()) +
                      "".join(f"HostKey {keys}/ssh_host_{k}_key\n" for k in host_keys) +
                      textwrap.dedent("""\
                          PidFile none
                          PermitRootLogin yes
                          PubkeyAuthentication yes
                          PasswordAuthentication yes
                          KbdInteractiveAuthentication no
                          UsePAM no
                          StrictModes yes
                          AuthorizedKeysFile .ssh/authorized_keys
                          MaxStartups 50
                          LogLevel VERBOSE
                          """))
    mounts = [f"mount --bind {shlex.quote(str(root))} /root",
              "mount -t tmpfs -o mode=0755 tmpfs /var/lib", "mkdir /var/lib/ganeti",
              f"mount --bind {shlex.quote(str(ganeti))} /var/lib/ganeti",
              f"mount --bind {shlex.quote(str(base / 'hosts'))} /etc/hosts",
              f"mount --bind {shlex.quote(str(sbin))} /usr/local/sbin",
              "mkdir -p /run/sshd",
              f"exec /usr/sbin/sshd -D -e -f {shlex.quote(str(config))}"]
    log = base / "sshd.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                                 "sh", "-ec", " && ".join(mounts)], stderr=err)
    try:
        for ip in NODES.values():
            wait_port(ip, port, proc, log)
        yield Sshd(port, base, root, ganeti, host_keys, statedir.key_path(str(state)),
                   serve_pub)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def fresh(sshd):
    """The namespace's /root and /var/lib/ganeti as a freshly installed node has them: only
    serve's key authorized (the plan's doing), no cluster."""
    for d in (sshd.root / ".ssh", sshd.ganeti):
        for f in d.iterdir():
            f.unlink()
    auth = sshd.root / ".ssh" / "authorized_keys"
    auth.write_text(sshd.serve_pub + "\n")
    auth.chmod(0o600)
    scenario(sshd)
    return sshd


def scenario(sshd, **values) -> None:
    (sshd.ganeti / "scenario.json").write_text(
        json.dumps(dict({"port": sshd.port, "versions": {}}, **values)))
    (sshd.ganeti / "verify.n").unlink(missing_ok=True)


def calls(sshd) -> list[list[str]]:
    path = sshd.ganeti / "calls.log"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def client(sshd, tmp_path, *options: str, key: str | None = None) -> list[str]:
    """A bare ssh client argv for 127.0.0.2 with a known_hosts of the test's own."""
    argv = ["ssh", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HashKnownHosts=no",
            "-o", "IdentitiesOnly=yes", "-o", f"IdentityFile={key or sshd.key}",
            "-o", "IdentityAgent=none", "-p", str(sshd.port)]
    for option in options:
        argv += ["-o", option]
    return argv + ["root@127.0.0.2"]


def reported(sshd) -> list[sshkeys.PublicKey]:
    return sshkeys.reported_keys(sshd.host_keys)


# -- the pty driver against ssh's own prompts -----------------------------------------------

@pytest.mark.integration
def test_the_reported_key_is_accepted_at_the_question(fresh, tmp_path):
    lines = []
    argv = client(fresh, tmp_path, "StrictHostKeyChecking=ask") + ["echo", "hello from node1"]
    result = prompts.drive(argv, trusted=reported(fresh), log=lines.append, what="test",
                           timeout=30)
    assert result.status == 0
    assert "hello from node1" in result.output
    ed = sshkeys.parse(fresh.host_keys["ed25519"])
    assert f"ED25519 key fingerprint is {ed.fingerprint()}." in lines   # ssh asked
    assert ed.blob in (tmp_path / "known_hosts").read_text()           # ssh kept the answer


@pytest.mark.integration
def test_another_key_is_refused_naming_both_fingerprints(fresh, tmp_path):
    impostor = sshkeys.parse(keygen(tmp_path / "impostor"))
    argv = client(fresh, tmp_path, "StrictHostKeyChecking=ask") + ["echo", "should not run"]
    with pytest.raises(JoinError) as e:
        prompts.drive(argv, trusted=[impostor], log=lambda line: None, what="test",
                      timeout=30)
    shown = sshkeys.parse(fresh.host_keys["ed25519"]).fingerprint()
    assert e.value.kind is JoinKind.HOST_KEY
    assert shown in e.value.message and impostor.fingerprint() in e.value.message
    assert "should not run" not in e.value.output
    kh = tmp_path / "known_hosts"
    assert not kh.exists() or sshkeys.parse(fresh.host_keys["ed25519"]).blob not in \
        kh.read_text()


@pytest.mark.integration
def test_a_password_prompt_is_a_failure_and_never_answered(fresh, tmp_path):
    stranger = tmp_path / "stranger"
    keygen(stranger)                                # a key the node does not authorize
    sshkeys.replace(str(tmp_path / "known_hosts"),
                    sshkeys.host_patterns(["127.0.0.2"], fresh.port), reported(fresh))
    argv = client(fresh, tmp_path, "StrictHostKeyChecking=yes", "BatchMode=no",
                  key=str(stranger)) + ["echo", "should not run"]
    start = time.monotonic()
    with pytest.raises(JoinError) as e:
        prompts.drive(argv, trusted=reported(fresh), log=lambda line: None, what="test",
                      timeout=30)
    assert e.value.kind is JoinKind.PASSWORD
    assert "root@127.0.0.2's password:" in e.value.message
    assert "authorized_keys" in e.value.message
    assert time.monotonic() - start < 15            # refused at once, not timed out


@pytest.mark.integration
def test_ganetis_confirmation_is_answered_only_when_asked_for(fresh, tmp_path):
    scenario(fresh, add="confirm")
    remote = pinned_remote(fresh, tmp_path)
    result = remote.converse("127.0.0.2", ["gnt-node", "add", "--readd", "node2.project.edu"],
                             trusted=[], log=lambda line: None, timeout=30, confirm=True)
    assert result.status == 0 and "answered y" in result.output
    with pytest.raises(JoinError) as e:
        remote.converse("127.0.0.2", ["gnt-node", "add", "node2.project.edu"], trusted=[],
                        log=lambda line: None, timeout=30)
    assert e.value.kind is JoinKind.FAILED and "Re-add node node2.project.edu?" in e.value.message


def asker(text: str) -> list[str]:
    """A command that prints `text` (no newline), reads one answer and prints it."""
    script = "import sys; sys.stdout.write(sys.argv[1]); sys.stdout.flush(); " \
             "print('answer: ' + sys.stdin.readline().strip())"
    return ["python3", "-c", script, text]


@pytest.mark.integration
def test_the_papers_md5_question_is_answered_for_the_reported_key(tmp_path):
    key = sshkeys.parse(keygen(tmp_path / "ecdsa", "ecdsa"))
    # Figure 2.9 of the paper (OpenSSH 6 on wheezy): MD5 fingerprints, "(yes/no)?"
    paper = ("The authenticity of host 'node2.project.edu (192.168.20.223)' can't be "
             f"established.\r\nECDSA key fingerprint is {key.md5()}.\r\n"
             "Are you sure you want to continue connecting (yes/no)? ")
    result = prompts.drive(asker(paper), trusted=[key], log=lambda line: None, what="test",
                           timeout=30)
    assert "answer: yes" in result.output
    other = sshkeys.parse(keygen(tmp_path / "other", "ecdsa"))
    with pytest.raises(JoinError) as e:
        prompts.drive(asker(paper), trusted=[other], log=lambda line: None, what="test",
                      timeout=30)
    assert e.value.kind is JoinKind.HOST_KEY
    assert key.md5() in e.value.message and other.md5() in e.value.message
    assert "node2.project.edu (192.168.20.223)" in e.value.message


@pytest.mark.integration
def test_a_pam_password_prompt_is_a_failure_too():
    with pytest.raises(JoinError) as e:
        prompts.drive(asker("(root@node2.project.edu) Password: "), trusted=[],
                      log=lambda line: None, what="test", timeout=30)
    assert e.value.kind is JoinKind.PASSWORD and "answer:" not in e.value.output


# -- serve's pinned connections -------------------------------------------------------------

def pinned_remote(sshd, tmp_path, keys=None) -> Remote:
    kh = tmp_path / "ssh" / "known_hosts"
    for ip in NODES.values():
        sshkeys.replace(str(kh), sshkeys.host_patterns([ip], sshd.port),
                        reported(sshd) if keys is None else keys)
    return Remote(sshd.key, str(kh), port=sshd.port)


@pytest.mark.integration
def test_a_pinned_key_runs_without_a_prompt_and_a_rebuilt_node_replaces_it(fresh, tmp_path):
    remote = pinned_remote(fresh, tmp_path)
    done = remote.run("127.0.0.3", ["echo", "it's node2; $HOME stays literal"])
    assert done.stdout == "it's node2; $HOME stays literal\n"
    lines = []
    result = remote.converse("127.0.0.3", ["echo", "with a tty"], trusted=[],
                             log=lines.append, timeout=30)
    assert (result.status, lines[-1]) == (0, "with a tty")

    rebuilt = sshkeys.parse(keygen(tmp_path / "rebuilt"))      # the pin says "new key"
    remote = pinned_remote(fresh, tmp_path, [rebuilt])
    with pytest.raises(JoinError) as e:
        remote.run("127.0.0.3", ["true"])
    assert e.value.kind is JoinKind.HOST_KEY
    remote = pinned_remote(fresh, tmp_path)                     # and back: replaced again
    assert remote.run("127.0.0.3", ["hostname"]).returncode == 0
    text = (tmp_path / "ssh" / "known_hosts").read_text()
    assert rebuilt.blob not in text and text.count(f"[127.0.0.3]:{fresh.port} ") == 2


@pytest.mark.integration
def test_a_node_that_does_not_know_serves_key_is_a_password_failure(fresh, tmp_path):
    (fresh.root / ".ssh" / "authorized_keys").write_text("")
    with pytest.raises(JoinError) as e:
        pinned_remote(fresh, tmp_path).run("127.0.0.3", ["true"])
    assert e.value.kind is JoinKind.PASSWORD and "Permission denied" in e.value.message


@pytest.mark.integration
def test_a_closed_port_is_unreachable(fresh, tmp_path):
    remote = dataclasses.replace(pinned_remote(fresh, tmp_path), port=free_port())
    with pytest.raises(JoinError) as e:
        remote.run("127.0.0.3", ["true"])
    assert e.value.kind is JoinKind.UNREACHABLE and "Connection refused" in e.value.message
    with pytest.raises(JoinError) as e:
        remote.converse("127.0.0.3", ["true"], trusted=[], log=lambda line: None, timeout=30)
    assert e.value.kind is JoinKind.UNREACHABLE


@pytest.mark.integration
def test_no_end_in_time_is_a_timeout(fresh, tmp_path):
    remote = pinned_remote(fresh, tmp_path)
    lines = []
    start = time.monotonic()
    with pytest.raises(JoinError) as e:
        remote.converse("127.0.0.3", ["sh", "-c", "echo started; sleep 60"], trusted=[],
                        log=lines.append, timeout=2)
    assert e.value.kind is JoinKind.TIMEOUT and "started" in e.value.message
    with pytest.raises(JoinError) as e:
        remote.run("127.0.0.3", ["sleep", "8"], timeout=2)
    assert e.value.kind is JoinKind.TIMEOUT
    assert time.monotonic() - start < 20


# -- the join, with fake Ganeti commands ----------------------------------------------------

def loopback_cluster():
    cluster = load_example()
    nodes = tuple(dataclasses.replace(n, ip=NODES[n.name]) for n in cluster.nodes)
    return dataclasses.replace(cluster, nodes=nodes)


@pytest.fixture
def joiner(fresh):
    events = []
    state = fresh.base / "state"
    kh = sshkeys.known_hosts_path(str(state))
    if os.path.exists(kh):
        os.unlink(kh)
    j = Joiner(loopback_cluster(), str(state), lambda node, line: events.append((node, line)),
               port=fresh.port, timeouts=dict(short=30, init=60, modify=60, add=60,
                                              verify=60), settle_pause=0.1)
    j.events = events
    return j


@pytest.mark.integration
def test_bootstrap_runs_the_papers_init_once(joiner, fresh):
    first = joiner.cluster.node("node1")
    result = joiner.bootstrap(first, fresh.host_keys)
    assert result.verify.ok and result.node == "node1"
    assert [c for c in calls(fresh) if c[1] in ("init", "modify")] == [
        PAPER_INIT.split(), PAPER_MODIFY.split()]
    assert ("node1", f"+ {PAPER_INIT}   (on 127.0.0.2)") in joiner.events
    joiner.bootstrap(first, fresh.host_keys)            # again: init is not repeated
    assert [c[1] for c in calls(fresh)].count("init") == 1


@pytest.mark.integration
def test_bootstrap_refuses_a_node_of_another_cluster(joiner, fresh):
    (fresh.ganeti / "ssconf_cluster_name").write_text("other.project.edu\n")
    with pytest.raises(JoinError) as e:
        joiner.bootstrap(joiner.cluster.node("node1"), fresh.host_keys)
    assert "other.project.edu" in e.value.message
    assert not [c for c in calls(fresh) if c[1] == "init"]


def bootstrapped(joiner, fresh):
    joiner.bootstrap(joiner.cluster.node("node1"), fresh.host_keys)
    # node2 is another machine: the master's key is not in its authorized_keys yet
    auth = fresh.root / ".ssh" / "authorized_keys"
    auth.write_text(fresh.serve_pub + "\n")
    return (fresh.root / ".ssh" / "id_rsa.pub").read_text().split()[1]


@pytest.mark.integration
def test_join_answers_ganetis_ssh_for_the_reported_key_and_verifies(joiner, fresh):
    master_blob = bootstrapped(joiner, fresh)
    node2 = joiner.cluster.node("node2")
    result = joiner.join(node2, fresh.host_keys, readd=False)
    assert result.verify.ok and not result.readd
    assert "Node will be a master candidate" in result.output
    assert ["gnt-node", "add", "node2.project.edu"] in calls(fresh)
    logged = [line for node, line in joiner.events if node == "node2"]
    ed = sshkeys.parse(fresh.host_keys["ed25519"]).fingerprint()
    # Ganeti's ssh asked twice (prepare-node-join, then the key read); both answered
    assert logged.count(f"ED25519 key fingerprint is {ed}.") == 2
    assert any("WARNING" in line for line in logged)
    auth = (fresh.root / ".ssh" / "authorized_keys").read_text()
    assert auth.count(master_blob) == 1             # the join put it there, for ssh

    scenario(fresh, members=["node1.project.edu", "node2.project.edu"])
    assert "node2.project.edu" in joiner.members()
    result = joiner.join(node2, fresh.host_keys, readd=True)        # rebuilt: once more
    assert result.readd and ["gnt-node", "add", "--readd", "node2.project.edu"] in \
        calls(fresh)
    assert (fresh.root / ".ssh" / "authorized_keys").read_text().count(master_blob) == 1


@pytest.mark.integration
def test_join_refuses_when_the_node_shows_another_key(joiner, fresh, tmp_path):
    bootstrapped(joiner, fresh)
    other = {"ed25519": keygen(tmp_path / "other")}
    with pytest.raises(JoinError) as e:
        joiner.join(joiner.cluster.node("node2"), other, readd=False)
    assert e.value.kind is JoinKind.HOST_KEY
    assert not [c for c in calls(fresh) if c[0] == "gnt-node"]


@pytest.mark.integration
def test_join_checks_versions_before_adding(joiner, fresh):
    bootstrapped(joiner, fresh)
    scenario(fresh, versions={"127.0.0.4": "2.16.2"})
    with pytest.raises(JoinError) as e:
        joiner.join(joiner.cluster.node("node3"), fresh.host_keys, readd=False)
    assert e.value.kind is JoinKind.VERSION and "2.16.2" in e.value.message
    assert not [c for c in calls(fresh) if c[0] == "gnt-node"]


@pytest.mark.integration
@pytest.mark.parametrize("add,kind", [("already", JoinKind.ALREADY_MEMBER),
                                      ("version", JoinKind.VERSION)])
def test_join_reports_ganetis_refusals(joiner, fresh, add, kind):
    bootstrapped(joiner, fresh)
    scenario(fresh, add=add)
    with pytest.raises(JoinError) as e:
        joiner.join(joiner.cluster.node("node2"), fresh.host_keys, readd=False)
    assert e.value.kind is kind


@pytest.mark.integration
def test_join_is_not_done_while_verify_names_the_node(joiner, fresh):
    bootstrapped(joiner, fresh)
    scenario(fresh, verify=VERIFY_CODED)
    with pytest.raises(JoinError) as e:
        joiner.join(joiner.cluster.node("node2"), fresh.host_keys, readd=False)
    assert e.value.kind is JoinKind.VERIFY
    assert "The KVM binary ('/usr/bin/kvm') does not exist" in e.value.message
    assert [f.code for f in e.value.details.errors] == ["ENODEHV", "ENODESSH"]
    # node3 has no finding of its own: the others' are returned, they do not block it
    without_node3 = [ln for ln in VERIFY_CODED.splitlines() if "node3" not in ln]
    scenario(fresh, verify="\n".join(without_node3))
    result = joiner.join(joiner.cluster.node("node3"), fresh.host_keys, readd=False)
    assert result.verify.ok
    assert {f.code for f in result.verify.others} == \
        {"ENODEHV", "ENODEVERSION", "ENODESSH", "ECLUSTERCFG"}


@pytest.mark.integration
def test_a_rebuilt_node_joins_with_its_instance_copies_still_to_make(joiner, fresh):
    """A readd whose verify names only the DRBD copies node2 lost joins (rebuild makes them
    again with replace-disks); a first add with the same verify does not."""
    bootstrapped(joiner, fresh)
    scenario(fresh, verify=READDED)
    node2 = joiner.cluster.node("node2")
    with pytest.raises(JoinError) as e:
        joiner.join(node2, fresh.host_keys, readd=False)
    assert e.value.kind is JoinKind.VERIFY
    seen = []       # the commands run when the node gets what it needs before its verify
    joiner.before_verify = lambda node: seen.append([c[:2] for c in calls(fresh)])
    result = joiner.join(node2, fresh.host_keys, readd=True)
    assert result.verify.ok and len(result.verify.warnings) == 4
    # After the add, before its verify (the ISOs an instance's cdrom_image_path names)
    assert seen and seen[0][-1] == ["gnt-node", "add"], seen
    assert [c[:2] for c in calls(fresh)][len(seen[0]):] == [["gnt-cluster", "verify"]]
    assert ("node2", "verify: 4 finding(s) are the instance copies node2 lost with its disk; "
            "gnt-instance activate-disks and replace-disks -s make them again (rebuild runs "
            "them next; after a reinstall, run them yourself)") in joiner.events


# Verify just after an add on a busy master: WConfd has not copied config.data to node2 yet.
UNSETTLED = (f"{T}   - ERROR:ECLUSTERFILECHECK:cluster:None:File /var/lib/ganeti/config.data "
             "found with 2 different checksums (variant 1 on node1.project.edu; variant 2 on "
             "node2.project.edu)\n")


@pytest.mark.integration
def test_verify_is_asked_again_while_ganetis_files_settle(joiner, fresh):
    bootstrapped(joiner, fresh)
    scenario(fresh, verifies=[UNSETTLED, UNSETTLED, ""])
    result = joiner.join(joiner.cluster.node("node2"), fresh.host_keys, readd=False)
    assert result.verify.ok
    assert [c[1] for c in calls(fresh)].count("verify") == 1 + 3       # bootstrap's, then 3
    assert sum("verifying again" in line for node, line in joiner.events) == 2


@pytest.mark.integration
def test_files_that_never_settle_fail_the_join_and_other_errors_are_not_retried(joiner, fresh):
    bootstrapped(joiner, fresh)
    scenario(fresh, verifies=[UNSETTLED])
    with pytest.raises(JoinError) as e:
        joiner.join(joiner.cluster.node("node2"), fresh.host_keys, readd=False)
    assert e.value.kind is JoinKind.VERIFY
    assert "config.data found with 2 different" in e.value.message
    assert [c[1] for c in calls(fresh)].count("verify") == 1 + 4
    scenario(fresh, verifies=[VERIFY_CODED, ""])          # ENODEHV is not a copy settling
    with pytest.raises(JoinError):
        joiner.join(joiner.cluster.node("node2"), fresh.host_keys, readd=True)
    assert [c[1] for c in calls(fresh)].count("verify") == 1 + 4 + 1


# -- serve's join hook: the order of joins, and the states the admin sees ------------------

@pytest.mark.integration
def test_the_hook_joins_a_node_once_the_master_has_made_the_cluster(fresh, joiner):
    from installer.master.join.hook import JoinHook
    from installer.master.state import open_state
    state = open_state(str(fresh.base / "hook-state"))
    try:
        state.sync_nodes(joiner.cluster)
        for name in ("node1", "node2"):
            state.db.execute("UPDATE nodes SET state = 'booted', host_keys = ? WHERE name = ?",
                             (json.dumps(fresh.host_keys), name))
        hook = JoinHook(joiner.cluster, joiner.state_dir, port=fresh.port,
                        timeouts=joiner.timeouts)
        hook(state, state.node("node2"))            # before the cluster exists: it waits
        assert state.node("node2").state == "booted"
        assert "waiting for the master node1" in state.events("node2")[-1]["message"]
        assert not [c for c in calls(fresh) if c[:2] == ["gnt-node", "add"]]
        # node2 will be another machine once the master exists (see bootstrapped())
        hook(state, state.node("node1"))
        assert state.node("node1").state == "joined", state.node("node1")
        assert state.node("node2").state == "joined", state.events("node2")[-5:]
        assert ["gnt-node", "add", "node2.project.edu"] in calls(fresh)
        steps = [(e["step"], e["status"]) for e in state.events("node2")]
        assert ("join", "joining") in steps and steps[-1] == ("join", "joined")
        assert any(e["status"] == "log" and "gnt-node add" in e["message"]
                   for e in state.events("node2"))
        # node2's own report, which waited on the hook's lock while the master's turn
        # joined it, arrives now with its snapshot from before: nothing is run again.
        adds = [c for c in calls(fresh) if c[:2] == ["gnt-node", "add"]]
        stale = dataclasses.replace(state.node("node2"), state=NodeState.BOOTED)
        hook(state, stale)
        assert [c for c in calls(fresh) if c[:2] == ["gnt-node", "add"]] == adds
        assert state.node("node2").state == "joined"
    finally:
        state.close()


@pytest.mark.integration
def test_the_hook_marks_a_refused_join_failed_with_its_kind(fresh, joiner, tmp_path):
    from installer.master.join.hook import JoinHook
    from installer.master.state import open_state
    state = open_state(str(fresh.base / "hook-state-2"))
    try:
        state.sync_nodes(joiner.cluster)
        state.db.execute("UPDATE nodes SET state = 'booted', host_keys = ? WHERE name = "
                         "'node1'", (json.dumps({"ed25519": keygen(tmp_path / "other")}),))
        JoinHook(joiner.cluster, joiner.state_dir, port=fresh.port,
                 timeouts=joiner.timeouts)(state, state.node("node1"))
        node = state.node("node1")
        assert node.state == "failed" and node.message.startswith("host-key: "), node
    finally:
        state.close()


@pytest.mark.integration
def test_a_join_serve_stops_is_ended_and_runs_again_at_the_next_start(fresh, joiner, tmp_path):
    """serve's SIGTERM path: the running join's ssh ends at once (not when Ganeti is done),
    its node stays joining, and the next serve queues it again as booted."""
    from installer.master import api, serve
    from installer.master.join.hook import STOPPED, JoinHook
    from installer.master.state import open_state
    scenario(fresh, init_seconds=600)
    state = open_state(str(fresh.base / "hook-state-3"))
    service = api.Service(str(tmp_path), state, "unused", "unused",
                          on_booted=JoinHook(joiner.cluster, joiner.state_dir, port=fresh.port,
                                             timeouts=joiner.timeouts))
    try:
        state.sync_nodes(joiner.cluster)
        for name in ("node1", "node2"):
            state.db.execute("UPDATE nodes SET state = 'booted', host_keys = ? WHERE name = ?",
                             (json.dumps(fresh.host_keys), name))
        service.queue_join(state.node("node1"))
        service.queue_join(state.node("node2"))       # queued behind node1's
        deadline = time.monotonic() + 30
        while not [c for c in calls(fresh) if c[1:2] == ["init"]]:
            assert time.monotonic() < deadline, state.events("node1")[-5:]
            time.sleep(0.1)
        start = time.monotonic()
        serve.stop_joins(service, timeout=20)
        assert time.monotonic() - start < 10 and not service.running
        node1 = state.node("node1")
        assert node1.state == "joining", node1
        assert state.events("node1")[-1]["message"].startswith(STOPPED)
        assert state.node("node2").state == "booted"     # never started
        assert [n.name for n in serve.requeue_joins(state)] == ["node1", "node2"]
        assert state.node("node1").state == "booted"
    finally:
        service.close()
        state.close()
