"""Disks for VM tests that are slow to make, made once and cached by their inputs; each test
gets a copy-on-write qcow2 overlay on the cached base, which costs nothing.

`debian_installer_disk`: what a stock debian-installer install of the node leaves behind, for
first-boot mode. d-i itself cannot run here (the registry serves no .udeb), so the disk is
made from the OS image the way d-i lays a system down: a BIOS boot partition, a 12 GiB root,
free space after it, GRUB in the MBR gap, an fstab by UUID, DHCP on eth0, and what the
cluster's late_command adds: the first-boot script and unit and
/etc/ganeti-installer/firstboot.conf.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from uuid import uuid4

from installer.build import images

INSTALLER = Path(images.__file__).resolve().parent
GRUB_I386 = Path("/usr/lib/grub/i386-pc")
ROOT_SIZE = "12G"


def overlay(base: Path, dest: Path) -> Path:
    """A qcow2 disk whose unwritten blocks read from the cached `base`."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(dest)], check=True)
    return dest


def _key(*parts: bytes | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.read_bytes() if isinstance(part, Path) else part)
    return h.hexdigest()[:16]


def debian_installer_disk(image: Path, master_url: str, node: str, address: str,
                          size: str = "40G") -> Path:
    """The cached base disk; `image` is the OS image (tar.zst) with its .sha256 beside it,
    `address` eth0's static address on the provisioning network (CIDR; d-i's manual network
    set-up: the node image carries no DHCP client).

    Made without loop partitions or mounts (this host has neither partition scanning on
    loop devices nor device-mapper): the root file system is built from a directory with
    `mkfs.ext4 -d` and copied into its partition, and GRUB's boot.img and core.img are
    embedded as grub-bios-setup would."""
    firstboot = sorted((INSTALLER / "firstboot").iterdir())
    key = _key(Path(f"{image}.sha256"), Path(__file__), *firstboot,
               f"{master_url} {node} {address} {size}".encode())
    base = images.cache_dir() / "vm" / f"d-i-{node}-{key}.qcow2"
    if base.exists():
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base.parent) as tmp:
        tree, raw, fs = Path(tmp) / "root", Path(tmp) / "disk.raw", Path(tmp) / "root.raw"
        tree.mkdir()
        subprocess.run(["tar", "--zstd", "-xpf", str(image), "--numeric-owner", "-C",
                        str(tree)], check=True)
        uuid = str(uuid4())
        _configure(tree, master_url, node, firstboot, uuid, address)
        subprocess.run(["truncate", "-s", size, str(raw)], check=True)
        subprocess.run(["sgdisk", "--new=1:0:+1M", "--typecode=1:EF02",
                        f"--new=2:0:+{ROOT_SIZE}", "--typecode=2:8300", str(raw)],
                       check=True, stdout=subprocess.DEVNULL)
        first, last = _extent(raw, 2)
        subprocess.run(["truncate", "-s", str((last - first + 1) * 512), str(fs)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-L", "root", "-U", uuid, "-d", str(tree), str(fs)],
                       check=True)
        subprocess.run(["dd", f"if={fs}", f"of={raw}", "bs=1M", f"seek={first // 2048}",
                        "conv=notrunc,sparse", "status=none"], check=True)
        _embed_grub(raw, Path(tmp), *_extent(raw, 1))
        part = base.with_suffix(".part")
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(part)], check=True)
        os.replace(part, base)
    return base


def _extent(raw: Path, number: int) -> tuple[int, int]:
    """First and last sector of partition `number`."""
    out = subprocess.run(["sgdisk", f"--info={number}", str(raw)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    first = re.search(r"First sector: (\d+)", out)
    last = re.search(r"Last sector: (\d+)", out)
    return int(first.group(1)), int(last.group(1))


def _embed_grub(raw: Path, work: Path, bios_boot: int, _end: int) -> None:
    """boot.img in the MBR, core.img in the BIOS boot partition, each told where the next
    part starts: what grub-bios-setup does for a GPT disk."""
    core_path = work / "core.img"
    subprocess.run(["grub-mkimage", "--format=i386-pc", f"--output={core_path}",
                    "--prefix=(hd0,gpt2)/boot/grub", "biosdisk", "part_gpt", "ext2"],
                   check=True)
    core = bytearray(core_path.read_bytes())
    sectors = (len(core) + 511) // 512
    core += bytes(sectors * 512 - len(core))
    # diskboot.img (core.img's first sector) ends with the blocklist of the rest of core.img.
    struct.pack_into("<QHH", core, 512 - 12, bios_boot + 1, sectors - 1, 0x820)
    boot = (GRUB_I386 / "boot.img").read_bytes()
    with open(raw, "r+b") as f:
        mbr = bytearray(f.read(512))
        mbr[:440] = boot[:440]              # keeps the protective MBR's partition entry
        struct.pack_into("<Q", mbr, 0x5c, bios_boot)     # boot.img: where core.img is
        f.seek(0)
        f.write(mbr)
        f.seek(bios_boot * 512)
        f.write(core)


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _configure(root: Path, master_url: str, node: str, firstboot: list[Path],
               uuid: str, address: str) -> None:
    """What d-i and the late_command leave on the new system."""
    for mountpoint in ("proc", "sys", "dev", "run", "tmp"):   # the image tar leaves them out
        (root / mountpoint).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    _write(root, "etc/fstab", f"UUID={uuid}\t/\text4\terrors=remount-ro\t0\t1\n")
    kernel = sorted((root / "boot").glob("vmlinuz-*"))[-1].name
    version = kernel.removeprefix("vmlinuz-")
    _write(root, "boot/grub/grub.cfg", f"""set timeout=0
linux /boot/{kernel} root=UUID={uuid} ro console=ttyS0,115200n8 net.ifnames=0
initrd /boot/initrd.img-{version}
boot
""")
    shutil.copytree(GRUB_I386, root / "boot/grub/i386-pc", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.img", "*.image", "*.exec", "grub-*"))
    _write(root, "etc/hostname", "debian\n")
    _write(root, "etc/network/interfaces",
           "auto lo\niface lo inet loopback\n\n"
           f"auto eth0\niface eth0 inet static\n    address {address}\n")
    _write(root, "etc/ganeti-installer/firstboot.conf",
           f"MASTER={master_url}\nPLAN={master_url}/plans/{node}.json\n")
    for src in firstboot:
        if src.suffix == ".service":
            _write(root, f"etc/systemd/system/{src.name}", src.read_text())
            wants = root / "etc/systemd/system/multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            (wants / src.name).symlink_to(f"/etc/systemd/system/{src.name}")
        else:
            _write(root, f"usr/local/sbin/{src.name}", src.read_text(), 0o755)
