"""The `image` OS definition as Ganeti runs it: its scripts, from the files the plan writes,
against disk files and loop devices, with the paper's settings files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from installer.agent.osdef import osdir, settings

MiB = 1 << 20


# -- settings files, parsed (no program runs) -------------------------------------------------

def write_etc(etc: Path, variants=("default", "cd"), defaults: str | None = None,
              confs: dict | None = None) -> Path:
    """An /etc as the plan writes it, with `confs` (variant -> text) as the variants' files."""
    for path, _, content in osdir.configuration({v: {} for v in variants}):
        target = etc / path.lstrip("/").removeprefix("etc/")
        if path.startswith("/etc/"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    if defaults is not None:
        (etc / settings.DEFAULTS_FILE).write_text(defaults)
    for variant, text in (confs or {}).items():
        (etc / settings.VARIANTS_DIR / f"{variant}.conf").write_text(text)
    return etc


def test_the_defaults_file_lists_every_setting_with_its_meaning_and_reads_back(tmp_path):
    path = tmp_path / "ganeti-instance-image"
    path.write_text(settings.defaults_text())
    parsed = settings.parse(str(path))
    assert {k: v for k, (v, _) in parsed.items()} == \
        {k: s.default for k, s in settings.SETTINGS.items()}
    comments = " ".join(line[1:].strip() for line in path.read_text().splitlines()
                        if line.startswith("#"))
    for key, s in settings.SETTINGS.items():
        assert f"{key}: {s.meaning}." in comments


def test_the_papers_cd_variant_reads(tmp_path):
    etc = write_etc(tmp_path, confs={"cd": 'CDINSTALL="yes"\nNOMOUNT="yes"\n'})
    s = settings.load(str(etc), "cd")
    assert s.yes("CDINSTALL") and s.yes("NOMOUNT")
    assert s.where("CDINSTALL") == f"{etc / settings.VARIANTS_DIR / 'cd.conf'}:1"
    assert not settings.load(str(etc), "default").yes("CDINSTALL")


@pytest.mark.parametrize("line, problem, fix", [
    ('CDINSTAL="yes"', "unknown setting CDINSTAL", "did you mean CDINSTALL?"),
    ('SWAP="yes"', "unknown setting SWAP", "remove the line; known settings: CDINSTALL"),
    ('CDINSTALL="maybe"', "CDINSTALL='maybe' is not one of yes, no", 'write CDINSTALL="yes"'),
    ('IMAGE_TYPE="zip"', "is not one of raw, qcow2, tarball", 'write IMAGE_TYPE="raw"'),
    ('IMAGE_DIR="relative/dir"', "is not an absolute directory path", "IMAGE_DIR=\"/var"),
    ('IMAGE_NAME="$(reboot)"', "is not a KEY=\"value\" line", 'write it as KEY="value"'),
    ("CDINSTALL yes", "is not a KEY=\"value\" line", 'write it as KEY="value"'),
    ('NOMOUNT="yes', "is not a KEY=\"value\" line", 'write it as KEY="value"'),
])
def test_a_bad_line_names_file_line_and_fix(tmp_path, line, problem, fix):
    etc = write_etc(tmp_path, confs={"cd": f'# the paper\nNOMOUNT="yes"\n{line}\n'})
    with pytest.raises(settings.SettingError) as e:
        settings.load(str(etc), "cd")
    message = str(e.value)
    assert message.startswith(f"{etc / settings.VARIANTS_DIR / 'cd.conf'}:3: "), message
    assert problem in message and fix in message, message


def test_an_unlisted_variant_is_refused(tmp_path):
    etc = write_etc(tmp_path)
    with pytest.raises(settings.SettingError, match=r"variants.list: variant 'usb' is not "
                       r"listed \(it lists default, cd\); add usb"):
        settings.load(str(etc), "usb")


# -- the scripts, run (integration: real tools, loop devices) --------------------------------

@pytest.fixture
def osdef(tmp_path):
    """The OS directory as the plan writes it, under tmp_path/os, and an /etc."""
    root = tmp_path / "os"
    for path, mode, content in osdir.scripts():
        target = root / path.removeprefix(osdir.OS_DIR + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        # The scripts find their package in the OS directory: here, this copy of it.
        target.write_text(content.replace(osdir.OS_DIR, str(root)))
        target.chmod(int(mode, 8))
    etc = write_etc(tmp_path / "etc", confs={"cd": 'CDINSTALL="yes"\nNOMOUNT="yes"\n'})
    (tmp_path / "images").mkdir()
    return root, etc


def run_os(osdef, command: str, env: dict, *args: str, stdin=None, stdout=subprocess.PIPE):
    """The command as Ganeti runs it (a clean environment, no PATH), reading settings from
    the test's /etc: the module entry the scripts call, with --etc."""
    root, etc = osdef
    argv = [sys.executable, "-m", "osdef.commands", command, "--etc", str(etc), *args]
    return subprocess.run(argv, env={"PYTHONPATH": str(root / "lib"), "OS_API_VERSION": "20",
                                     "HYPERVISOR": "kvm", **env},
                          stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)


def disk_file(path: Path, size: int = 64 * MiB, fill: bytes = b"\xa5") -> Path:
    path.write_bytes(fill * size)
    return path


def create_env(disk: Path, variant: str) -> dict:
    return {"INSTANCE_NAME": "testvm.project.edu", "OS_VARIANT": variant, "DISK_COUNT": "1",
            "DISK_0_PATH": str(disk)}


def image(tmp_path: Path, name: str, suffix: str, data: bytes) -> Path:
    path = tmp_path / "images" / f"{name}-x86_64.{suffix}"
    path.write_bytes(data)
    (tmp_path / "images" / f"{path.name}.sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return path


def variant(osdef, name: str, text: str, tmp_path: Path) -> None:
    etc = osdef[1]
    (etc / settings.VARIANTS_LIST).write_text(f"default\ncd\n{name}\n")
    (etc / settings.VARIANTS_DIR / f"{name}.conf").write_text(
        f'IMAGE_DIR="{tmp_path / "images"}"\n{text}')


@pytest.fixture
def loop(tmp_path):
    """A 64 MiB loop device: the block device Ganeti hands the scripts (DRBD or LVM)."""
    backing = disk_file(tmp_path / "loop.img")
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                         capture_output=True, text=True).stdout.strip()
    yield Path(dev)
    subprocess.run(["losetup", "-d", dev], check=True)


@pytest.mark.integration
def test_the_cd_variant_creates_without_touching_the_disk(osdef, tmp_path, loop):
    before = loop.read_bytes()
    done = run_os(osdef, "create", create_env(loop, "cd"))
    assert done.returncode == 0, done.stderr
    assert b"installs from a CD" in done.stderr
    assert loop.read_bytes() == before


@pytest.mark.integration
def test_a_raw_image_is_written_to_a_block_device(osdef, tmp_path, loop):
    data = os.urandom(3 * MiB + 512)
    image(tmp_path, "tiny", "raw", data)
    variant(osdef, "tiny", 'IMAGE_NAME="tiny"\nIMAGE_TYPE="raw"\n', tmp_path)
    done = run_os(osdef, "create", create_env(loop, "tiny"))
    assert done.returncode == 0, done.stderr
    with open(loop, "rb") as f:
        assert f.read(len(data)) == data
        assert f.read(16) == b"\xa5" * 16       # the rest of the disk is left alone


@pytest.mark.integration
def test_a_qcow2_image_is_converted_onto_the_disk(osdef, tmp_path):
    raw = tmp_path / "src.raw"
    raw.write_bytes(b"QCOW2 PAYLOAD" * 1000 + b"\0" * (4 * MiB))
    qcow = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)],
                   check=True)
    image(tmp_path, "deb", "qcow2", qcow.read_bytes())
    variant(osdef, "q", 'IMAGE_NAME="deb"\nIMAGE_TYPE="qcow2"\nIMAGE_DEBUG="yes"\n', tmp_path)
    disk = disk_file(tmp_path / "disk0")
    done = run_os(osdef, "create", create_env(disk, "q"))
    assert done.returncode == 0, done.stderr
    assert b"+ qemu-img convert" in done.stderr            # IMAGE_DEBUG prints the commands
    assert disk.read_bytes()[:13000] == b"QCOW2 PAYLOAD" * 1000
    assert disk.stat().st_size == 64 * MiB                 # written into, not replaced


