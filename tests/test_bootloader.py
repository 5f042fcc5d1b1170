"""The GRUB config the agent writes for an image install, as GRUB itself reads it.

The real boot of such a config is in test_install_vm; here its choices: the newest kernel
with an initrd (by version, not by string), root by UUID, the admin's /etc/default/grub."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from installer.agent import bootloader
from installer.agent.proc import Runner
from installer.agent.target import Target

UUID = "0e0c7e58-3d4b-4a5e-9d7a-6a9b1f2c3d4e"


@pytest.fixture
def root(tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    for version in ("6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-11-amd64"):
        (boot / f"vmlinuz-{version}").write_bytes(b"kernel")
    for version in ("6.1.0-9-amd64", "6.1.0-10-amd64"):     # -11 has no initrd yet
        (boot / f"initrd.img-{version}").write_bytes(b"initrd")
    (tmp_path / "boot/grub").mkdir()
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/default/grub").write_text(
        'GRUB_DEFAULT=0\nGRUB_TIMEOUT=2\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
        'GRUB_CMDLINE_LINUX=""\n')
    return tmp_path


def config_for(root) -> str:
    t = Target(str(root), Runner())
    bootloader.set_kernel_args(t, "console=ttyS0,115200n8")
    bootloader.write_config(t, UUID, "console=ttyS0,115200n8")
    return (root / "boot/grub/grub.cfg").read_text()


def test_the_newest_kernel_with_an_initrd_boots_root_by_uuid(root):
    cfg = config_for(root)
    assert f"search --no-floppy --fs-uuid --set=root {UUID}" in cfg
    assert (f"linux /boot/vmlinuz-6.1.0-10-amd64 root=UUID={UUID} ro "
            "console=ttyS0,115200n8 quiet") in cfg
    assert "initrd /boot/initrd.img-6.1.0-10-amd64" in cfg
    assert "set timeout=2" in cfg
    assert 'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"' in \
        (root / "etc/default/grub").read_text()    # what update-grub will use later


@pytest.mark.skipif(not shutil.which("grub-script-check"), reason="grub-common not installed")
@pytest.mark.integration
def test_grub_parses_the_config(root):
    config_for(root)
    subprocess.run(["grub-script-check", str(root / "boot/grub/grub.cfg")], check=True)


def test_a_root_without_a_kernel_is_an_error_naming_boot(root):
    for kernel in (root / "boot").glob("initrd.img-*"):
        kernel.unlink()
    with pytest.raises(FileNotFoundError, match="no kernel with an initrd in .*/boot"):
        config_for(root)
    assert not (root / "boot/grub/grub.cfg").exists()
