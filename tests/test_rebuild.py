"""`ganeti-installer rebuild` (issue 16): what it decides from the cluster's own answers
(gnt-node list, gnt-instance list as Ganeti prints them with --separator) and the order it
acts in. The end-to-end rebuild of a VM cluster node has no VM test yet (issue 16 says where it
would run: on the cluster test's nodes, after testvm's failover)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from installer import cli
from installer.build import render
from installer.cluster.errors import InstallerError
from installer.master import rebuild, status
from installer.master.rebuild import RebuildRefused
from tests.serving import render_outdir

NODES = """node1.project.edu|Y|N
node2.project.edu|N|N
node3.project.edu|N|N
"""
# web: primary on node2, secondary node3 (DRBD), running; db: primary node3, secondary node2,
# running; cold: primary node2, stopped, DRBD on node1; scratch: plain on node1.
INSTANCES = """web.project.edu|node2.project.edu|node3.project.edu|running|drbd
db.project.edu|node3.project.edu|node2.project.edu|running|drbd
cold.project.edu|node2.project.edu|node1.project.edu|ADMIN_down|drbd
scratch.project.edu|node1.project.edu||running|plain
"""
NODE2, NODE3 = "node2.project.edu", "node3.project.edu"


def decide(node: str, evacuate: bool, instances: str = INSTANCES) -> rebuild.Steps:
    return rebuild.plan(node, rebuild.parse_nodes(NODES), rebuild.parse_instances(instances),
                        evacuate)


def test_instances_parse_with_their_secondaries():
    assert rebuild.parse_instances(INSTANCES)[0] == rebuild.Instance(
        "web.project.edu", NODE2, (NODE3,), "running", "drbd")
    assert rebuild.parse_instances(INSTANCES)[3].secondaries == ()
    assert rebuild.parse_nodes(NODES) == {"node1.project.edu": True, NODE2: False,
                                          NODE3: False}


def test_a_primary_for_instances_is_refused_naming_them():
    with pytest.raises(RebuildRefused) as e:
        decide(NODE2, evacuate=False)
    assert str(e.value) == (
        "node2.project.edu is primary for 2 instance(s): web.project.edu (running), "
        "cold.project.edu (ADMIN_down): rebuild with --evacuate to move them to their "
        "secondaries first, or move or stop them yourself")


def test_evacuate_migrates_fails_over_then_offlines_and_replaces_after_the_join():
    steps = decide(NODE2, evacuate=True)
    assert steps.before == [
        ["gnt-node", "migrate", "-f", NODE2],
        ["gnt-instance", "failover", "-f", "cold.project.edu"],
        ["gnt-node", "modify", "-O", "yes", "--auto-promote", NODE2]]
    # replace-disks finds the DRBD device on the node first: activate-disks makes it; the
    # stopped instance's disks go down again after
    assert steps.after == [
        ["gnt-instance", "activate-disks", "web.project.edu"],
        ["gnt-instance", "replace-disks", "-s", "web.project.edu"],
        ["gnt-instance", "activate-disks", "db.project.edu"],
        ["gnt-instance", "replace-disks", "-s", "db.project.edu"],
        ["gnt-instance", "activate-disks", "cold.project.edu"],
        ["gnt-instance", "replace-disks", "-s", "cold.project.edu"],
        ["gnt-instance", "deactivate-disks", "cold.project.edu"],
        ["gnt-cluster", "verify"]]


def test_a_secondary_only_node_needs_no_evacuation():
    steps = decide(NODE3, evacuate=False, instances=INSTANCES.splitlines()[0] + "\n")
    assert steps.before == [["gnt-node", "modify", "-O", "yes", "--auto-promote", NODE3]]
    assert steps.after == [["gnt-instance", "activate-disks", "web.project.edu"],
                           ["gnt-instance", "replace-disks", "-s", "web.project.edu"],
                           ["gnt-cluster", "verify"]]


def test_the_only_copy_of_a_plain_instance_is_refused_even_with_evacuate():
    plain = "scratch.project.edu|node3.project.edu||running|plain\n"
    with pytest.raises(RebuildRefused, match=r"node3.project.edu holds the only copy of 1 "
                                             r"instance\(s\): scratch.project.edu \(running\) "
                                             r"\(disk template plain\): move them with "
                                             r"`gnt-instance move`"):
        decide(NODE3, evacuate=True, instances=INSTANCES + plain)


def test_the_master_and_strangers_are_refused():
    with pytest.raises(RebuildRefused, match=r"node1.project.edu is the cluster's master: "
                                             r"make another node master first"):
        decide("node1.project.edu", evacuate=True)
    with pytest.raises(RebuildRefused, match=r"node9.project.edu is not in the cluster "
                                             r"\(gnt-node list names node1.project.edu, "
                                             r"node2.project.edu, node3.project.edu\): use "
                                             r"`reinstall`"):
        decide("node9.project.edu", evacuate=True)


class World:
    """The master's answers, serve's node states in turn, and everything done, in order."""

    def __init__(self, states: list[tuple[str, str]]):
        self.done: list = []
        self.states = states

    def on_master(self, argv, timeout):
        self.done.append(("master", argv[:2]))
        return {"gnt-node list": NODES, "gnt-instance list": INSTANCES}.get(
            " ".join(argv[:2]), "ok\n")

    def actions(self) -> rebuild.Actions:
        return rebuild.Actions(
            on_master=self.on_master, reinstall=lambda: self.done.append("reinstall"),
            power_on=lambda: self.done.append("power") or "sent",
            state=lambda: self.states.pop(0), log=lambda line: None,
            sleep=lambda s: self.done.append("wait"))


def test_run_acts_in_order_and_replaces_disks_only_once_joined():
    world = World([("pending", ""), ("installing", "os"), ("joined", "")])
    rebuild.run(NODE3, world.actions(), evacuate=True, power=True)
    assert world.done == [
        ("master", ["gnt-node", "list"]), ("master", ["gnt-instance", "list"]),
        ("master", ["gnt-node", "migrate"]), ("master", ["gnt-node", "modify"]),
        "reinstall", "power", "wait", "wait",
        ("master", ["gnt-instance", "activate-disks"]),
        ("master", ["gnt-instance", "replace-disks"]),
        ("master", ["gnt-instance", "activate-disks"]),
        ("master", ["gnt-instance", "replace-disks"]), ("master", ["gnt-cluster", "verify"])]


def test_a_refusal_changes_nothing():
    world = World([])
    with pytest.raises(RebuildRefused):
        rebuild.run(NODE2, world.actions(), evacuate=False, power=True)
    assert world.done == [("master", ["gnt-node", "list"]), ("master", ["gnt-instance", "list"])]


def test_a_failed_join_stops_before_replace_disks_and_says_what_next():
    world = World([("installing", ""), ("failed", "join: host-key")])
    with pytest.raises(InstallerError, match=r"node3.project.edu: the reinstall or join failed "
                                             r"\(join: host-key\); .* then run gnt-instance "
                                             r"activate-disks and replace-disks -s"):
        rebuild.run(NODE3, world.actions(), evacuate=True, power=False)
    assert not any("replace-disks" in str(d) for d in world.done)
    assert "power" not in world.done


def test_the_cli_refuses_the_cluster_files_master_before_reaching_anything(tmp_path, capsys):
    import tomli_w

    from installer import cli
    from tests.conftest import example_data
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(example_data()))
    assert cli.main(["rebuild", str(path), str(tmp_path / "out"), "node1"]) == 1
    assert "error: node1 is cluster.master in" in capsys.readouterr().err
    assert not (tmp_path / "cluster-state").exists()


def test_rebuild_follows_the_node_with_the_admin_token():
    """serve answers `status` off loopback only with the admin token: rebuild's polling of
    the node's state sends it (without it every poll was a 401)."""
    asked = []

    def fetch(url, token=None):
        asked.append((url, token))
        return {"nodes": [{"name": "node2", "state": "joined", "message": "ok"}]}

    assert cli._node_state(SimpleNamespace(fetch=fetch), "http://10.99.0.1:8080", "node2",
                           "admin-token") == ("joined", "ok")
    assert asked == [("http://10.99.0.1:8080", "admin-token")]


