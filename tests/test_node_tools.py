"""Rendered files read by the real Debian tools that will read them on the node."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from installer.build import render
from tests.conftest import load_example

pytestmark = pytest.mark.integration
EXAMPLES = ["cluster.toml", "paper-wheezy.toml"]


def _plans(example):
    return render.render_plans(load_example(example))


@pytest.mark.parametrize("example", EXAMPLES)
def test_debconf_selections_pass_checkonly(example, tmp_path):
    if not shutil.which("debconf-set-selections"):
        pytest.fail("debconf-set-selections missing: ./build.sh --deps-only installs debconf")
    for name, plan in _plans(example).items():
        path = tmp_path / f"{name}.cfg"
        path.write_text(plan["debconf"])
        run = subprocess.run(["debconf-set-selections", "--checkonly", str(path)],
                             capture_output=True, text=True)
        assert run.returncode == 0 and run.stderr == "", (name, run.stderr)


def test_checkonly_catches_a_broken_selection(tmp_path):
    # The check above can fail: a line without a type is refused.
    path = tmp_path / "bad.cfg"
    path.write_text("tzdata tzdata/Areas\n")
    run = subprocess.run(["debconf-set-selections", "--checkonly", str(path)],
                         capture_output=True, text=True)
    assert run.returncode != 0 or run.stderr


def _ifquery(path, *args):
    run = subprocess.run(["ifquery", "-i", str(path), *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("example", EXAMPLES)
def test_interfaces_parse_with_ifquery(example, tmp_path):
    if not shutil.which("ifquery"):
        pytest.fail("ifquery missing: ./build.sh --deps-only installs ifupdown")
    cluster = load_example(example)
    for node in cluster.nodes:
        files = {f["path"]: f["content"] for f in _plans(example)[node.name]["files"]}
        path = tmp_path / f"interfaces.{node.name}"
        path.write_text(files["/etc/network/interfaces"])
        auto = _ifquery(path, "--list", "--allow=auto").split()
        assert auto == ["lo", "eth0", "br-man", "br-public"]
        man = dict(ln.split(": ", 1) for ln in _ifquery(path, "br-man").splitlines())
        assert man["bridge_ports"] == "eth0.100"
        assert man["address"] == node.ip and man["netmask"] == "255.255.255.0"
        assert man["gateway"] == "192.168.20.1"
        assert man["bridge_stp"] == "off" and man["bridge_fd"] == "0"
        public = dict(ln.split(": ", 1) for ln in _ifquery(path, "br-public").splitlines())
        assert public["bridge_ports"] == "eth0.200"
        assert "address" not in public
