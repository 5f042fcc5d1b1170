"""`status` and `reinstall` against a running master, and what they say when none answers."""

from __future__ import annotations

import json
import os
import socket

import pytest
import requests

from installer import cli
from installer.cluster.errors import InstallerError
from installer.master import handoff, status
from tests.conftest import example_path
from tests.serving import Server, render_outdir
from tests.test_state import joined

MAC = "52:54:00:20:02:22"


@pytest.fixture
def server(tmp_path):
    out = tmp_path / "out"
    cluster = render_outdir(str(out))
    with Server(cluster, str(out), str(tmp_path / "state")) as s:
        token = s.state.node("node1").token
        for r in ({"step": "install", "status": "started", "total": 6, "time": 10},
                  {"step": "os", "status": "started", "index": 3, "total": 6, "time": 11,
                   "message": "unpacking the OS image"}):
            resp = requests.post(f"{s.url}/api/v1/nodes/node1/events", json=r, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
            assert resp.ok, resp.text
        requests.get(f"{s.url}/api/v1/plans/52-54-00-99-99-01", timeout=10)
        yield s


@pytest.mark.integration
def test_status_json(server, capsys):
    assert cli.main(["status", "--url", server.url, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    nodes = {n["name"]: n for n in got["nodes"]}
    assert sorted(nodes) == ["node1", "node2", "node3"]
    assert (nodes["node1"]["state"], nodes["node1"]["step"], nodes["node1"]["index"],
            nodes["node1"]["total"]) == ("installing", "os", 3, 6)
    assert nodes["node2"]["state"] == "pending"
    assert "token" not in json.dumps(got)
    assert [u["mac"] for u in got["unknown"]] == ["52:54:00:99:99:01"]


@pytest.mark.integration
def test_status_table(server, capsys):
    assert cli.main(["status", "--url", server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NODE", "MAC", "STATE", "STEP", "PROGRESS", "UPDATED",
                                "MESSAGE"]
    row = lines[1].split()
    assert row[:5] == ["node1", MAC, "installing", "os", "3/6"]
    assert lines[1].endswith("unpacking the OS image")
    assert lines[2].split()[:5] == ["node2", "52:54:00:20:02:23", "pending", "-", "-"]
    text = "\n".join(lines)
    assert "Machines not in the cluster file" in text and "52:54:00:99:99:01" in text


@pytest.mark.integration
def test_status_watch_prints_until_interrupted(server, monkeypatch):
    printed = []
    ticks = iter([None, KeyboardInterrupt])

    def sleep(seconds):
        tick = next(ticks)
        if tick:
            raise tick()
    monkeypatch.setattr(status.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        status.show(server.url, as_json=True, watch=1, out=printed.append)
    assert len(printed) == 2 and json.loads(printed[1])["nodes"][0]["name"] == "node1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_says_where_it_looked(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["status", "--url", url]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the master at {url}/api/v1/nodes" in err
    assert "is ganeti-installer serve running?" in err
    assert cli.main(["status"]) == 1
    assert "give --url" in capsys.readouterr().err


def test_status_takes_the_url_from_the_cluster_file(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(status, "show", lambda url, **kw: seen.append(url) or 0)
    assert cli.main(["status", "--cluster", example_path("cluster.toml")]) == 0
    assert seen == ["http://10.99.0.1:8080"]


@pytest.mark.integration
def test_reinstall_through_the_running_master(server, capsys):
    joined(server.state, "node1")
    handoff.set_boot(server.opts.outdir, MAC, "local")
    token = server.state.node("node1").token
    argv = ["reinstall", example_path("cluster.toml"), server.opts.outdir, "node1",
            "--state", server.opts.state_dir, "--url", server.url]
    assert cli.main(argv) == 0
    assert "marked for reinstall by the master" in capsys.readouterr().out
    node = server.state.node("node1")
    assert node.state == "pending" and node.token != token
    assert handoff.boot_form(server.opts.outdir, MAC) == "install"
    assert any("node1: marked for reinstall" in line for line in server.log)


@pytest.mark.integration
def test_reinstall_with_no_master_running_writes_the_state(tmp_path, capsys):
    out = tmp_path / "out"
    cluster = render_outdir(str(out))
    state_dir = str(tmp_path / "state")
    with Server(cluster, str(out), state_dir) as s:
        joined(s.state, "node2")
    handoff.set_boot(str(out), "52:54:00:20:02:23", "local")
    argv = ["reinstall", example_path("cluster.toml"), str(out), "node2", "--state",
            state_dir, "--url", f"http://127.0.0.1:{free_port()}"]
    assert cli.main(argv) == 0
    assert "no master answered" in capsys.readouterr().out
    assert handoff.boot_form(str(out), "52:54:00:20:02:23") == "install"
    with Server(cluster, str(out), state_dir) as s:
        assert s.state.node("node2").state == "pending"


def test_reinstall_of_an_unknown_node_changes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    render_outdir(str(out))
    argv = ["reinstall", example_path("cluster.toml"), str(out), "node9", "--state",
            str(tmp_path / "state")]
    assert cli.main(argv) == 1
    assert "no node 'node9'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "state")


@pytest.mark.parametrize("call, said", [
    (lambda url: status.reload(url, "t"),
     "broke off after it was sent (ConnectionError): serve may have taken the new MAC"),
    (lambda url: status.reinstall(url, "node2", "t"),
     "reinstall of node2 through http://127.0.0.1:"),
])
def test_a_request_cut_off_after_it_was_sent_is_not_taken_for_no_serve(call, said):
    """Unreachable (reload's CLI puts the file and OUTDIR back, reinstall's writes the state
    database itself) only if no connection was made; a connection that closes once the
    request went out may have reached serve."""
    import threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def hang_up():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()
    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    with pytest.raises(InstallerError) as e:
        call(url)
    assert not isinstance(e.value, status.Unreachable)
    assert said in str(e.value) and "check ganeti-installer status" in str(e.value)
    thread.join(5)
    listener.close()                        # nothing listens there now: nothing was sent
    with pytest.raises(status.Unreachable):
        call(url)
