"""GRUB for BIOS and UEFI on the install disk, the kernel command line from the plan."""

from __future__ import annotations

import os
import re

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
    with open(path + ".gi-new", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".gi-new", path)


def install(t: Target, disk: str, kernel_args: str, efi: bool) -> None:
    set_kernel_args(t, kernel_args)
    t.chroot(["grub-install", "--target=i386-pc", "--recheck", disk])
    if os.path.isdir(t.path("usr/lib/grub/x86_64-efi")) and os.path.ismount(t.path("boot/efi")):
        # --removable: firmware without an NVRAM entry still finds EFI/BOOT/BOOTX64.EFI.
        t.chroot(["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
                  "--bootloader-id=debian", "--removable", "--no-nvram"])
        if efi:
            keep_network_first(t)
    t.chroot(["update-grub"])


def keep_network_first(t: Target) -> None:
    """UEFI puts a new OS ahead of PXE; the master decides what a node boots, so PXE leads."""
    out = t.run.read(["efibootmgr"], check=False)
    order = re.search(r"^BootOrder: (\S+)", out, re.M)
    if not order:
        return
    entries = order.group(1).split(",")
    network = [e for e in entries
               if re.search(rf"^Boot{e}\*? .*(PXE|Network|IPv4)", out, re.M | re.I)]
    rest = [e for e in entries if e not in network]
    if network and entries[:len(network)] != network:
        t.run.change(["efibootmgr", "--bootorder", ",".join(network + rest)])
