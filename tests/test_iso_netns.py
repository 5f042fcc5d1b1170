"""ISOs to every node over a real multicast LAN: network namespaces on one bridge, a real
`uftpd` in each receiver namespace, `uftp` in the sender's, driven through the real CLI and
serve's API. Each receiver's /iso is a directory of this test (the namespaces share the file
system). Files are a few MiB, so the whole module takes seconds."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from installer import cli
from installer.master import isodist, isoservice, multicast, statedir
from installer.master.isos import Iso, NodePaths
from installer.master.nodeshell import NetnsShell, Shell
from tests.isolan import Lan
from tests.serving import Server, render_outdir
from tests.test_state import joined

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("uftp") or not shutil.which("uftpd"),
                                 reason="uftp is missing: run ./build.sh --deps-only")]
NODES = ["node1", "node2", "node3"]         # the example cluster's


@pytest.fixture
def lan(tmp_path):
    with Lan(tmp_path / "lan", hosts=3) as lan:
        print(f"namespace LAN set up in {lan.setup_seconds:.2f} s")
        yield lan


def shells_of(lan: Lan, names, **override) -> list[Shell]:
    by_name = dict(zip(NODES, lan.receivers, strict=True))
    return [override.get(n) or NetnsShell(n, by_name[n].address, by_name[n].root,
                                          netns=by_name[n].netns) for n in names]


def sender_of(lan: Lan, rate_mbps: int = multicast.RATE_MBPS):
    prefix = ("ip", "netns", "exec", lan.sender.netns)
    return lambda shells: multicast.Options(lan.sender.address, rate_mbps=rate_mbps,
                                            prefix=prefix)


@pytest.fixture
def served(tmp_path, lan):
    """serve with every node joined, its ISO job reaching the namespaces."""
    cluster = render_outdir(str(tmp_path / "out"))
    state_dir = str(tmp_path / "state")
    with Server(cluster, str(tmp_path / "out"), state_dir) as server:
        for name in NODES:
            joined(server.state, name)
        server.service.isos = isoservice.IsoService(
            server.state, state_dir, cluster, shells=lambda names: shells_of(lan, names),
            sender=sender_of(lan), log=server.log.append)
        yield server, state_dir


def iso_file(tmp_path: Path, name: str, mib: int = 4) -> tuple[Path, str]:
    data = os.urandom(mib << 20)
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def sha_at(path: str) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if os.path.exists(path) else None


def iso_cli(server, state_dir, *args) -> int:
    return cli.main(["iso", *args, "--url", server.url, "--state", state_dir])


def test_iso_add_lands_whole_on_every_receiver_by_multicast(served, lan, tmp_path, capsys):
    server, state_dir = served
    path, sha = iso_file(tmp_path, "debian-12.iso")
    start = time.monotonic()
    assert iso_cli(server, state_dir, "add", str(path)) == 0
    print(f"iso add to 3 receivers: {time.monotonic() - start:.2f} s")
    for host in lan.receivers:
        assert sha_at(f"{host.root}/debian-12.iso") == sha
        assert os.listdir(f"{host.root}/.incoming") == []       # no temporary left
    out = capsys.readouterr().out
    assert out.count("by multicast") == 3, out
    status = requests.get(f"{server.url}/api/v1/isos", timeout=10).json()
    assert [i["name"] for i in status] == ["debian-12.iso"]
    assert {n: s["state"] for n, s in status[0]["nodes"].items()} == \
        dict.fromkeys(NODES, "present")
    assert cli.main(["status", "--url", server.url]) == 0
    table = capsys.readouterr().out
    assert all(re.search(rf"^debian-12\.iso +{n} +present ", table, re.M) for n in NODES), \
        table


class Dies(NetnsShell):
    """A node that goes down once `down` is set: its commands fail as SSH's would."""
    down = threading.Event()

    def run(self, command, **kwargs):
        if self.down.is_set():
            raise isodist.IsoError(f"{self.node} ({self.address}) is unreachable: "
                                   "Connection timed out")
        return super().run(command, **kwargs)