# -- --mac: new hardware (the cluster file's MAC changed, the old one forgotten) --------------

NEW_MAC = "52:54:00:20:02:99"


def test_a_new_mac_is_taken_after_the_checks_and_before_the_reinstall():
    world = World([("joined", "")])
    act = world.actions()
    act.new_mac = lambda: world.done.append("new mac") or "c.toml: nodes[2].mac ..."
    rebuild.run(NODE3, act, evacuate=True, power=True)
    assert world.done[2:6] == [("master", ["gnt-node", "migrate"]),
                               ("master", ["gnt-node", "modify"]), "new mac", "reinstall"]


def test_a_refused_rebuild_takes_no_new_mac():
    world = World([])
    act = world.actions()
    act.new_mac = lambda: world.done.append("new mac") or ""
    with pytest.raises(RebuildRefused):
        rebuild.run(NODE2, act, evacuate=False, power=True)
    assert "new mac" not in world.done


@pytest.fixture
def cluster_file(tmp_path):
    import tomli_w

    from tests.conftest import example_data
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(example_data()))
    return path


@pytest.mark.parametrize("mac, words", [
    ("52:54:zz", "c.toml: nodes[1].mac: --mac '52:54:zz' for node2 is not a MAC address; "
                 "write six hex bytes"),
    ("52:54:00:20:02:24", "c.toml: nodes[2].mac: 52:54:00:20:02:24 is the MAC of node3, not "
                          "free for node2"),
])
def test_a_bad_mac_is_refused_before_anything_changes(tmp_path, capsys, cluster_file, mac,
                                                      words):
    before = cluster_file.read_bytes()
    assert cli.main(["rebuild", str(cluster_file), str(tmp_path / "out"), "node2",
                     "--mac", mac]) == 1
    err = capsys.readouterr().err
    assert words in err and "nothing was written" in err
    assert cluster_file.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.toml"]      # no OUTDIR, no state


