"""`POST /api/v1/reload` (issue 16, `rebuild --mac`): the running serve takes a node's new
MAC from its cluster file (rewritten and rendered again into OUTDIR by rebuild), with the
real aiohttp application on 127.0.0.1. A stranger, a node's token, a file that no longer
validates or that changed in more than a MAC, an OUTDIR not rendered for it: a JSON refusal
and nothing changed (state, PXE tree, plans, dnsmasq)."""

from __future__ import annotations

import asyncio
import os

import pytest
import requests
import tomli_w

from installer.build import render
from installer.cluster import config, files, layout, macedit
from installer.master import dhcp, handoff
from tests.conftest import example_data
from tests.serving import Server, render_outdir
from tests.test_state import joined as joined_node

pytestmark = pytest.mark.integration

OLD, NEW = "52:54:00:20:02:23", "52:54:00:20:02:99"      # node2's


@pytest.fixture
def served(tmp_path):
    """serve on a real cluster file; its dnsmasq a fake that counts restarts."""
    path = tmp_path / "cluster.toml"
    path.write_text(tomli_w.dumps(example_data()))
    out = tmp_path / "out"
    render_outdir(str(out))
    with Server(config.load(str(path)), str(out), str(tmp_path / "state")) as s:
        s.opts.cluster_file = str(path)
        s.service.reload.dnsmasq = FakeDnsmasq(layout.active_dnsmasq_config(str(out)))
        yield s, path, out


class FakeDnsmasq:
    """Stale as the real one is: its configuration changed since it started."""

    def __init__(self, conf: str):
        self.conf, self.restarts = conf, 0
        self.loaded = files.read_bytes(conf)

    def stale(self) -> bool:
        return files.read_bytes(self.conf) != self.loaded

    async def restart(self) -> None:
        self.restarts += 1
        self.loaded = files.read_bytes(self.conf)


def admin(server) -> dict:
    return {"Authorization": f"Bearer {server.service.admin_token}"}


def reload(server, headers=None) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/reload", headers=headers or {}, timeout=30)


def tree(out) -> dict[str, bytes]:
    found = {}
    for top in (layout.PLANS, layout.TFTP, "dnsmasq"):
        for root, _, names in os.walk(out / top):
            for name in names:
                with open(os.path.join(root, name), "rb") as f:
                    found[os.path.relpath(os.path.join(root, name), out)] = f.read()
    return found


def new_mac(path, out, name="node2", mac=NEW) -> None:
    """What rebuild --mac does before it asks serve: the file, then OUTDIR rendered again."""
    change = macedit.prepare(str(path), name, mac)
    macedit.write(change)
    render.render_in_place(change.cluster, str(out), [name])


def unchanged(server, path, out, before) -> None:
    assert (server.snapshot(), path.read_bytes(), tree(out)) == before
    assert server.service.reload.dnsmasq.restarts == 0


def test_a_new_mac_is_taken_and_the_old_one_forgotten(served):
    server, path, out = served
    joined_node(server.state, "node1")
    handoff.set_boot(str(out), "52:54:00:20:02:22", "local")
    token = server.state.node("node2").token
    others = {rel: data for rel, data in tree(out).items()
              if rel.startswith(("plans/node1", "plans/node3"))}
    new_mac(path, out)
    assert {rel: tree(out)[rel] for rel in others} == others    # theirs as render made them
    assert handoff.boot_form(str(out), "52:54:00:20:02:22") == "local"    # render left it
    assert server.state.node("node2").mac == OLD                         # not taken yet
    resp = reload(server, admin(server))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"file": str(path), "dnsmasq": "restarted", "changed": [
        {"node": "node2", "key": "nodes[1].mac", "old": OLD, "new": NEW}]}
    node = server.state.node("node2")
    assert (node.mac, node.state) == (NEW, "pending") and node.token != token
    assert server.state.node("node1").state == "joined"
    assert handoff.boot_form(str(out), "52:54:00:20:02:22") == "local"    # kept
    assert handoff.boot_form(str(out), NEW) == "install"
    assert not os.path.exists(out / "tftp/entries" / OLD.replace(":", "-"))
    assert not any(os.path.exists(out / rel) for rel in layout.active_paths(OLD).values())
    assert f"dhcp-host={NEW},node2" in (out / "dnsmasq/dnsmasq.conf").read_text()
    assert OLD not in (out / "dnsmasq/dnsmasq.conf").read_text()
    assert server.service.reload.dnsmasq.restarts == 1
    plan = requests.get(f"{server.url}/api/v1/plans/{NEW.replace(':', '-')}", timeout=10)
    assert plan.status_code == 200 and plan.json()["node"]["mac"] == NEW
    assert plan.json()["report"]["token"] == server.state.node("node2").token
    gone = requests.get(f"{server.url}/api/v1/plans/{OLD.replace(':', '-')}", timeout=10)
    assert gone.status_code == 404 and "no node with MAC" in gone.json()["error"]
    again = reload(server, admin(server))            # nothing new: nothing done
    assert again.json() == {"file": str(path), "dnsmasq": "unchanged", "changed": []}


