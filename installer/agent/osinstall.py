"""Laying the OS down on the mounted root: the OS image streamed and verified, or debootstrap."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from typing import List, Optional

import requests

from installer.agent.proc import Runner


class InstallError(Exception):
    pass


def _proxies(proxy: Optional[str]) -> dict:
    return {"http": proxy, "https": proxy} if proxy else {}


def expected_sha256(checksum_url: str) -> str:
    resp = requests.get(checksum_url, timeout=30)
    if resp.status_code != 200:
        raise InstallError(f"no checksum at {checksum_url}: HTTP {resp.status_code}")
    value = resp.text.split()[0] if resp.text.split() else ""
    if len(value) != 64:
        raise InstallError(f"{checksum_url} holds no sha256 checksum")
    return value


def unpack_image(image: dict, target: str, runner: Runner) -> str:
    """Stream the image into `tar -x` while hashing it; the sha256 must match the server's."""
    want = expected_sha256(image["checksum_url"])
    runner.commands.append(["tar", "--zstd", "-xpf", "-", "-C", target])
    if runner.dry_run:
        return want
    digest = hashlib.sha256()
    tar = subprocess.Popen(["tar", "--zstd", "-xpf", "-", "--numeric-owner", "--xattrs",
                            "--xattrs-include=*", "-C", target], stdin=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        with requests.get(image["url"], stream=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise InstallError(f"cannot fetch the OS image {image['url']}: HTTP "
                                   f"{resp.status_code}")
            for chunk in resp.iter_content(chunk_size=1 << 20):
                digest.update(chunk)
                tar.stdin.write(chunk)
    finally:
        tar.stdin.close()
        err = tar.stderr.read().decode(errors="replace")
        code = tar.wait()
    if code != 0:
        raise InstallError(f"unpacking {image['url']} failed: {err.strip()[-400:]}")
    if digest.hexdigest() != want:
        raise InstallError(f"the OS image {image['url']} is corrupt: sha256 "
                           f"{digest.hexdigest()}, the server says {want}")
    return want


UPDATE_INITRAMFS = "/usr/sbin/update-initramfs"


def debootstrap(spec: dict, packages: List[str], target: str, proxy: Optional[str],
                runner: Runner) -> None:
    """debootstrap the release; packages pinned to a suite (name/suite) come later via apt.

    Two stages, with update-initramfs diverted in between: the kernel's and initramfs-tools'
    scripts would each build the initramfs in the second stage, minutes apiece on an old PC
    (the caller builds it once, afterwards: build_initramfs). dpkg skips its per-file fsync
    meanwhile (UNSAFE_IO): a cut install is redone from mkfs, and the journal's mark of the
    stage syncs the whole tree first."""
    include = [p for p in packages if "/" not in p]
    env = dict(os.environ)
    if proxy:
        env["http_proxy"] = proxy
    runner.change(["debootstrap", "--foreign", f"--variant={spec['variant']}",
                   f"--include={','.join(include)}", spec["suite"], target, spec["mirror"]],
                  env=env, timeout=3600)
    runner.change(["chroot", target, "dpkg-divert", "--local", "--rename", "--add",
                   UPDATE_INITRAMFS])
    if not runner.dry_run:
        os.symlink("/bin/true", os.path.join(target, UPDATE_INITRAMFS.lstrip("/")))
    with unsafe_io(target, runner):
        runner.change(["chroot", target, "/debootstrap/debootstrap", "--second-stage"],
                      env=env, timeout=3600)
    if not runner.dry_run:
        os.remove(os.path.join(target, UPDATE_INITRAMFS.lstrip("/")))
    runner.change(["chroot", target, "dpkg-divert", "--local", "--rename", "--remove",
                   UPDATE_INITRAMFS])


UNSAFE_IO = "etc/dpkg/dpkg.cfg.d/ganeti-installer-unsafe-io"


@contextlib.contextmanager
def unsafe_io(target: str, runner: Runner):
    """dpkg's force-unsafe-io in the target while the block runs (as container and image
    builders do): no fsync per unpacked file, thousands of journal commits on a slow PC."""
    path = os.path.join(target, UNSAFE_IO)
    if not runner.dry_run:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("# ganeti-installer, during the install only\nforce-unsafe-io\n")
    try:
        yield
    finally:
        if os.path.exists(path):
            os.remove(path)


INITRAMFS_POLICY = "etc/initramfs-tools/conf.d/ganeti-installer-modules"


def initramfs_policy(target: str, modules: str, runner: Runner) -> None:
    """initramfs-tools' MODULES for every initramfs built on the node (d-i's driver policy):
    most, every driver, so the disk boots in another PC too; or dep, this PC's drivers only,
    built in a fraction of the time. An image's own initramfs is redone at the next kernel."""
    if runner.dry_run:
        return
    path = os.path.join(target, INITRAMFS_POLICY)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".gi-new", "w", encoding="utf-8") as f:
        f.write("# written by ganeti-installer: install.initramfs_modules in the cluster file\n"
                f"MODULES={modules}\n")
    os.replace(path + ".gi-new", path)


def build_initramfs(chroot) -> None:
    """The one initramfs build a debootstrapped root needs (`chroot` runs in the target)."""
    chroot(["update-initramfs", "-c", "-k", "all"])
