"""`python -m installer.agent --dry-run --plan FILE` writes nothing at all and prints the exact
commands an install would run.

Proved three ways: every function that writes a file (or sets the clock) raises while the dry
run runs; the tree holding the plan, the target, the working directory and HOME is the same
byte for byte afterwards; and the master (a loopback server) is sent no report. The disk is a
fake of the read-only tools (tests/fake_node.py), as in test_agent_storage."""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import ClassVar

import pytest

from installer.agent import __main__ as agent_main
from installer.agent import disks, files, install
from installer.agent.disks import Disk
from installer.build import render
from tests.conftest import load_example
from tests.fake_node import DiskState, FakeNode, GiB, marker

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WRITERS = [(os, n) for n in ("replace", "rename", "remove", "unlink", "rmdir", "mkdir",
                             "makedirs", "symlink", "link", "chmod", "chown", "truncate",
                             "utime", "sync", "mkfifo", "mknod")] + \
    [(shutil, n) for n in ("copyfile", "copy", "copy2", "copytree", "rmtree", "move")] + \
    [(tempfile, n) for n in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile")] + \
    [(files, "write_atomically"), (time, "clock_settime"), (fcntl, "ioctl")]


class Master(http.server.BaseHTTPRequestHandler):
    """Serves the OS image's checksum; notes every request, so a report would be seen."""

    requests: ClassVar[list] = []

    def do_GET(self):
        self.requests.append(("GET", self.path))
        body = f"{'ab' * 32}  bookworm.ext4.zst\n".encode()
        self.send_response(200 if self.path.endswith(".sha256") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.requests.append(("POST", self.path))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def master():
    Master.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Master)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Master.requests
    server.shutdown()
    server.server_close()


def snapshot(root) -> dict:
    """Every path under root with its type, mode, times and content."""
    out = {}
    for where, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(where, name)
            st = os.lstat(path)
            if os.path.islink(path):
                what = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            else:
                what = "dir"
            out[path] = (st.st_mode, st.st_mtime_ns, st.st_size, what)
    return out


def refuse_writes(monkeypatch):
    def refused(name):
        def call(*args, **kwargs):
            raise AssertionError(f"the dry run called {name}{args!r}")
        return call

    for module, name in WRITERS:
        monkeypatch.setattr(module, name, refused(f"{module.__name__}.{name}"))
    real_open, real_os_open = builtins.open, os.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise AssertionError(f"the dry run opened {file} with mode {mode!r}")
        return real_open(file, mode, *args, **kwargs)

    def read_only_os_open(path, flags, *args, **kwargs):
        if flags & WRITE_FLAGS:
            raise AssertionError(f"the dry run opened {path} for writing")
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(os, "open", read_only_os_open)


@pytest.fixture
def node(tmp_path, master, monkeypatch):
    """(plan file, target, the fake node) with the master on loopback, cwd and HOME fresh."""
    url, _ = master
    plan = render.render_plans(load_example())["node1"]
    image = f"{url}/images/bookworm.ext4.zst"
    plan["install"]["image"].update(url=image, checksum_url=f"{image}.sha256")
    plan["report"] = {"url": f"{url}/api/v1/nodes/node1",
                      "boot_url": f"{url}/api/v1/nodes/node1", "token": "s3cret"}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    target = tmp_path / "target"
    (target / "etc/default").mkdir(parents=True)
    (target / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX=""\n')
    (target / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    for name in ("cwd", "home"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    import installer.agent.install  # noqa: F401  (imported now: no .pyc written later)
    fake = FakeNode(DiskState("/dev/sda"), free=(20973568, 104857600))
    monkeypatch.setattr(subprocess, "run", fake.run)
    monkeypatch.setattr(disks, "list_disks", lambda: [Disk("/dev/sda", 500 * GiB, bus="ata")])
    monkeypatch.setattr(disks, "boot_medium_disks", lambda: set())
    monkeypatch.setattr(disks, "root_disk", lambda found: found[0])
    monkeypatch.setattr(install, "local_macs", lambda: [plan["node"]["mac"]])
    return tmp_path / "plan.json", target, fake


def dry_run(tmp_path, monkeypatch, capsys, argv) -> tuple[int, list[str], list[str]]:
    """Exit code, commands and files the dry run printed; the tree checked unchanged."""
    before = snapshot(tmp_path)
    with monkeypatch.context() as m:
        refuse_writes(m)
        code = agent_main.main(argv)
    out = capsys.readouterr().out
    assert snapshot(tmp_path) == before
    assert "error" not in out, out
    commands = out.split("commands the install would run:\n")[1].split("files the install")[0]
    written = out.split("files the install would write:\n")[1]
    return code, [line[2:] for line in commands.splitlines()], \
        [line[2:] for line in written.splitlines()]


def test_a_dry_run_writes_nothing_and_lists_every_command(node, master, tmp_path, monkeypatch,
                                                         capsys):
    plan_file, target, fake = node
    code, commands, written = dry_run(tmp_path, monkeypatch, capsys,
                                      ["--dry-run", "--plan", str(plan_file),
                                       "--target", str(target)])
    assert code == 0
    t = str(target)
    guid = marker(json.loads(plan_file.read_text()))
    assert commands[:12] == [
        (f"sgdisk --clear --disk-guid={guid} --new=1:0:+1024K --typecode=1:EF02 "
         "--change-name=1:gi-bios-grub "
         "--new=2:0:+524288K --typecode=2:EF00 --change-name=2:gi-esp --new=3:0:+2097152K "
         "--typecode=3:8200 --change-name=3:gi-swap --new=4:0:+10485760K --typecode=4:8300 "
         "--change-name=4:gi-root --new=5:0:0 --typecode=5:8E00 --change-name=5:gi-pv0 "
         "/dev/sda"),
        "partx --update /dev/sda", "udevadm settle",
        "pvcreate --force --force --yes /dev/sda5", "vgcreate ganeti /dev/sda5",
        "mkfs.vfat -F 32 -n EFI /dev/sda2", "mkswap --label swap /dev/sda3",
        "mkfs.ext4 -F -q -L root /dev/sda4",
        f"mount /dev/sda4 {t}/", f"mount /dev/sda2 {t}/boot/efi",
        f"umount --recursive {t}", "zstd -dc | dd of=/dev/sda4"]
    for expected in ("tune2fs -U random /dev/sda4", f"chroot {t} debconf-set-selections",
                     f"chroot {t} chpasswd --encrypted", f"chroot {t} ssh-keygen -A",
                     f"chroot {t} grub-bios-setup --directory=/boot/grub/i386-pc /dev/sda",
                     "pre-reboot.d/50-show-storage"):
        assert any(c.startswith(expected) for c in commands), expected
    assert any(c.startswith(f"chroot {t} apt-get install --yes") and " ganeti " in f"{c} "
               for c in commands)
    for path in ("etc/hostname", "etc/network/interfaces", "root/.ssh/authorized_keys",
                 "etc/fstab", "etc/machine-id", "usr/sbin/policy-rc.d", "boot/grub/grub.cfg",
                 "var/lib/ganeti-installer/report.json"):
        assert f"{t}/{path}" in written, path
    _, requests = master
    assert requests == [("GET", "/images/bookworm.ext4.zst.sha256")]     # no report
    assert all(argv[0] in ("partx", "wipefs", "pvs", "vgs", "blkid", "chroot")
               for argv in fake.ran), fake.ran     # reads only (chroot: dpkg-query)


def test_a_first_boot_dry_run_writes_nothing_on_the_running_system(node, master, tmp_path,
                                                                  monkeypatch, capsys):
    plan_file, _, _ = node
    code, commands, written = dry_run(tmp_path, monkeypatch, capsys,
                                      ["--dry-run", "--first-boot", "--plan", str(plan_file)])
    assert code == 0
    assert commands[:3] == ["sfdisk --append --no-reread --no-tell-kernel /dev/sda",
                            "partx --add --nr 0 /dev/sda", "udevadm settle"]
    assert "modprobe drbd" in commands
    assert "/etc/hostname" in written and "/var/lib/ganeti-installer/installed" in written
    _, requests = master
    assert requests == []


def test_the_write_guard_catches_a_write(tmp_path, monkeypatch):
    """The refusals above can fail: a write under them is an error naming it."""
    with monkeypatch.context() as m:
        refuse_writes(m)
        with pytest.raises(AssertionError, match="opened .*x.txt with mode 'w'"):
            open(tmp_path / "x.txt", "w")   # noqa: SIM115 (it must not open)
        with pytest.raises(AssertionError, match="write_atomically"):
            files.write_atomically(str(tmp_path / "y"), "data")
    assert not list(tmp_path.iterdir())


def test_an_invalid_plan_is_said_on_the_console_and_never_reported(node, master, capsys):
    """A report needs the plan's token, and a plan that fails its check is not trusted: the
    agent says why and what to do on the console, and sends the master nothing."""
    plan_file, _, _ = node
    plan = json.loads(plan_file.read_text())
    plan["plan_version"] = 9
    plan_file.write_text(json.dumps(plan))
    assert agent_main.main(["--plan", str(plan_file), "--no-reboot"]) == 4
    out = capsys.readouterr().out
    assert "is not a valid plan; nothing was touched" in out and "plan_version" in out
    assert "fix: render the plans with the ganeti-installer release that built this netboot " \
           "image, then ganeti-installer reinstall this node" in out
    _, requests = master
    assert requests == []
