"""Shared fixtures: the bundled examples, loaded with a fixed mirror so that rendered files
do not depend on the apt sources of the machine running the tests."""

from __future__ import annotations

import copy
import os
import pty
import sqlite3
import subprocess
import threading
import tomllib

import pytest

from installer.cluster import config
from installer.cluster.mirror import HostMirror
from installer.master.state import open_state

from .vm.background import THREAD_PREFIX

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
TEST_MIRROR = HostMirror("http://mirror.test/debian", "http://mirror.test/debian-security")


def fixed_mirror() -> HostMirror:
    return TEST_MIRROR


def example_path(name: str) -> str:
    return os.path.join(EXAMPLES, name)


def example_data(name: str = "cluster.toml") -> dict:
    with open(example_path(name), "rb") as f:
        return tomllib.load(f)


def load_example(name: str = "cluster.toml") -> config.Cluster:
    return config.load(example_path(name), host_mirror_fn=fixed_mirror)


def cluster_from(data: dict, path: str = "test.toml") -> config.Cluster:
    return config.parse(copy.deepcopy(data), path, host_mirror_fn=fixed_mirror)


DROP = object()     # set_key's value that removes the key


def set_key(data: dict, key: str, value) -> dict:
    """data with the dotted key (nodes[1].mac) set, or removed when value is DROP."""
    node, parts = data, key.split(".")
    for part in parts[:-1]:
        if "[" in part:
            name, idx = part[:-1].split("[")
            node = node[name][int(idx)]
        else:
            node = node.setdefault(part, {})
    if value is DROP:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return data


@pytest.fixture
def bookworm():
    return load_example("cluster.toml")


# Every way a test could start another program. A unit test that reaches one fails (curtin's
# tests/unittests/helpers.py idea): it would run a real tool by accident, or depend on one.
SPAWNERS = [(subprocess, "Popen"), (os, "system"), (os, "posix_spawn"), (os, "posix_spawnp"),
            (os, "fork"), (os, "forkpty"), (pty, "fork")] + \
    [(os, name) for name in ("execl", "execle", "execlp", "execlpe", "execv", "execve",
                             "execvp", "execvpe")]
REAL_TOOLS_MARKS = ("integration", "vm", "allow_subprocess")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_subprocess: a unit test that may run a harmless real program "
        "(ssh-keygen, a Python child); anything needing root or the network is integration")


def _refuse(test: str, what: str, real):
    def refused(*args, **kwargs):
        # The guard is process-wide, but a background install (tests/vm/background.py) runs
        # real tools in its own thread beside whatever test is running: that is not the test.
        if threading.current_thread().name.startswith(THREAD_PREFIX):
            return real(*args, **kwargs)
        argv = args[0] if args else kwargs.get("args", "")
        raise AssertionError(
            f"{test} started a real program through {what}({argv!r}). Unit tests run none: "
            f"give the code a fake (a Runner, a subprocess.run stand-in), or mark the test "
            f"@pytest.mark.integration if it means to run real tools (or "
            f"@pytest.mark.allow_subprocess for a harmless one such as ssh-keygen)")
    return refused


@pytest.fixture(autouse=True)
def no_stray_subprocess(request, monkeypatch):
    """Tests not marked integration, vm or allow_subprocess cannot start a program."""
    if not any(request.node.get_closest_marker(m) for m in REAL_TOOLS_MARKS):
        for module, name in SPAWNERS:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _refuse(request.node.nodeid,
                                                          f"{module.__name__}.{name}",
                                                          getattr(module, name)))
    yield


class CommitFails:
    """The writing connection, whose COMMIT fails as on a full or failing disk."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def execute(self, sql: str, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


@pytest.fixture
def state(tmp_path, bookworm):
    """The master's state database, its nodes those of the bundled example."""
    s = open_state(str(tmp_path / "state"))
    s.sync_nodes(bookworm)
    yield s
    s.close()


@pytest.fixture
def wheezy():
    return load_example("paper-wheezy.toml")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """`ganeti-installer build` of the bookworm example with the host's real mirror.

    Images come from the cache that ./build.sh filled (seconds); on a cold cache this
    builds them (minutes)."""
    from installer.build import builder as build
    outdir = tmp_path_factory.mktemp("build") / "out"
    cluster = config.load(example_path("cluster.toml"))
    summary = build.build(cluster, str(outdir), progress=lambda msg: print(msg, flush=True))
    return outdir, summary


# Modules whose install runs in the background beside the other VM tests
# (tests/vm/background.py); they run last.
BACKGROUND = ("test_debootstrap_vm.py",)


def pytest_collection_modifyitems(config, items):
    """Unit and integration tests first, then the VM tests, then those that wait for a
    background install (stable: the order within each group is kept). The background
    install starts with the first VM test, so no unit test runs beside it: unit tests patch
    process-wide things (subprocess.run, open, the working directory) that its thread uses."""
    def group(item) -> int:
        if item.path.name in BACKGROUND:
            return 2
        return 1 if item.get_closest_marker("vm") else 0
    items.sort(key=group)


@pytest.fixture(scope="module", autouse=True)
def _background_starts_with_the_vm_tests(request):
    """Module-scoped and autouse, so it runs before a VM module's own slow fixtures."""
    if request.node.get_closest_marker("vm"):
        request.getfixturevalue("background_installs")


@pytest.fixture(scope="session")
def background_installs(request, tmp_path_factory):
    """{name: Job} for the background installs the selected tests need, started now."""
    jobs = {}
    if any(item.path.name == "test_debootstrap_vm.py" for item in request.session.items):
        from .test_debootstrap_vm import start_install
        jobs["debootstrap"] = start_install(request.getfixturevalue("built"),
                                            tmp_path_factory.mktemp("debootstrap"))
    yield jobs
    for job in jobs.values():
        job.cancel()


@pytest.fixture(scope="session")
def lan(built, tmp_path_factory):
    """The office network of tests/vm/office.py, shared by the VM tests that need VLANs:
    each VM takes its own trunk port."""
    from .vm.office import office
    outdir, _ = built
    work = tmp_path_factory.mktemp("office")
    with office(work, outdir, config.load(example_path("cluster.toml"))) as o:
        yield o
