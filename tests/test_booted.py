"""The installed node's boot report: what the install leaves on the node, and the report the
node sends at boot (to a real HTTP server on loopback): undelivered install reports first,
then "booted" with the node's host keys. The VM install test shows it from a booted node."""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from installer.agent import booted, client
from tests.vm.standin import StandinMaster

# Host keys by ssh-keygen; the boot report runs in a Python child process.
pytestmark = pytest.mark.integration


@pytest.fixture
def root(tmp_path):
    ssh = tmp_path / "etc/ssh"
    ssh.mkdir(parents=True)
    for kind in ("rsa", "ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "root@node2",
                        "-f", str(ssh / f"ssh_host_{kind}_key")], check=True)
    return tmp_path


@pytest.fixture
def master(tmp_path):
    m = StandinMaster(tmp_path, "http://unused")
    m.server.server_close()
    m.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), m._handler())
    threading.Thread(target=m.server.serve_forever, daemon=True).start()
    m.url = f"http://127.0.0.1:{m.server.server_address[1]}"
    yield m
    m.server.shutdown()
    m.server.server_close()


def test_install_leaves_modules_secret_conf_and_enabled_unit(root):
    booted.install(str(root), "http://10.99.0.1:8080/api/v1/nodes/node2", "s3cret")
    conf = root / booted.REPORT_CONF
    assert json.loads(conf.read_text()) == {"url": "http://10.99.0.1:8080/api/v1/nodes/node2",
                                            "token": "s3cret"}
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    unit = root / "etc/systemd/system" / booted.UNIT_NAME
    assert "ExecStart=/usr/bin/python3 -m installer.agent.booted" in unit.read_text()
    link = root / "etc/systemd/system/multi-user.target.wants" / booted.UNIT_NAME
    assert os.readlink(link) == f"/etc/systemd/system/{booted.UNIT_NAME}"
    lib = root / booted.LIB / "installer"
    assert (lib / "agent/booted.py").is_file() and (lib / "agent/client.py").is_file()
    assert not (lib / "config.py").exists()        # the agent's modules only
    booted.install(str(root), "http://10.99.0.1:8080/api/v1/nodes/node2", "s3cret")  # again


def test_boot_report_sends_what_the_install_left_then_booted(root, master):
    url = f"{master.url}/api/v1/nodes/node2"
    booted.install(str(root), url, "s3cret")
    # The install's final report never reached the master: it waits in the outbox.
    left = client.Reporter(url, "s3cret", attempts=1, sleep=lambda s: None)
    left.attach(str(root))
    left.outbox = [{"step": "install", "status": "installed", "final": True},
                   {"step": "boot", "status": "booted", "final": True, "stale": True}]
    left._save()
    env = dict(os.environ, PYTHONPATH=str(root / booted.LIB))
    code = (f"import installer.agent.booted as b, sys; assert b.__file__.startswith("
            f"{str(root)!r}); sys.exit(0 if b.report({str(root)!r}) else 1)")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=root)
    assert master.events("node2") == [("install", "installed"), ("boot", "booted")]
    sent = master.reports[-1][1]
    assert "stale" not in sent
    pub = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    assert sent["host_keys"]["ed25519"] == f"{pub[0]} {pub[1]}"
    assert set(sent["host_keys"]) == {"rsa", "ed25519"}
    assert json.loads((root / client.OUTBOX).read_text())["events"] == []


def test_master_down_keeps_one_boot_report_for_the_next_try(root, tmp_path):
    booted.install(str(root), "http://127.0.0.1:9/api/v1/nodes/node2", None)
    for _ in range(2):
        assert booted.report(str(root), attempts=1, sleep=lambda s: None) is False
    kept = json.loads((root / client.OUTBOX).read_text())["events"]
    assert [(e["step"], e["status"]) for e in kept] == [("boot", "booted")]