@pytest.mark.integration
def test_a_tarball_is_unpacked_into_a_partition_of_its_own(osdef, tmp_path, loop):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=test\n")
    (tree / "bin").mkdir()
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    (tree / "bin" / "tool").chmod(0o750)
    tar = tmp_path / "root.tar"
    with tarfile.open(tar, "w:gz") as t:         # compressed: tar finds that itself
        t.add(tree, arcname=".")
    image(tmp_path, "root", "tar", tar.read_bytes())
    variant(osdef, "t", 'IMAGE_NAME="root"\nIMAGE_TYPE="tarball"\n', tmp_path)
    done = run_os(osdef, "create", create_env(loop, "t"))
    assert done.returncode == 0, done.stderr
    table = subprocess.run(["sfdisk", "--dump", str(loop)], capture_output=True, text=True) \
        if os.path.exists("/usr/sbin/sfdisk") else None
    with open(loop, "rb") as f:
        head = f.read(512)
    assert head[510:] == b"\x55\xaa" and head[446] == 0x80 and head[450] == 0x83
    assert int.from_bytes(head[454:458], "little") == 2048        # starts at 1 MiB
    assert table is None or "type=83" in table.stdout
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", f"ro,loop,offset={MiB}", str(loop), str(mnt)], check=True)
    try:
        assert (mnt / "etc/os-release").read_text() == "ID=test\n"
        assert (mnt / "bin/tool").stat().st_mode & 0o777 == 0o750
        assert (mnt / "etc/hostname").read_text() == "testvm\n"
        fstab = (mnt / "etc/fstab").read_text()
        uuid = subprocess.run(["blkid", "-p", "-O", str(MiB), "-o", "value", "-s", "UUID",
                               str(loop)], capture_output=True, text=True).stdout.strip()
        assert f"UUID={uuid}\t/\text4\t" in fstab, (fstab, uuid)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.integration
