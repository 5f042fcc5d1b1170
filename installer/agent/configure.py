"""Configuring the installed root from the plan: files, debconf, packages, keys, fstab."""

from __future__ import annotations

import os
import re
import uuid
from typing import Dict, List, Optional

from installer.agent import booted
from installer.agent.booted import HOST_KEY_TYPES
from installer.agent.target import Target


def write_files(plan: dict, t: Target) -> None:
    for d in plan["directories"]:
        t.run.files.makedirs(t.path(d["path"]), int(d["mode"], 8))
    for f in plan["files"]:
        t.run.files.write(t.path(f["path"]), f["content"], int(f["mode"], 8))
    for e in plan["edits"]:
        apply_edit(t, e)


def apply_edit(t: Target, edit: dict) -> None:
    """Replace the first line matching edit['match'], or add the line to its section."""
    path = t.path(edit["path"])
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        if not t.run.dry_run:   # the OS owns this file: without it, the plan is wrong
            raise
        lines = []              # a dry run's target holds no OS
    pattern = re.compile(edit["match"])
    for i, line in enumerate(lines):
        if pattern.search(line):
            lines[i] = edit["line"]
            break
    else:
        opener = re.compile(rf"^\s*{re.escape(edit['section'])}\s*\{{")
        at = next((i for i, line in enumerate(lines) if opener.search(line)), None)
        if at is None:
            lines += [f"{edit['section']} {{", edit["line"], "}"]
        else:
            lines.insert(at + 1, edit["line"])
    t.run.files.write(path, "\n".join(lines))


def debconf(plan: dict, t: Target, disk: str) -> None:
    text = plan["debconf"] + f"grub-pc\tgrub-pc/install_devices\tmultiselect\t{disk}\n"
    t.chroot(["debconf-set-selections"], input=text)


def missing_packages(plan: dict, t: Target) -> List[str]:
    out = t.run.read(["chroot", t.root, "dpkg-query", "-W", "-f", "${Package} ${Status}\n"],
                     check=False) if t.root != "/" else \
        t.run.read(["dpkg-query", "-W", "-f", "${Package} ${Status}\n"], check=False)
    installed = {line.split()[0] for line in out.splitlines()
                 if line.endswith("install ok installed")}
    return [p for p in plan["packages"] if p.split("/")[0] not in installed]


def install_packages(plan: dict, t: Target) -> List[str]:
    missing = missing_packages(plan, t)
    if missing:
        opts = ["-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef"]
        if plan["install"].get("proxy"):
            opts += ["-o", f"Acquire::http::Proxy={plan['install']['proxy']}"]
        t.chroot(["apt-get", "update"] + opts)
        t.chroot(["apt-get", "install", "--yes", "--no-install-recommends"] + opts + missing)
    return missing


def set_root_password(plan: dict, t: Target, hashed: Optional[str] = None) -> None:
    """Root's password from its hash: the plan's, or HASHED (the master's secrets route)."""
    hashed = hashed or plan["users"]["root"]["password_hash"]
    if hashed:      # on stdin: a command line is logged, and a failed one reported
        t.chroot(["chpasswd", "--encrypted"], input=f"root:{hashed}\n")


def machine_id(t: Target) -> None:
    """Each node gets its own machine-id (the image carries none)."""
    path = t.path("etc/machine-id")
    try:
        with open(path, encoding="utf-8") as f:
            if f.read().strip():
                return
    except OSError:
        pass
    t.run.files.write(path, uuid.uuid4().hex + "\n")


def host_keys(t: Target) -> Dict[str, str]:
    """Make the node's own SSH host keys once; return them as 'type base64' lines."""
    keydir = t.path("etc/ssh")
    if not any(os.path.exists(os.path.join(keydir, f"ssh_host_{k}_key")) for k in HOST_KEY_TYPES):
        t.chroot(["ssh-keygen", "-A"])
    return booted.read_host_keys(t.root)


def fstab(t: Target, uuids: Dict[str, str]) -> None:
    lines = ["# Written by ganeti-installer: filesystems by UUID, never by /dev name.",
             f"UUID={uuids['root']}\t/\text4\terrors=remount-ro\t0\t1"]
    if uuids.get("esp"):
        lines.append(f"UUID={uuids['esp']}\t/boot/efi\tvfat\tumask=0077\t0\t1")
    if uuids.get("swap"):
        lines.append(f"UUID={uuids['swap']}\tnone\tswap\tsw\t0\t0")
    t.run.files.write(t.path("etc/fstab"), "\n".join(lines) + "\n")
