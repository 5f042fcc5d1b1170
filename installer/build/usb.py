"""The install stick: one disk image that boots BIOS and UEFI PCs into the netboot image and
installs them from the plans and OS image it carries, with no master and no network.

    GPT, 1 MiB alignment
      1  BIOS boot (EF02), 1 MiB    GRUB's core.img, loaded by boot.img in the MBR (BIOS)
      2  ESP (EF00), FAT32          label GI-INSTALL, volume ID from the contents:
           EFI/BOOT/BOOTX64.EFI     GRUB for UEFI (the removable-media path)
           boot/grub/grub.cfg       one entry by MAC, one per node
           netboot/vmlinuz, initrd  the netboot image
           images/<release>.ext4.zst(.sha256)   the OS image
           instance-images/<file>(.sha256)      the cluster file's instance images
           ganeti-installer/index.json          MAC -> node
           ganeti-installer/plans/<node>.json   each node's plan with its report token
           ganeti-installer/serve/              with --all: what the master serves from
                                                (installer/build/servinghost.py)

Everything is made on files as an unprivileged user could: sgdisk on the image, mkfs.fat and
mtools at the ESP's offset, grub-mkimage, and the two BIOS boot sectors patched here the way
grub-bios-setup does (Debian ships grub-bios-setup only in grub-pc, which would take over the
build host's boot loader). GUIDs, the volume ID and every timestamp derive from the
contents, so the same OUTDIR and plans give the same image, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import uuid
from dataclasses import dataclass

from installer.agent import rules
from installer.cluster.errors import InstallerError
from installer.cluster.layout import INSTANCE_IMAGES

MiB = 1 << 20
SECTOR = 512
FAT32_FILE_LIMIT = 1 << 32
LABEL = rules.STICK_LABEL
BIOS_START, BIOS_SECTORS = 2048, 2048         # partition 1: 1 MiB at 1 MiB
ESP_START = BIOS_START + BIOS_SECTORS          # partition 2 from 2 MiB on
MIN_ESP = 300 * MiB     # FAT32 with mkfs.fat's 4 KiB clusters needs 65,525 of them
EPOCH = 946684800       # 2000-01-01: every file's time on the stick (reproducible)
GRUB_PC, GRUB_EFI = "/usr/lib/grub/i386-pc", "/usr/lib/grub/x86_64-efi"
GRUB_PACKAGES = {GRUB_PC: "grub-pc-bin", GRUB_EFI: "grub-efi-amd64-bin"}
# Built into both images: the stick needs no module directory.
GRUB_MODULES = ("normal", "configfile", "echo", "sleep", "test", "minicmd", "search",
                "search_fs_uuid", "part_gpt", "fat", "linux", "serial", "terminal",
                "all_video", "reboot", "halt")
TOOLS = {"sgdisk": "gdisk", "mkfs.fat": "dosfstools", "mcopy": "mtools",
         "grub-mkimage": "grub-common"}
# No DHCP during a stick install: the PC may sit on a LAN where it must not take an address.
NO_NETWORK = ("systemd.mask=systemd-networkd.service "
              "systemd.mask=systemd-networkd-wait-online.service")


@dataclass(frozen=True)
class Stick:
    """What goes on the stick: files by their path on the ESP (a source path or bytes)."""
    files: dict[str, str | bytes]
    nodes: list[tuple[str, str]]     # (name, mac) of the nodes it installs
    kernel_args: str

    def volume_id(self) -> str:
        """The FAT volume ID (8 hex digits): a digest of every file, so it names the stick."""
        h = hashlib.sha256()
        for path in sorted(self.files):
            h.update(path.encode() + b"\0")
            h.update(_digest(self.files[path]).encode())
        return h.hexdigest()[:8].upper()


def _digest(source: str | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def fs_uuid(volume_id: str) -> str:
    """The volume ID as udev and GRUB write it: ABCD-1234."""
    return f"{volume_id[:4]}-{volume_id[4:]}"


# -- what goes on it -------------------------------------------------------------------------

def stick_plan(plan: dict) -> dict:
    """The plan as the stick carries it: the OS image and the instance images read from the
    mounted stick."""
    plan = json.loads(json.dumps(plan))
    image = plan["install"].get("image")
    if image:
        image["path"] = f"{rules.STICK_MOUNT}/images/{os.path.basename(image['url'])}"
    for item in plan.get("instance_images", []):
        item["stick_path"] = f"{rules.STICK_MOUNT}/{_instance_rel(item)}"
    return plan


def _instance_rel(item: dict) -> str:
    return f"{INSTANCE_IMAGES}/{os.path.basename(item['url'])}"


def contents(outdir: str, plans: dict[str, dict]) -> Stick:
    """The stick's files from OUTDIR (netboot and OS images) and the plans (with tokens)."""
    files: dict[str, str | bytes] = {}
    for rel in ("netboot/vmlinuz", "netboot/initrd"):
        files[rel] = _need(outdir, rel)
    index = {}
    for name, plan in sorted(plans.items()):
        image = plan["install"].get("image")
        if image:
            rel = f"images/{os.path.basename(image['url'])}"
            files[rel] = _need(outdir, rel)
            files[rel + ".sha256"] = _need(outdir, rel + ".sha256")
        for item in plan.get("instance_images", []):
            rel = _instance_rel(item)
            path = files[rel] = _need(outdir, rel)
            files[rel + ".sha256"] = _need(outdir, rel + ".sha256")
            if os.path.getsize(path) >= FAT32_FILE_LIMIT:
                raise InstallerError(
                    f"{path} is 4 GiB or more, more than a file on the stick's FAT32 "
                    "can hold: give that [[instance_image.images]] entry as qcow2 or a "
                    "tarball, or leave it out of the cluster file the stick is made from "
                    "(nodes installed over the network fetch it)")
        files[f"{rules.STICK_DIR}/plans/{name}.json"] = \
            (json.dumps(stick_plan(plan), indent=2, sort_keys=True) + "\n").encode()
        index[plan["node"]["mac"]] = name
    files[f"{rules.STICK_DIR}/index.json"] = \
        (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    nodes = sorted((n, p["node"]["mac"]) for n, p in plans.items())
    first = plans[nodes[0][0]]
    return Stick(files, nodes, first.get("kernel_args", ""))


def _need(outdir: str, rel: str) -> str:
    path = os.path.join(outdir, rel)
    if not os.path.isfile(path):
        raise InstallerError(f"{path} is missing: the stick carries it; run "
                             "ganeti-installer build (not render) into this OUTDIR first")
    return path


def grub_cfg(stick: Stick, volume_id: str) -> str:
    """The menu: the PC's plan found by its MAC (default), or a node named by hand."""
    base = f"{stick.kernel_args} {NO_NETWORK} {rules.PLAN_ARG}=usb:{fs_uuid(volume_id)}"
    lines = ["serial --unit=0 --speed=115200", "terminal_input console serial",
             "terminal_output console serial", "set timeout=5", "set default=0", ""]
    entries = [("Install this PC (its plan chosen by its MAC)", base)]
    entries += [(f"Install {name} ({mac})", f"{base}:{name}") for name, mac in stick.nodes]
    for title, args in entries:
        lines += [f'menuentry "{title}" {{', '    echo "loading the installer from the stick..."',
                  f"    linux /netboot/vmlinuz {args}", "    initrd /netboot/initrd", "}"]
    return "\n".join(lines) + "\n"


def early_cfg(volume_id: str) -> str:
    """Built into both GRUB images: find this stick's ESP, whatever the disk's number."""
    return (f"search --no-floppy --fs-uuid --set=root {fs_uuid(volume_id)}\n"
            "set prefix=($root)/boot/grub\n")


# -- the image -------------------------------------------------------------------------------

def check_tools() -> None:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise InstallerError(f"{tool} is missing: install the Debian package {package} "
                                 f"(apt-get install {package})")
    for directory, package in GRUB_PACKAGES.items():
        if not os.path.isdir(directory):
            raise InstallerError(f"{directory} is missing: install the Debian package "
                                 f"{package} (apt-get install {package})")


def esp_bytes(stick: Stick) -> int:
    used = sum(len(s) if isinstance(s, bytes) else os.path.getsize(s)
               for s in stick.files.values())
    return max(MIN_ESP, -(-(used + used // 10 + 32 * MiB) // MiB) * MiB)


def image_bytes(stick: Stick) -> int:
    """The image's size: the partitions, and 1 MiB at the end for GPT's backup."""
    return ESP_START * SECTOR + esp_bytes(stick) + MiB


def build(stick: Stick, output: str) -> str:
    """Write the stick image to `output` (replaced whole); its sha256."""
    check_tools()
    volume_id = stick.volume_id()
    work = tempfile.mkdtemp(prefix=".stick-", dir=os.path.dirname(os.path.abspath(output)))
    try:
        image = os.path.join(work, "stick.img")
        esp_sectors = esp_bytes(stick) // SECTOR
        with open(image, "wb") as f:        # sparse until filled
            f.truncate(image_bytes(stick))
        partition(image, esp_sectors, volume_id)
        tree = stage(stick, volume_id, work)
        fill_esp(image, tree, esp_sectors, volume_id)
        install_bios_boot(image, os.path.join(work, "core.img"))
        os.replace(image, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _digest(output)


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env=dict(os.environ, TZ="UTC", LC_ALL="C"))
    if done.returncode != 0:
        raise InstallerError(f"{argv[0]} failed making the stick image: "
                             f"{(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def _guid(volume_id: str, what: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"{volume_id}/{what}".encode()).digest()[:16],
                         version=4))


def partition(image: str, esp_sectors: int, volume_id: str) -> None:
    end = ESP_START + esp_sectors - 1
    _run(["sgdisk", f"--disk-guid={_guid(volume_id, 'disk')}",
          f"--new=1:{BIOS_START}:{ESP_START - 1}", "--typecode=1:EF02",
          "--change-name=1:BIOS boot", f"--partition-guid=1:{_guid(volume_id, 'bios')}",
          f"--new=2:{ESP_START}:{end}", "--typecode=2:EF00", f"--change-name=2:{LABEL}",
          f"--partition-guid=2:{_guid(volume_id, 'esp')}", image])


def stage(stick: Stick, volume_id: str, work: str) -> str:
    """The ESP's tree in a directory, every file and directory dated EPOCH (mcopy -m keeps
    the dates); the GRUB images beside it."""
    tree = os.path.join(work, "esp")
    early = os.path.join(work, "early.cfg")
    with open(early, "w", encoding="utf-8") as f:
        f.write(early_cfg(volume_id))
    files = dict(stick.files)
    files["boot/grub/grub.cfg"] = grub_cfg(stick, volume_id).encode()
    for rel, source in sorted(files.items()):
        path = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(source, bytes):
            with open(path, "wb") as f:
                f.write(source)
        else:
            shutil.copyfile(source, path)
    efi = os.path.join(tree, "EFI", "BOOT", "BOOTX64.EFI")
    os.makedirs(os.path.dirname(efi))
    _mkimage("x86_64-efi", GRUB_EFI, early, efi, [])
    _mkimage("i386-pc", GRUB_PC, early, os.path.join(work, "core.img"), ["biosdisk"])
    for top, dirs, names in os.walk(tree):
        for name in dirs + names:
            os.utime(os.path.join(top, name), (EPOCH, EPOCH))
    return tree


def _mkimage(platform: str, directory: str, early: str, output: str, extra: list[str]) -> None:
    _run(["grub-mkimage", "-O", platform, "-d", directory, "-p", "/boot/grub", "-c", early,
          "-o", output, *GRUB_MODULES, *extra])


def fill_esp(image: str, tree: str, esp_sectors: int, volume_id: str) -> None:
    # --invariant fixes mkfs.fat's dates and also its volume ID: -i must come after it.
    _run(["mkfs.fat", "-F", "32", f"--offset={ESP_START}", "--invariant", "-i", volume_id,
          "-n", LABEL, image, str(esp_sectors // 2)])
    at = f"{image}@@{ESP_START * SECTOR}"
    tops = [os.path.join(tree, name) for name in sorted(os.listdir(tree))]
    _run(["mcopy", "-s", "-m", "-i", at, *tops, "::/"])


# boot.img and core.img's first sector (diskboot.img), as grub-bios-setup fills them in
# (grub-core/boot/i386/pc/boot.S, diskboot.S; util/setup.c).
KERNEL_SECTOR = 0x5C        # boot.img: LBA of core.img's first sector (8 bytes)
DRIVE_CHECK = 0x66          # boot.img: a jump over the "boot drive is a hard disk" fix-up
MBR_KEEP = (0x1B8, 0x200)   # disk signature, partition table (GPT's protective entry), 55AA
BLOCKLIST = SECTOR - 12     # diskboot.img: start (8), sector count (2), load segment (2)
CORE_SEGMENT = 0x820        # where the rest of core.img is loaded (after its first sector)


def install_bios_boot(image: str, core_img: str) -> None:
    """boot.img into the MBR, core.img into the BIOS boot partition, pointing at each other."""
    with open(os.path.join(GRUB_PC, "boot.img"), "rb") as f:
        boot = bytearray(f.read())
    with open(core_img, "rb") as f:
        core = bytearray(f.read())
    sectors = -(-len(core) // SECTOR)
    if sectors > BIOS_SECTORS:
        raise InstallerError(f"GRUB's core.img ({len(core)} bytes) does not fit the 1 MiB "
                             "BIOS boot partition: a bug in ganeti-installer")
    with open(image, "r+b") as f:
        mbr = bytearray(f.read(SECTOR))
        boot[MBR_KEEP[0]:MBR_KEEP[1]] = mbr[MBR_KEEP[0]:MBR_KEEP[1]]
        struct.pack_into("<Q", boot, KERNEL_SECTOR, BIOS_START)
        boot[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"    # a stick may be handed over as 0x00
        struct.pack_into("<QHH", core, BLOCKLIST, BIOS_START + 1, sectors - 1, CORE_SEGMENT)
        f.seek(0)
        f.write(boot)
        f.seek(BIOS_START * SECTOR)
        f.write(core)