def kill_receiver_midway(host, incoming: str, down: threading.Event) -> None:
    """Once part of the ISO has arrived on the node, its uftpd dies and the node is down."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(incoming) and os.path.getsize(incoming) > 256 << 10:
            break
        time.sleep(0.02)
    down.set()
    pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        os.kill(int(pid), 9)


def test_a_receiver_killed_midway_keeps_no_partial_file_and_the_next_add_completes_it(
        served, lan, tmp_path, capsys):
    server, state_dir = served
    node2 = lan.receivers[1]
    dying = Dies("node2", node2.address, node2.root, netns=node2.netns)
    svc = server.service.isos
    svc.shells = lambda names: shells_of(lan, names, node2=dying)
    svc.sender = sender_of(lan, rate_mbps=16)       # 4 MiB in about 2 s: time to kill
    path, sha = iso_file(tmp_path, "slow.iso")
    paths = NodePaths(node2.root, "slow.iso")
    killer = threading.Thread(target=kill_receiver_midway, args=(node2, paths.temp,
                                                                  Dies.down))
    killer.start()
    assert iso_cli(server, state_dir, "add", str(path)) == 1
    killer.join()
    out = capsys.readouterr()
    assert "node2: FAILED" in out.out and "unreachable" in out.out, out
    assert not os.path.exists(paths.final)              # never half an ISO at its name
    for host in (lan.receivers[0], lan.receivers[2]):
        assert sha_at(f"{host.root}/slow.iso") == sha
    states = {n: s["state"] for n, s in server.state.isos()[0]["nodes"].items()}
    assert states == {"node1": "present", "node2": "failed", "node3": "present"}

    Dies.down.clear()                                   # node2 is back
    svc.sender = sender_of(lan)
    assert iso_cli(server, state_dir, "add", str(path)) == 0
    out = capsys.readouterr().out
    assert sha_at(paths.final) == sha and os.listdir(paths.incoming) == []
    assert out.count("was there already") == 2 and "node2: ok" in out, out


class Silent(NetnsShell):
    """A node whose receiver never hears the sender (as behind a firewall dropping its
    port): a real uftpd, listening on another port."""

    def spawn(self, command, log):
        command = list(command)
        command[command.index("-p") + 1] = "1099"
        return super().spawn(command, log)


def test_a_node_multicast_misses_gets_the_ssh_copy_fallback(served, lan, tmp_path, capsys):
    server, state_dir = served
    node3 = lan.receivers[2]
    silent = Silent("node3", node3.address, node3.root, netns=node3.netns)
    server.service.isos.shells = lambda names: shells_of(lan, names, node3=silent)
    path, sha = iso_file(tmp_path, "rescue.iso", mib=2)
    assert iso_cli(server, state_dir, "add", str(path)) == 0
    out = capsys.readouterr().out
    assert "node3: ok" in out and "fallback, as multicast missed it" in out, out
    assert out.count("by multicast") == 2
    assert all(sha_at(f"{h.root}/rescue.iso") == sha for h in lan.receivers)


def test_copy_mode_sends_one_plain_copy_per_node(served, lan, tmp_path, capsys):
    server, state_dir = served
    path, sha = iso_file(tmp_path, "plain.iso", mib=1)
    assert iso_cli(server, state_dir, "add", "--copy", str(path)) == 0
    assert capsys.readouterr().out.count("by SSH copy") == 3
    assert all(sha_at(f"{h.root}/plain.iso") == sha for h in lan.receivers)
    assert iso_cli(server, state_dir, "remove", "plain.iso") == 0
    assert not any(os.path.exists(f"{h.root}/plain.iso") for h in lan.receivers)
    assert server.state.isos() == []
    assert not os.path.exists(os.path.join(state_dir, "isos", "plain.iso"))
    assert statedir.admin_token(state_dir, create=False)


def test_stopping_serve_ends_a_running_iso_add_and_leaves_no_partial_file(served, lan,
                                                                          tmp_path):
    server, _ = served
    svc = server.service.isos
    svc.sender = sender_of(lan, rate_mbps=8)        # 4 MiB in about 4 s
    path, _ = iso_file(tmp_path, "stop.iso")
    job = threading.Thread(target=svc.add, args=([str(path)],))
    job.start()
    temp = NodePaths(lan.receivers[0].root, "stop.iso").temp
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (os.path.exists(temp) and
                                               os.path.getsize(temp) > 0):
        time.sleep(0.02)
    start = time.monotonic()
    svc.stop()
    job.join(30)
    print(f"iso add ended {time.monotonic() - start:.2f} s after the stop")
    assert not job.is_alive() and time.monotonic() - start < 10
    for host in lan.receivers:
        assert not os.path.exists(f"{host.root}/stop.iso")
        assert os.listdir(f"{host.root}/.incoming") == []
    nodes = server.state.isos()[0]["nodes"]
    assert all(n["state"] == "failed" and "serve stopped" in n["message"]
               for n in nodes.values()), nodes


def test_serve_on_the_master_node_receives_its_own_multicast(lan, tmp_path):
    """The default set-up: serve runs on the master, which is a joined node too."""
    path, sha = iso_file(tmp_path, "self.iso", mib=2)
    kept = Iso("self.iso", sha, path.stat().st_size, str(path))
    hosts = [lan.sender] + lan.receivers
    shells = [NetnsShell(h.name, h.address, h.root, netns=h.netns) for h in hosts]
    results = isodist.distribute(kept, shells, multicast_opts=sender_of(lan)(shells),
                                 workdir=str(tmp_path), record=lambda *a: None)
    assert [r.message.endswith("by multicast") for r in results] == [True] * 4, results
    assert all(sha_at(f"{h.root}/self.iso") == sha for h in hosts)
