"""GRUB for BIOS and UEFI on the install disk, the kernel command line from the plan.

Two ways: the release's own `grub-install` and `update-grub` (debootstrap, any release), or,
for the OS image, the steps grub-install takes done directly (`install_prepared`). The first
probes every device dozens of times through grub-probe and udevadm, most of a minute on an
old PC; the agent already knows the disk and root's UUID. The node's first kernel upgrade
runs update-grub, which replaces the config written here with Debian's own.
"""

from __future__ import annotations

import glob
import os
import re

from installer.agent import efiboot
from installer.agent.target import Target


def set_kernel_args(t: Target, args: str) -> None:
    path = t.path("etc/default/grub")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        text = ""
    line = f'GRUB_CMDLINE_LINUX="{args}"'
    if re.search(r"^GRUB_CMDLINE_LINUX=", text, re.M):
        text = re.sub(r"^GRUB_CMDLINE_LINUX=.*$", line, text, flags=re.M)
    else:
        text += f"\n{line}\n"
    t.run.files.write(path, text)


def default_setting(t: Target, name: str, fallback: str) -> str:
    """A GRUB_* value from the target's /etc/default/grub, as update-grub would read it."""
    try:
        with open(t.path("etc/default/grub"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return fallback
    found = re.findall(rf"^{name}=(.*)$", text, re.M)
    return found[-1].strip().strip("'\"") if found else fallback


# What grub-install builds into core.img for a GPT disk with root on ext4.
CORE_MODULES = ["part_gpt", "ext2", "search_fs_uuid"]


def install_prepared(t: Target, disk: str, root_uuid: str, kernel_args: str,
                     efi: bool) -> None:
    set_kernel_args(t, kernel_args)
    load_cfg = f"search.fs_uuid {root_uuid} root\nset prefix=($root)'/boot/grub'\n"
    _core(t, "i386-pc", "/boot/grub/i386-pc/core.img", load_cfg, ["biosdisk"])
    t.chroot(["grub-bios-setup", "--directory=/boot/grub/i386-pc", disk])
    if os.path.isdir(t.path("usr/lib/grub/x86_64-efi")) and os.path.ismount(t.path("boot/efi")):
        # EFI/BOOT/BOOTX64.EFI, the removable path: firmware finds it without an NVRAM entry.
        t.run.files.makedirs(t.path("boot/efi/EFI/BOOT"))
        _core(t, "x86_64-efi", "/boot/efi/EFI/BOOT/BOOTX64.EFI", load_cfg, [])
        if efi:
            efiboot.keep_network_first(t.run, disk)
    write_config(t, root_uuid, kernel_args)


def _core(t: Target, platform: str, output: str, load_cfg: str, extra: list) -> None:
    """The platform's modules in /boot/grub (the OS image has them there already), and its
    core image with root found by UUID."""
    if not os.path.isdir(t.path(f"boot/grub/{platform}")):
        t.run.files.copytree(t.path(f"usr/lib/grub/{platform}"), t.path(f"boot/grub/{platform}"))
    t.run.files.write(t.path(f"boot/grub/{platform}/load.cfg"), load_cfg)
    t.chroot(["grub-mkimage", f"--format={platform}", f"--directory=/usr/lib/grub/{platform}",
              f"--output={output}", f"--config=/boot/grub/{platform}/load.cfg",
              "--prefix=/boot/grub"] + extra + CORE_MODULES)


def newest_kernel(t: Target) -> str:
    """The version of the newest kernel in /boot that has its initrd."""
    def key(version: str) -> list:
        return [int(n) if n.isdigit() else n for n in re.split(r"(\d+)", version)]
    found = [os.path.basename(k)[len("vmlinuz-"):]
             for k in glob.glob(t.path("boot/vmlinuz-*"))]
    found = [v for v in found if os.path.exists(t.path(f"boot/initrd.img-{v}"))]
    if not found:
        raise FileNotFoundError(f"no kernel with an initrd in {t.path('boot')}")
    return max(found, key=key)


def write_config(t: Target, root_uuid: str, kernel_args: str) -> None:
    """/boot/grub/grub.cfg with one entry, as update-grub would write it for this root."""
    path = t.path("boot/grub/grub.cfg")
    if t.run.dry_run:   # its target holds no kernel to name: the path is listed, not written
        t.run.files.write(path, "")
        return
    version = newest_kernel(t)
    timeout = default_setting(t, "GRUB_TIMEOUT", "5")
    extra = default_setting(t, "GRUB_CMDLINE_LINUX_DEFAULT", "quiet")
    text = (f"# Written by ganeti-installer at install time; update-grub replaces it.\n"
            f"insmod part_gpt\ninsmod ext2\n"
            f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"set default=0\nset timeout={timeout}\n"
            f"menuentry 'Debian GNU/Linux' --id gnulinux-simple-{root_uuid} {{\n"
            f"\tlinux /boot/vmlinuz-{version} root=UUID={root_uuid} ro {kernel_args} {extra}\n"
            f"\tinitrd /boot/initrd.img-{version}\n}}\n")
    t.run.files.write(path, text)


def install(t: Target, disk: str, kernel_args: str, efi: bool) -> None:
    set_kernel_args(t, kernel_args)
    t.chroot(["grub-install", "--target=i386-pc", "--recheck", disk])
    if os.path.isdir(t.path("usr/lib/grub/x86_64-efi")) and os.path.ismount(t.path("boot/efi")):
        # --removable: firmware without an NVRAM entry still finds EFI/BOOT/BOOTX64.EFI.
        t.chroot(["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
                  "--bootloader-id=debian", "--removable", "--no-nvram"])
        if efi:
            efiboot.keep_network_first(t.run, disk)
    t.chroot(["update-grub"])
