"""ISO names, the node-side commands, the state of each ISO per node, and every refusal
(missing file, a name taken by other bytes, a node down, a full /iso) without a real node:
FakeNode carries out the few commands isos.NodePaths builds on a directory of the test."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from installer import cli
from installer.master import isodist, isos, isoservice, multicast
from installer.master.isos import IsoError, NodePaths
from installer.master.join.remote import Remote
from installer.master.nodeshell import Shell, SshShell
from installer.master.state import open_state
from tests.serving import Server, render_outdir
from tests.test_state import booted, joined


class FakeNode(Shell):
    """A node as a directory: runs NodePaths' argv in Python. `down`: unreachable;
    `free`: what df says; `break_copy`: the copy stops halfway (a full disk)."""

    def __init__(self, name: str, root: str, *, down=False, free=1 << 40, break_copy=False):
        object.__setattr__(self, "node", name)
        object.__setattr__(self, "address", "10.0.0.1")
        object.__setattr__(self, "root", root)
        self.__dict__.update(down=down, free=free, break_copy=break_copy, commands=[])

    def run(self, command, *, stdin=None, timeout=120, what=""):
        self.commands.append(list(command))
        if self.down:
            raise IsoError(f"{self.node} (10.0.0.1) is unreachable: Connection timed out")
        out = self._do(list(command), stdin)
        return subprocess.CompletedProcess(command, 0, out, "")

    def _do(self, argv, stdin) -> str:
        if argv[:2] == ["sh", "-c"] and argv[3] == "prepare":
            os.makedirs(argv[4], exist_ok=True)
            Path(argv[5]).unlink(missing_ok=True)
        elif argv[:2] == ["sh", "-c"] and argv[3] == "present":
            return _sha_line(argv[4]) if os.path.exists(argv[4]) else ""
        elif argv[:2] == ["sh", "-c"] and argv[3] == "commit":
            os.replace(argv[4], argv[5])
        elif argv[0] == "df":
            return f"Avail\n{self.free}\n"
        elif argv[0] == "sha256sum":
            return _sha_line(argv[2])
        elif argv[0] == "dd":
            target = argv[1].removeprefix("of=")
            with open(target, "wb") as f:
                data = stdin.read()
                f.write(data[:len(data) // 2] if self.break_copy else data)
            if self.break_copy:
                raise IsoError(f"{self.node}: writing {target} exited 1: No space left on "
                               "device")
        elif argv[:2] == ["rm", "-f"]:
            for path in argv[3:]:
                Path(path).unlink(missing_ok=True)
        else:
            raise AssertionError(f"unexpected command {argv}")
        return ""


def _sha_line(path: str) -> str:
    return f"{hashlib.sha256(Path(path).read_bytes()).hexdigest()}  {path}\n"


@pytest.mark.parametrize("name", ["debian-12.5.0-amd64-netinst.iso", "a", "x_y+z.ISO"])
def test_good_names(name):
    assert isos.check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden.iso", "-rf.iso", "a b.iso", "a/b.iso", "..",
                                  "a;rm.iso", "x" * 129, "é.iso", "half.iso.part"])
def test_bad_names_are_refused_with_the_rule(name):
    with pytest.raises(IsoError, match="letters, digits and . _ \\+ - only"):
        isos.check_name(name, "/tmp/whatever")


def test_node_commands_are_argv_lists_of_validated_values():
    paths = NodePaths("/iso", "debian.iso")
    assert paths.commit() == ["sh", "-c", 'sync -- "$1" && mv -f -T -- "$1" "$2"', "commit",
                              "/iso/.incoming/debian.iso", "/iso/debian.iso"]
    assert paths.abort() == ["rm", "-f", "--", "/iso/.incoming/debian.iso"]
    with pytest.raises(IsoError):
        NodePaths("/iso", "$(reboot).iso")
    with pytest.raises(IsoError):
        NodePaths("/iso/../etc", "debian.iso")


def test_a_node_is_reached_by_ssh_with_the_pinned_key_and_a_terminal_for_its_receiver(
        tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("private")
    shell = SshShell("node2", "10.0.0.12", remote=Remote(str(key), str(tmp_path / "known")))
    argv = shell.argv(NodePaths(shell.root, "a.iso").abort())
    assert argv[0] == "ssh" and argv[-2:] == ["10.0.0.12", "rm -f -- /iso/.incoming/a.iso"]
    assert f"IdentityFile={key}" in argv and "StrictHostKeyChecking=yes" in argv
    assert "-tt" not in argv
    receiver = shell.argv(multicast.receiver_argv(shell, "a.iso", multicast.Options("10.0.0.1")),
                          tty=True)
    assert "-tt" in receiver and receiver[-1].startswith("timeout 21600 uftpd -d -q -x 2")
    assert "-U 0x0a00000c -I 10.0.0.12 -p 1044 -D /iso/.incoming" in receiver[-1]


def test_uftp_status_says_which_node_got_the_whole_file(tmp_path):
    status = tmp_path / "status"
    status.write_text("CONNECT;success;0x0a000002\nCONNECT;failed;0x0a000003\n"
                      "RESULT;0x0a000002;x.iso;4096KB;copy;23942.02KB/s\n"
                      "RESULT;0x0a000003;x.iso;4096KB;mute;\n")
    ids = {multicast.client_id(a): FakeNode(n, "/iso")
           for n, a in (("node2", "10.0.0.2"), ("node3", "10.0.0.3"))}
    assert multicast.parse_status(str(status), ids) == {"node2": "copy", "node3": "mute"}
    argv = multicast.sender_argv("/s/x.iso", "x.iso", list(ids), "/w/st",
                                 multicast.Options("10.0.0.1"))
    assert argv[argv.index("-H") + 1] == "0x0a000002,0x0a000003"
    assert argv[argv.index("-R") + 1] == "900000" and argv[-1] == "/s/x.iso"


@pytest.fixture
def service(tmp_path, bookworm):
    state_dir = tmp_path / "state"
    state = open_state(str(state_dir))
    state.sync_nodes(bookworm)
    for name in ("node1", "node2", "node3"):
        joined(state, name)
    nodes = {n: FakeNode(n, str(tmp_path / n / "iso")) for n in ("node1", "node2", "node3")}
    svc = isoservice.IsoService(state, str(state_dir), bookworm, log=lambda line: None,
                                shells=lambda names: [nodes[n] for n in names],
                                sender=lambda shells: None)
    yield svc, nodes
    state.close()


def iso(tmp_path, name="debian.iso", data=b"ISO" * 1000) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def on(node: FakeNode, name: str) -> bytes | None:
    path = Path(node.root) / name
    return path.read_bytes() if path.exists() else None


def test_add_puts_the_iso_on_every_joined_node_and_keeps_a_copy(service, tmp_path):
    svc, nodes = service
    result = svc.add([iso(tmp_path)])
    assert result["ok"] and all(on(n, "debian.iso") == b"ISO" * 1000 for n in nodes.values())
    kept = svc.state.iso("debian.iso")
    assert Path(kept["path"]).read_bytes() == b"ISO" * 1000
    assert kept["path"].startswith(svc.state_dir)


@pytest.mark.parametrize("files, words", [
    (["/nowhere/x.iso"], "/nowhere/x.iso does not exist"),
    (["relative.iso"], "give the ISO's absolute path"),
    (["{tmp}"], "is a directory"),
    (["{tmp}/bad name.iso"], "not a valid ISO name"),
    ([], "name at least one ISO file"),
])
def test_bad_files_change_nothing(service, tmp_path, files, words):
    svc, nodes = service
    (tmp_path / "bad name.iso").write_bytes(b"x")
    good = iso(tmp_path)
    with pytest.raises(IsoError, match=words):
        svc.add([good] + [f.format(tmp=tmp_path) for f in files] if files else [])
    assert svc.state.isos() == [] and not any(n.commands for n in nodes.values())


def test_a_name_taken_by_other_bytes_is_refused_and_names_the_fix(service, tmp_path):
    svc, nodes = service
    svc.add([iso(tmp_path)])
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(IsoError, match="other bytes.*iso remove debian.iso"):
        svc.add([iso(other, data=b"NEW")])
    assert all(on(n, "debian.iso") == b"ISO" * 1000 for n in nodes.values())


def test_a_node_with_other_bytes_at_the_name_keeps_them(service, tmp_path):
    svc, nodes = service
    os.makedirs(nodes["node2"].root)
    Path(nodes["node2"].root, "debian.iso").write_bytes(b"mine")
    result = svc.add([iso(tmp_path)])
    failed = [r for r in result["isos"][0]["nodes"] if not r["ok"]]
    assert [r["node"] for r in failed] == ["node2"]
    assert "node2 has" in failed[0]["message"] and "other bytes" in failed[0]["message"]
    assert on(nodes["node2"], "debian.iso") == b"mine"


def test_a_node_that_is_down_fails_alone_and_is_named(service, tmp_path):
    svc, nodes = service
    nodes["node3"].down = True
    result = svc.add([iso(tmp_path)])
    by_node = {r["node"]: r for r in result["isos"][0]["nodes"]}
    assert not result["ok"] and by_node["node1"]["ok"] and by_node["node2"]["ok"]
    assert "debian.iso to node3" in by_node["node3"]["message"]
    assert "unreachable" in by_node["node3"]["message"]
    state = svc.state.isos()[0]["nodes"]
    assert state["node3"]["state"] == "failed" and state["node1"]["state"] == "present"


def test_a_full_iso_directory_is_refused_before_sending(service, tmp_path):
    svc, nodes = service
    nodes["node1"].free = 100
    result = svc.add([iso(tmp_path)])
    message = result["isos"][0]["nodes"][0]["message"]
    assert "free space in" in message and "node1" in message and "debian.iso" in message
    assert not any(cmd[0] == "dd" for cmd in nodes["node1"].commands)


def test_a_copy_cut_by_a_full_disk_leaves_no_temporary_and_no_final_file(service, tmp_path):
    svc, nodes = service
    nodes["node2"].break_copy = True
    result = svc.add([iso(tmp_path)])
    message = result["isos"][0]["nodes"][1]["message"]
    assert "No space left" in message, message
    assert on(nodes["node2"], "debian.iso") is None
    assert os.listdir(Path(nodes["node2"].root) / ".incoming") == []


def test_a_node_that_joins_later_gets_the_clusters_isos(service, tmp_path):
    svc, nodes = service
    nodes["node3"].down = True
    svc.add([iso(tmp_path)])
    nodes["node3"].down = False
    svc.to_node("node3")
    assert on(nodes["node3"], "debian.iso") == b"ISO" * 1000
    assert svc.state.isos()[0]["nodes"]["node3"]["state"] == "present"
    assert any("iso debian.iso: ok" in e["message"] for e in svc.state.events("node3"))


def test_remove_of_an_unknown_name_lists_the_known_ones(service, tmp_path):
    svc, _ = service
    svc.add([iso(tmp_path)])
    with pytest.raises(IsoError, match="no ISO nope.iso: it has debian.iso"):
        svc.remove("nope.iso")


def test_a_failed_remove_keeps_the_iso_listed_for_another_try(service, tmp_path):
    svc, nodes = service
    svc.add([iso(tmp_path)])
    nodes["node1"].down = True
    assert svc.remove("debian.iso") == {"name": "debian.iso", "removed": False,
                                        "failed": ["node1"]}
    assert list(svc.state.isos()[0]["nodes"]) == ["node1"]
    nodes["node1"].down = False
    assert svc.remove("debian.iso")["removed"] and svc.state.isos() == []


def test_cli_refuses_a_missing_file_before_asking_serve(tmp_path, capsys):
    assert cli.main(["iso", "add", str(tmp_path / "no.iso"), "--url", "http://127.0.0.1:9"]) \
        == 1
    assert f"{tmp_path}/no.iso does not exist" in capsys.readouterr().err


def test_cli_needs_the_state_directory_for_the_admin_token(tmp_path, capsys):
    path = iso(tmp_path)
    assert cli.main(["iso", "add", path, "--url", "http://127.0.0.1:9"]) == 1
    assert "--state DIR" in capsys.readouterr().err
    assert cli.main(["iso", "remove", "x.iso", "--url", "http://127.0.0.1:9", "--state",
                     str(tmp_path / "nostate")]) == 1
    assert "start ganeti-installer serve once" in capsys.readouterr().err


def test_distribute_without_nodes_does_nothing(tmp_path):
    kept = isos.Iso("a.iso", "0" * 64, 1, str(tmp_path / "a.iso"))
    assert isodist.distribute(kept, [], multicast_opts=None, workdir=str(tmp_path),
                              record=lambda *a: None) == []


@pytest.mark.allow_subprocess       # serve makes its SSH key with ssh-keygen
def test_the_iso_routes_need_the_admin_token_and_refuse_bad_input(tmp_path):
    cluster = render_outdir(str(tmp_path / "out"))
    with Server(cluster, str(tmp_path / "out"), str(tmp_path / "state")) as server:
        url, admin = f"{server.url}/api/v1/isos", server.service.admin_token
        path = iso(tmp_path)
        for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 403)):
            resp = requests.post(url, json={"files": [path]}, headers=headers, timeout=10)
            assert resp.status_code == status and "admin" in resp.json()["error"]
            assert requests.delete(f"{url}/debian.iso", headers=headers,
                                   timeout=10).status_code == status
        auth = {"Authorization": f"Bearer {admin}"}
        for body in ({"files": "x"}, {"files": [path], "rate_mbps": "fast"},
                     {"files": [path], "rate_mbps": 0}, {"files": [path], "copy": "yes"}):
            resp = requests.post(url, json=body, headers=auth, timeout=10)
            assert resp.status_code == 400 and '"rate_mbps": 900' in resp.json()["error"]
        resp = requests.post(url, json={"files": ["/no/such.iso"]}, headers=auth, timeout=10)
        assert resp.status_code == 400 and "/no/such.iso does not exist" in resp.json()["error"]
        assert requests.get(url, timeout=10).json() == []
        assert not os.path.exists(tmp_path / "state" / "isos")


class JoinsAll:
    """A Joiner stand-in: every join works, with no warning; what the node gets before its
    verify is given as the real Joiner gives it, once Ganeti has the node."""

    def __init__(self, *args, before_verify=None, **kwargs):
        self.before_verify = before_verify

    def bootstrap(self, node, keys):
        self.before_verify(node)
        return SimpleNamespace(verify=SimpleNamespace(warnings=[]))

    def members(self):
        return set()


@pytest.mark.parametrize("fails", [False, True])
def test_a_joining_node_gets_the_isos_before_its_verify_and_a_failure_is_noted(
        state, bookworm, tmp_path, monkeypatch, fails):
    from installer.master.join import hook
    monkeypatch.setattr(hook, "Joiner", JoinsAll)
    got = []

    def to_node(name):
        got.append((name, state.node(name).state))
        if fails:
            raise IsoError("node1 (10.0.0.1) is unreachable")
    booted(state, "node1")
    hook.JoinHook(bookworm, str(tmp_path), before_verify=to_node)(state, state.node("node1"))
    assert got == [("node1", "joining")] and state.node("node1").state == "joined"
    notes = [e["message"] for e in state.events("node1")]
    assert ("before the verify: IsoError: node1 (10.0.0.1) is unreachable" in notes) == fails