class Serve:
    """serve's answer to the reload: what it took, or its refusal."""
    Refused, Unreachable = status.Refused, status.Unreachable

    def __init__(self, answer):
        self.answer = answer

    def reload(self, url, token):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def tree(out) -> dict:
    """Every file in OUTDIR: its bytes and mode; and every directory."""
    found = {}
    for root, dirs, names in os.walk(out):
        for d in dirs:
            found[os.path.relpath(os.path.join(root, d), out)] = "dir"
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, out)] = (f.read(), os.stat(path).st_mode)
    return found


def plan_mac(out, name="node2") -> str:
    with open(out / "plans" / f"{name}.json") as f:
        return json.load(f)["node"]["mac"]


def test_the_new_mac_goes_into_the_file_and_outdir_then_serve(tmp_path, cluster_file):
    from installer.cluster import macedit
    out = tmp_path / "out"
    render_outdir(str(out))
    before = tree(out)
    change = macedit.prepare(str(cluster_file), "node2", NEW_MAC)
    taken = {"file": str(cluster_file), "changed": [{"node": "node2", "new": NEW_MAC}]}
    said = cli._new_mac(Serve(taken), "http://x", "t", change, str(out))
    assert said == (f"{cluster_file}: nodes[1].mac 52:54:00:20:02:23 -> {NEW_MAC} (the old "
                    "MAC is forgotten)")
    assert cluster_file.read_text() == change.new_text
    assert plan_mac(out) == NEW_MAC
    assert f"dhcp-host={NEW_MAC},node2" in (out / "dnsmasq/dnsmasq.conf").read_text()
    after = tree(out)
    touched = {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}
    assert touched and all(rel == "plans/node2.json" or rel.startswith(
        ("nodes/node2/", "dnsmasq/", "tftp/entries/52-54-00-20-02-99")) for rel in touched)


def unrendered_edit(cluster_file) -> None:
    """An edit to node3's address in the cluster file, never rendered (serve not restarted):
    not the MAC's to bring into OUTDIR."""
    text = cluster_file.read_text()
    assert "192.168.20.224" in text
    cluster_file.write_text(text.replace("192.168.20.224", "192.168.20.229"))