def test_a_tarball_whose_symlink_leads_out_of_its_root_is_refused(osdef, tmp_path, loop):
    """create writes into the unpacked root (fstab, hostname, GRUB): a tarball's `etc`
    pointing at an absolute path must not make it write into the node's own /etc."""
    outside = tmp_path / "node-etc"
    outside.mkdir()
    tar = tmp_path / "root.tar"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("etc")
        info.type, info.linkname = tarfile.SYMTYPE, str(outside)
        t.addfile(info)
    image(tmp_path, "root", "tar", tar.read_bytes())
    variant(osdef, "t", 'IMAGE_NAME="root"\nIMAGE_TYPE="tarball"\n', tmp_path)
    done = run_os(osdef, "create", create_env(loop, "t"))
    assert done.returncode != 0
    assert f"the image's /etc leads out of its root (to {outside})" in done.stderr.decode()
    assert not list(outside.iterdir())


@pytest.mark.integration
@pytest.mark.parametrize("setup, message", [
    (lambda tmp: None, "tiny-x86_64.raw: no such instance image (variant tiny"),
    (lambda tmp: image(tmp, "tiny", "raw", b"x" * 4096).with_suffix(".raw.sha256")
     .write_text("0" * 64 + "  tiny-x86_64.raw\n"),
     "tiny-x86_64.raw: sha256 "),
    (lambda tmp: image(tmp, "tiny", "raw", b"x" * 4096).with_suffix(".raw.sha256").unlink(),
     "tiny-x86_64.raw.sha256: missing: every instance image needs its checksum; write it "
     "with `sha256sum tiny-x86_64.raw > tiny-x86_64.raw.sha256`"),
    (lambda tmp: image(tmp, "tiny", "raw", b"x" * (65 * MiB)),
     "holds 68157440 bytes, the disk"),
])
def test_a_missing_or_broken_image_fails_create_and_leaves_the_disk(osdef, tmp_path, setup,
                                                                     message):
    setup(tmp_path)
    variant(osdef, "tiny", 'IMAGE_NAME="tiny"\n', tmp_path)
    disk = disk_file(tmp_path / "disk0")
    done = run_os(osdef, "create", create_env(disk, "tiny"))
    assert done.returncode == 1
    assert message in done.stderr.decode(), done.stderr
    assert disk.read_bytes() == b"\xa5" * (64 * MiB)


@pytest.mark.integration
def test_default_without_an_image_says_where_to_name_one(osdef, tmp_path):
    disk = disk_file(tmp_path / "disk0", MiB)
    done = run_os(osdef, "create", create_env(disk, "default"))
    assert done.returncode == 1
    assert "variant default names no instance image (IMAGE_NAME is empty); set " \
        "IMAGE_NAME=\"<name>\" in /etc/ganeti/instance-image/variants/default.conf" \
        in done.stderr.decode()


