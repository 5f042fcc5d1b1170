"""The OS image and the netboot initrd as a user meets them: unpacked and inspected."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from installer.build import builder as build, images
from installer.cluster import config
from installer.cluster.errors import InstallerError
from installer.cluster.releases import RELEASES

from .conftest import example_data, example_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def os_root(built, tmp_path_factory):
    outdir, _ = built
    root = tmp_path_factory.mktemp("osroot")
    subprocess.run(["tar", "--zstd", "-xpf", str(outdir / "images/bookworm.tar.zst"),
                    "-C", str(root), "--numeric-owner"], check=True)
    return root


def installed(root: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                          "-f=${Package} ${db:Status-Abbrev}\n"],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_os_image_has_every_node_package(os_root):
    status = installed(os_root)
    for pkg in RELEASES["bookworm"].node_packages("kvm"):
        assert status.get(pkg, "").strip() == "ii", f"{pkg} not installed in the OS image"


def test_os_image_carries_no_machine_identity(os_root):
    assert not list((os_root / "etc/ssh").glob("ssh_host_*")), "SSH host keys in the image"
    assert (os_root / "etc/machine-id").read_text() == ""
    assert list((os_root / "boot").glob("vmlinuz-*")), "no kernel in the OS image"


def test_os_image_checksum_file_matches(built):
    outdir, summary = built
    line = (outdir / "images/bookworm.tar.zst.sha256").read_text().split()
    assert line == [images.sha256_file(outdir / "images/bookworm.tar.zst"), "bookworm.tar.zst"]
    assert summary["artifacts"]["os_image"]["sha256"] == line[0]


@pytest.fixture(scope="module")
def rootfs(built, tmp_path_factory):
    """The root file system image as the node gets it: decompressed, checksum checked."""
    outdir, summary = built
    image = outdir / "images/bookworm.ext4.zst"
    line = (outdir / "images/bookworm.ext4.zst.sha256").read_text().split()
    assert line == [images.sha256_file(image), "bookworm.ext4.zst"]
    assert summary["artifacts"]["os_rootfs"]["sha256"] == line[0]
    fs = tmp_path_factory.mktemp("rootfs") / "root.ext4"
    subprocess.run(["zstd", "-q", "-d", str(image), "-o", str(fs)], check=True)
    return fs


def debugfs(fs: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(fs)], check=True,
                          capture_output=True, text=True).stdout


def features(fs: Path) -> set[str]:
    out = subprocess.run(["dumpe2fs", "-h", str(fs)], check=True, capture_output=True,
                         text=True).stdout
    return set(next(line for line in out.splitlines()
                    if line.startswith("Filesystem features:")).split(":")[1].split())


def test_root_file_system_is_clean_with_the_features_of_a_node_root(rootfs, tmp_path):
    subprocess.run(["e2fsck", "-f", "-n", str(rootfs)], check=True, capture_output=True)
    assert "root" in subprocess.run(["e2label", str(rootfs)], capture_output=True,
                                    text=True).stdout
    node_root = tmp_path / "node-root"        # what mkfs.ext4 makes of a 10 GiB partition
    subprocess.run(["mkfs.ext4", "-q", "-F", str(node_root), "10G"], check=True,
                   stdout=subprocess.DEVNULL)
    assert features(rootfs) == features(node_root)


def test_root_file_system_holds_the_tree(rootfs, os_root):
    root = debugfs(rootfs, "stat /")
    assert "Mode:  0755" in root and "User:     0" in root, root
    assert "Mode:  01777" in debugfs(rootfs, "stat /tmp")
    for mountpoint in ("proc", "sys", "dev", "run"):
        assert "Type: directory" in debugfs(rootfs, f"stat /{mountpoint}")
    kernel = next((os_root / "boot").glob("vmlinuz-*"))
    assert f"Size: {kernel.stat().st_size}" in debugfs(rootfs, f"stat /boot/{kernel.name}")
    assert "Size: 0" in debugfs(rootfs, "stat /etc/machine-id")
    assert "ssh_host_" not in debugfs(rootfs, "ls /etc/ssh")
    for platform in ("i386-pc", "x86_64-efi"):     # GRUB's modules, as grub-install puts them
        assert "Type: regular" in debugfs(rootfs, f"stat /boot/grub/{platform}/normal.mod")
    assert "Type: regular" in debugfs(rootfs, "stat /boot/grub/i386-pc/boot.img")


def test_initrd_holds_the_agent_and_its_tools(built):
    outdir, _ = built
    agent, root = images.split_initrd((outdir / "netboot/initrd").read_bytes())
    names = set()
    for archive in (agent, subprocess.run(["zstd", "-dc"], input=root,
                                          capture_output=True, check=True).stdout):
        names |= set(subprocess.run(["cpio", "-t", "--quiet"], input=archive,
                                    capture_output=True, check=True).stdout.decode().split("\n"))
    for path in ("init", "usr/bin/python3", "usr/sbin/sgdisk", "usr/sbin/lvm",
                 "usr/sbin/debootstrap", "usr/sbin/mkfs.ext4",
                 "usr/lib/python3/dist-packages/pyudev/__init__.py",
                 "usr/lib/python3/dist-packages/requests/__init__.py",
                 "usr/lib/python3/dist-packages/installer/agent/__main__.py",
                 "etc/systemd/system/ganeti-installer-agent.service"):
        assert path in names, f"{path} missing from the initrd"


def test_rebuild_without_change_uses_the_cache(built, tmp_path):
    outdir, _ = built
    summary = build.build(config.load(example_path("cluster.toml")), str(tmp_path / "again"),
                          progress=lambda m: None)
    images_only = {k: a for k, a in summary["artifacts"].items() if k != "agent"}
    assert all(a["cached"] for a in images_only.values()), summary["artifacts"]
    # The agent is packed from source every time, byte for byte the same.
    assert (tmp_path / "again/agent/agent.tar.gz").read_bytes() == \
        (outdir / "agent/agent.tar.gz").read_bytes()
    for name in ("bookworm.tar.zst", "bookworm.ext4.zst"):
        again = tmp_path / "again/images" / name
        assert images.sha256_file(again) == images.sha256_file(outdir / "images" / name)


def test_wheezy_with_unreachable_mirror_names_the_setting(tmp_path):
    data = example_data("paper-wheezy.toml")
    data["apt"]["mirror"] = "http://127.0.0.1:9/debian"   # nothing listens on port 9
    path = tmp_path / "wheezy.toml"
    import tomli_w
    path.write_bytes(tomli_w.dumps(data).encode())
    cluster = config.load(str(path))
    out = tmp_path / "out"
    with pytest.raises(InstallerError) as e:
        build.build(cluster, str(out), progress=lambda m: None)
    assert "apt.mirror" in str(e.value) and "127.0.0.1:9" in str(e.value)
    assert not out.exists()


def test_agent_bundle_for_the_debian_installer_path(built):
    """OUTDIR/agent: what a d-i late_command fetches to run the agent at first boot."""
    outdir, _ = built
    with tarfile.open(outdir / "agent/agent.tar.gz") as tar:
        names = tar.getnames()
    assert "installer/agent/__main__.py" in names and "installer/agent/planschema.py" in names
    script = outdir / "agent/ganeti-installer-firstboot"
    assert script.stat().st_mode & 0o111, "the first-boot script is not executable"
    assert "--first-boot" in script.read_text()
    unit = (outdir / "agent/ganeti-installer-firstboot.service").read_text()
    assert "ExecStart=/usr/local/sbin/ganeti-installer-firstboot" in unit