@pytest.mark.parametrize("answer, words", [
    (status.Refused("serve refused the reload: HTTP 409 ..."), "HTTP 409"),
    (status.Unreachable("http://x"), "no serve answers at http://x"),
    ({"file": "/elsewhere.toml", "changed": []}, "serve runs with the cluster file "
                                                 "/elsewhere.toml"),
])
def test_a_refused_reload_puts_the_file_and_outdir_back(tmp_path, cluster_file, answer,
                                                        words):
    """Byte for byte: OUTDIR is what an older render made (the test mirror, not this file),
    and the file holds an edit never rendered; neither gets into OUTDIR, and every file
    rebuild replaced gets its old bytes back."""
    from installer.cluster import layout, macedit
    out = tmp_path / "out"
    render_outdir(str(out))
    unrendered_edit(cluster_file)
    before = (cluster_file.read_bytes(), tree(out))
    change = macedit.prepare(str(cluster_file), "node2", NEW_MAC)
    with pytest.raises(InstallerError, match=f"node2: the new MAC was not taken .*{words}.*"
                                             "are as they were. The node is offline in "
                                             "Ganeti now"):
        cli._new_mac(Serve(answer), "http://x", "t", change, str(out))
    assert (cluster_file.read_bytes(), tree(out)) == before
    assert plan_mac(out) == "52:54:00:20:02:23"
    assert not os.path.exists(out / layout.entry_path(NEW_MAC, "install", "ipxe"))


def test_the_new_mac_touches_no_other_nodes_files(tmp_path, cluster_file):
    """Taken or not, node1's and node3's plans and files stay what OUTDIR held, even where
    the cluster file (an unrendered edit) would render them otherwise."""
    from installer.cluster import macedit
    out = tmp_path / "out"
    render_outdir(str(out))
    unrendered_edit(cluster_file)
    before = tree(out)
    change = macedit.prepare(str(cluster_file), "node2", NEW_MAC)
    taken = {"file": str(cluster_file), "changed": [{"node": "node2", "new": NEW_MAC}]}
    cli._new_mac(Serve(taken), "http://x", "t", change, str(out))
    after = tree(out)
    for rel in set(before) | set(after):
        if rel.startswith(("plans/node1", "plans/node3", "nodes/node1", "nodes/node3")):
            assert before.get(rel) == after.get(rel), rel
    assert "192.168.20.229" not in (out / "plans/node3.json").read_text()


def test_an_edit_made_during_the_evacuation_is_kept(tmp_path, cluster_file):
    """The change is prepared before evacuating and written after: a file edited in between
    is not overwritten, and OUTDIR not touched."""
    from installer.cluster import macedit
    out = tmp_path / "out"
    render_outdir(str(out))
    change = macedit.prepare(str(cluster_file), "node2", NEW_MAC)
    edited = cluster_file.read_text() + "# edited meanwhile\n"
    cluster_file.write_text(edited)
    before = tree(out)
    taken = {"file": str(cluster_file), "changed": [{"node": "node2", "new": NEW_MAC}]}
    with pytest.raises(InstallerError, match=f"{cluster_file} changed since node2's new MAC"):
        cli._new_mac(Serve(taken), "http://x", "t", change, str(out))
    assert (cluster_file.read_text(), tree(out)) == (edited, before)


def test_a_file_edited_before_the_rollback_is_left_for_the_admin(tmp_path, cluster_file):
    """serve refuses, but the file was edited after the new MAC went in: OUTDIR goes back,
    the file stays, and the error says what to set back by hand."""
    from installer.cluster import macedit
    out = tmp_path / "out"
    render_outdir(str(out))
    before = tree(out)
    change = macedit.prepare(str(cluster_file), "node2", NEW_MAC)

    class Editing(Serve):
        def reload(self, url, token):
            cluster_file.write_text(cluster_file.read_text() + "# edited meanwhile\n")
            return super().reload(url, token)
    with pytest.raises(InstallerError, match=f"is as it was, but {cluster_file} changed since "
                                             "the new MAC was written into it.*set "
                                             "nodes\\[1\\].mac back to"):
        cli._new_mac(Editing(status.Refused("HTTP 409")), "http://x", "t", change, str(out))
    assert tree(out) == before
    assert cluster_file.read_text() == change.new_text + "# edited meanwhile\n"