def test_a_stranger_or_a_node_gets_no_reload_and_nothing_changes(served):
    server, path, out = served
    new_mac(path, out)
    before = (server.snapshot(), path.read_bytes(), tree(out))
    resp = reload(server)                   # from loopback too: the admin token
    assert resp.status_code == 401 and "admin token" in resp.json()["error"]
    node_token = server.state.node("node1").token
    resp = reload(server, {"Authorization": f"Bearer {node_token}"})
    assert resp.status_code == 403 and "wrong admin token" in resp.json()["error"]
    resp = requests.get(f"{server.url}/api/v1/reload", headers=admin(server), timeout=10)
    assert resp.status_code in (404, 405)
    unchanged(server, path, out, before)


def test_a_file_that_no_longer_validates_is_refused_and_serve_goes_on(served):
    server, path, out = served
    path.write_text(path.read_text().replace(OLD, "52:54:00:20:02:22"))     # node1's
    before = (server.snapshot(), path.read_bytes(), tree(out))
    resp = reload(server, admin(server))
    assert resp.status_code == 422
    said = resp.json()["error"]
    assert said.startswith(f"{path} does not validate (") and "nodes[1].mac" in said
    assert "serve goes on with the cluster file it started with" in said
    unchanged(server, path, out, before)
    assert server.state.node("node2").mac == OLD


def test_an_outdir_not_rendered_for_the_new_mac_is_refused(served):
    server, path, out = served
    macedit.write(macedit.prepare(str(path), "node2", NEW))
    before = (server.snapshot(), path.read_bytes(), tree(out))
    resp = reload(server, admin(server))
    assert resp.status_code == 409
    assert resp.json()["error"] == (f"{out} is not rendered for node2's new MAC {NEW} in "
                                    f"{path}: rebuild --mac renders it; by hand, run "
                                    "ganeti-installer render and restart serve")
    unchanged(server, path, out, before)


def test_a_change_beyond_a_mac_needs_a_restart(served):
    server, path, out = served
    path.write_text(path.read_text().replace("192.168.20.223", "192.168.20.229"))
    before = (server.snapshot(), path.read_bytes(), tree(out))
    resp = reload(server, admin(server))
    assert resp.status_code == 409
    assert "changed in more than node MACs" in resp.json()["error"]
    assert "restart serve" in resp.json()["error"]
    unchanged(server, path, out, before)


def test_a_restart_of_dnsmasq_is_not_taken_for_its_death(tmp_path):
    """serve stops when dnsmasq exits; a restart for a new MAC is not an exit."""
    render_outdir(str(tmp_path / "out"))
    daemon = dhcp.Dnsmasq(str(tmp_path / "out"), str(tmp_path), "eth0")

    class Proc:
        def __init__(self):
            self.returncode = None
            self.done = asyncio.Event()

        async def wait(self):
            await self.done.wait()
            return self.returncode

        def end(self, code):
            self.returncode = code
            self.done.set()

    async def play():
        daemon.proc = first = Proc()

        async def stop():
            daemon.proc.end(0)

        async def start():
            await asyncio.sleep(0.01)
            daemon.proc = Proc()
        daemon.stop, daemon.start = stop, start
        waiter = asyncio.create_task(daemon.exited())
        await daemon.restart()
        await asyncio.sleep(0.01)
        assert not waiter.done() and daemon.proc is not first
        daemon.proc.end(3)
        return await asyncio.wait_for(waiter, 5)

    assert asyncio.run(play()) == 3


def test_swapped_macs_are_taken_and_neither_forgotten(served):
    """node1's and node2's MACs swapped in a hand-edited file (rendered for both): each old
    MAC is the other node's new one, so its entries stay."""
    server, path, out = served
    a, b = "52:54:00:20:02:22", OLD
    text = path.read_text().replace(a, "@@SWAP@@").replace(b, a)
    path.write_text(text.replace("@@SWAP@@", b))
    render.render_in_place(config.load(str(path)), str(out), ["node1", "node2"])
    resp = reload(server, admin(server))
    assert resp.status_code == 200, resp.text
    assert {(m["node"], m["new"]) for m in resp.json()["changed"]} == {("node1", b),
                                                                      ("node2", a)}
    assert (server.state.node("node1").mac, server.state.node("node2").mac) == (b, a)
    assert handoff.boot_form(str(out), a) == handoff.boot_form(str(out), b) == "install"
    for mac, name in ((a, "node2"), (b, "node1")):
        plan = requests.get(f"{server.url}/api/v1/plans/{mac.replace(':', '-')}", timeout=10)
        assert plan.status_code == 200 and plan.json()["node"]["name"] == name
    again = reload(server, admin(server))
    assert again.json()["changed"] == []