@pytest.mark.integration
@pytest.mark.parametrize("command", ["create", "verify"])
def test_a_bad_setting_fails_create_and_verify_naming_file_line_fix(osdef, tmp_path, command):
    etc = osdef[1]
    conf = etc / settings.VARIANTS_DIR / "cd.conf"
    conf.write_text('CDINSTALL="yes"\nNOMOUNT="yes"\nKERNEL_ARGS="quiet"\n')
    disk = disk_file(tmp_path / "disk0", MiB)
    done = run_os(osdef, command, create_env(disk, "cd"),
                  *(["parameters"] if command == "verify" else []))
    assert done.returncode == 1
    assert f"image OS {command}: {conf}:3: unknown setting KERNEL_ARGS; remove the line; " \
        "known settings: CDINSTALL" in done.stderr.decode()
    assert disk.read_bytes() == b"\xa5" * MiB


@pytest.mark.integration
def test_verify_checks_the_variant_and_parameters(osdef, tmp_path):
    env = {"INSTANCE_NAME": "testvm", "OS_VARIANT": "cd"}
    assert run_os(osdef, "verify", env, "parameters").returncode == 0
    bad = run_os(osdef, "verify", {**env, "OSP_DHCP": "yes"}, "parameters")
    assert bad.returncode == 1 and b"unknown OS parameter(s) dhcp" in bad.stderr
    usage = run_os(osdef, "verify", env)
    assert usage.returncode == 1 and b"usage: verify parameters" in usage.stderr
    gone = run_os(osdef, "verify", {**env, "OS_VARIANT": "usb"}, "parameters")
    assert gone.returncode == 1 and b"variant 'usb' is not listed" in gone.stderr


@pytest.mark.integration
@pytest.mark.parametrize("chosen", ["default", "cd"])
def test_export_then_import_copies_the_disk_through_a_stream(osdef, tmp_path, loop, chosen):
    data = os.urandom(64 * MiB)
    loop.write_bytes(data)
    dump = tmp_path / "dump"
    size_r, size_w = os.pipe()
    with open(dump, "wb") as out:
        env = {"INSTANCE_NAME": "testvm", "OS_VARIANT": chosen, "EXPORT_INDEX": "0",
               "EXPORT_DISK_PATH": str(loop), "EXP_SIZE_FD": str(size_w)}
        root, etc = osdef
        done = subprocess.run([sys.executable, "-m", "osdef.commands", "export", "--etc",
                               str(etc)], env={"PYTHONPATH": str(root / "lib"), **env},
                              stdout=out, stderr=subprocess.PIPE, pass_fds=(size_w,))
    os.close(size_w)
    assert done.returncode == 0, done.stderr
    assert os.read(size_r, 100) == f"{64 * MiB}\n".encode()
    os.close(size_r)
    assert dump.read_bytes() == data
    target = disk_file(tmp_path / "restored")
    with open(dump, "rb") as src:
        done = run_os(osdef, "import", {"INSTANCE_NAME": "testvm", "OS_VARIANT": chosen,
                                        "IMPORT_INDEX": "0", "IMPORT_DEVICE": str(target)},
                      stdin=src)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == data


@pytest.mark.integration
def test_import_of_a_stream_larger_than_the_disk_fails(osdef, tmp_path):
    src = tmp_path / "big"
    src.write_bytes(b"z" * (2 * MiB))
    target = disk_file(tmp_path / "small", MiB)
    with open(src, "rb") as f:
        done = run_os(osdef, "import", {"IMPORT_DISK_PATH": str(target)}, stdin=f)
    assert done.returncode == 1
    assert b"the stream is larger than the disk" in done.stderr


@pytest.mark.integration
def test_the_installed_scripts_rename_and_explain_their_usage(osdef):
    root, _ = osdef
    env = {"PATH": os.environ["PATH"], "INSTANCE_NAME": "new.project.edu",
           "OLD_INSTANCE_NAME": "old.project.edu"}
    done = subprocess.run([str(root / "rename")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "old.project.edu is now new.project.edu" in done.stderr
    missing = subprocess.run([str(root / "rename")], env={"INSTANCE_NAME": "x"},
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "OLD_INSTANCE_NAME is not set" in missing.stderr
    for script in ("create", "export", "import", "rename", "verify"):
        help_ = subprocess.run([str(root / script), "--help"], capture_output=True, text=True)
        assert help_.returncode == 0 and help_.stdout.startswith(f"usage: {script}")
    assert (root / "ganeti_api_version").read_text() == "20\n"