def test_a_reload_that_may_have_been_taken_is_not_rolled_back(tmp_path, cluster_file):
    """The answer lost once the request went out (or a 5xx): serve may have the new MAC, so
    the file and OUTDIR keep it, and the error says to check status."""
    from installer.cluster import macedit
    out = tmp_path / "out"
    render_outdir(str(out))
    change = macedit.prepare(str(cluster_file), "node2", NEW_MAC)
    lost = InstallerError("the reload through http://x broke off after it was sent "
                          "(ConnectionError): serve may have taken the new MAC")
    with pytest.raises(InstallerError, match="have the new MAC, but serve did not say it took "
                                             "it .*broke off.*if ganeti-installer status does "
                                             f"not show node2 with {NEW_MAC}, restart serve"):
        cli._new_mac(Serve(lost), "http://x", "t", change, str(out))
    assert cluster_file.read_text() == change.new_text
    assert plan_mac(out) == NEW_MAC


def test_an_outdir_behind_the_cluster_file_is_refused_before_the_evacuation(tmp_path,
                                                                          cluster_file):
    """OUTDIR rendered from another file than this one (an edit never rendered): the new
    MAC's render would bring that in too, so rebuild refuses before anything changes."""
    from installer.cluster import config, macedit
    out = tmp_path / "out"
    render_outdir(str(out))
    unrendered_edit(cluster_file)
    edited = cluster_file.read_text()
    before = tree(out)
    change = macedit.prepare(str(cluster_file), "node2", NEW_MAC)
    with pytest.raises(InstallerError, match=f"{out} is not what {cluster_file} renders now "
                                             r"\(plans/node2.json, .*differ\): the new MAC "
                                             "would bring that in too. Run ganeti-installer "
                                             "render"):
        cli._check_mac_change(change, str(out), config.load(str(cluster_file)))
    assert tree(out) == before and cluster_file.read_text() == edited
    render.render_in_place(config.load(str(cluster_file)), str(out), ["node2"])
    cli._check_mac_change(change, str(out), config.load(str(cluster_file)))   # rendered: fine


# -- serve and the power switch answer before anything changes -------------------------------

@pytest.fixture
def rebuild_cli(tmp_path, monkeypatch):
    """`rebuild node2` as the CLI runs it, with the master's commands and serve's answers
    recorded: (argv for cli.main, what was done)."""
    import tomli_w

    from installer.master import statedir
    from tests.conftest import example_data
    data = example_data()
    data["network"]["provisioning"]["interface"] = "gi-noif0"    # not on this host
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    state = tmp_path / "state"
    state.mkdir()
    statedir.admin_token(str(state))
    done: list = []
    monkeypatch.setattr(cli, "_on_master", lambda *a: lambda argv, t: done.append(argv) or "")
    monkeypatch.setattr(status, "reinstall", lambda *a: done.append("reinstall"))
    monkeypatch.setattr(status, "fetch", lambda url, token=None: done.append("status") or {})
    return ["rebuild", str(path), str(tmp_path / "out"), "node2", "--state", str(state)], done


def test_a_power_switch_that_cannot_work_refuses_before_the_evacuation(rebuild_cli, capsys):
    argv, done = rebuild_cli
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "node2: cannot send Wake-on-LAN on gi-noif0 (No such device)" in err, err
    assert "or rebuild with --no-power and switch node2 on yourself" in err
    assert "Nothing was changed" in err
    assert done == ["status"]           # serve was asked; the master and the node were not


def test_no_power_skips_the_check_and_a_silent_serve_refuses_first(rebuild_cli, monkeypatch,
                                                                   capsys):
    argv, done = rebuild_cli

    def no_serve(url, token=None):
        raise InstallerError(f"cannot reach the master at {url} (ConnectionError)")
    monkeypatch.setattr(status, "fetch", no_serve)
    assert cli.main(argv + ["--no-power"]) == 1
    assert "cannot reach the master at" in capsys.readouterr().err
    assert done == []
