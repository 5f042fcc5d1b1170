"""The agent's one atomic write: whole or not at all, with the mode it was asked for."""

from __future__ import annotations

import os
import stat

import pytest

from installer.agent.files import NEW, Writer, write_atomically


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_secret_is_never_readable_by_others(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def replace(src, dst):      # the moment the new file takes the path
        seen.append(mode_of(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_atomically(str(tmp_path / "ssh/authorized_keys"), "ssh-ed25519 AAAA", 0o600)
    assert seen == [0o600] and mode_of(tmp_path / "ssh/authorized_keys") == 0o600


def test_the_replaced_files_mode_is_kept_without_one(tmp_path):
    path = tmp_path / "machine-id"
    path.write_text("old\n")
    path.chmod(0o444)
    write_atomically(str(path), "new\n")
    assert path.read_text() == "new\n" and mode_of(path) == 0o444
    write_atomically(str(tmp_path / "fresh"), b"\x00bytes")
    assert mode_of(tmp_path / "fresh") == 0o644
    assert (tmp_path / "fresh").read_bytes() == b"\x00bytes"


def test_a_symlink_is_replaced_not_followed(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (tmp_path / "resolv.conf").symlink_to(tmp_path / "run/stub-resolv.conf")
    write_atomically(str(tmp_path / "resolv.conf"), "nameserver 192.168.20.1\n", 0o644,
                     durable=True)
    assert not (tmp_path / "resolv.conf").is_symlink()
    assert (tmp_path / "run/stub-resolv.conf").read_text() == "nameserver 127.0.0.53\n"


def test_a_symlink_replaced_with_no_mode_given_keeps_its_targets_mode(tmp_path):
    """Not the link's own 0777: a world-writable /etc/default/grub would be a hole."""
    (tmp_path / "real").write_text("old\n")
    (tmp_path / "real").chmod(0o640)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    write_atomically(str(tmp_path / "link"), "new\n")
    assert (tmp_path / "link").stat().st_mode & 0o7777 == 0o640
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    write_atomically(str(tmp_path / "dangling"), "new\n")
    assert (tmp_path / "dangling").stat().st_mode & 0o7777 == 0o644


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "fstab"
    path.write_text("old\n")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_atomically(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert (tmp_path / f"fstab{NEW}").exists()      # the next write replaces it


def test_a_dry_writer_lists_and_touches_nothing(tmp_path):
    w = Writer(dry_run=True)
    w.makedirs(str(tmp_path / "etc"), 0o755)
    w.write(str(tmp_path / "etc/hostname"), "node1\n", 0o644)
    w.write(str(tmp_path / "etc/hostname"), "node1\n", 0o644)
    assert w.written == [f"{tmp_path}/etc/", f"{tmp_path}/etc/hostname"]
    assert list(tmp_path.iterdir()) == []
