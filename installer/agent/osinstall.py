"""Laying the OS down: the OS image's root file system streamed onto the root partition and
verified, or debootstrap into the mounted root."""

from __future__ import annotations

import contextlib
import os
from typing import List, Optional

import requests

from installer.agent import imagefetch, retry
from installer.agent.imagefetch import InstallError
from installer.agent.proc import Runner


def _proxies(proxy: Optional[str]) -> dict:
    return {"http": proxy, "https": proxy} if proxy else {}


def expected_sha256(checksum_url: str, waiter: Optional[retry.Waiter] = None) -> str:
    def ask() -> str:
        resp = requests.get(checksum_url, timeout=30)
        if resp.status_code != 200:
            raise retry.HTTPStatus(checksum_url, resp.status_code, resp.text)
        return resp.text

    try:
        text = (waiter or retry.default).run("the OS image's checksum", ask)
    except (retry.GaveUp, retry.HTTPStatus) as e:
        raise InstallError(f"no checksum at {checksum_url}: {e}") from e
    value = text.split()[0] if text.split() else ""
    if len(value) != 64:
        raise InstallError(f"{checksum_url} holds no sha256 checksum")
    return value


def write_rootfs(image: dict, device: str, runner: Runner,
                 waiter: Optional[retry.Waiter] = None) -> str:
    """Stream the release's root file system onto its partition, hashing it on the way; then
    give it a UUID of its own and grow it to the partition.

    Raw blocks, not files: unpacking 30,000 files costs an old PC (and a TCG guest) four times
    the time of writing the same bytes. zstd into dd with direct I/O, as `dd` from a USB
    stick would: the page cache would only hold the bytes until the sync. A stream the
    master cuts resumes where it stopped (imagefetch)."""
    if image.get("path"):   # the install stick's copy: no network
        want = local_sha256(image["path"] + ".sha256")
    else:
        want = expected_sha256(image["checksum_url"], waiter)
    runner.commands.append(["zstd", "-dc", "|", "dd", f"of={device}"])
    if not runner.dry_run and image.get("path"):
        got = imagefetch.LocalImage(image["path"], device, log=runner.log).run()
        if got != want:
            raise InstallError(f"the OS image {image['path']} is corrupt: sha256 {got}, "
                               f"its .sha256 file says {want}; make the stick again")
    elif not runner.dry_run:
        fetch = imagefetch.ImageFetch(image["url"], device, log=runner.log, waiter=waiter)
        got = fetch.run()
        runner.log(fetch.summary())
        if got != want:
            raise InstallError(f"the OS image {image['url']} is corrupt: sha256 {got}, the "
                               f"server says {want}")
    # Every node would share the image's UUID, and GRUB and fstab find root by it.
    runner.change(["tune2fs", "-U", "random", device])
    runner.change(["resize2fs", device])
    return want


def local_sha256(path: str) -> str:
    """The checksum in a .sha256 file beside a local image (the stick's)."""
    try:
        with open(path, encoding="ascii") as f:
            value = (f.read().split() or [""])[0]
    except (OSError, ValueError) as e:
        raise InstallError(f"cannot read the image checksum {path}: {e}") from None
    if len(value) != 64:
        raise InstallError(f"{path} holds no sha256 checksum")
    return value


UPDATE_INITRAMFS = "/usr/sbin/update-initramfs"
APT_RETRIES = "etc/apt/apt.conf.d/80ganeti-installer-retries"
# apt's own retries, with its doubling pause capped at 30 s: about as long as retry.LIMIT.
APT_RETRY_COUNT = 60


def wait_for_mirror(spec: dict, proxy: Optional[str],
                    waiter: Optional[retry.Waiter] = None) -> None:
    """Wait (retry.Waiter) until the release's Release file answers through the proxy: the
    package cache usually runs on the master, and debootstrap's downloads do not wait."""
    url = f"{spec['mirror'].rstrip('/')}/dists/{spec['suite']}/Release"

    def ask() -> None:
        resp = requests.head(url, proxies=_proxies(proxy), timeout=30, allow_redirects=True)
        if resp.status_code != 200:
            raise retry.HTTPStatus(url, resp.status_code)

    try:
        (waiter or retry.default).run(f"the package mirror {'through ' + proxy if proxy else ''}"
                                      .rstrip(), ask)
    except (retry.GaveUp, retry.HTTPStatus) as e:
        raise InstallError(f"the release's mirror does not answer: {e}") from e


def apt_retries(target: str, runner: Runner) -> None:
    """apt in the target (the node's packages, and the node's later upgrades) retries a
    package cache that went away, instead of failing the install."""
    if runner.dry_run:
        return
    path = os.path.join(target, APT_RETRIES)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("// written by ganeti-installer: ride out a package cache that restarts\n"
                f'Acquire::Retries "{APT_RETRY_COUNT}";\n')


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
    if not runner.dry_run:
        wait_for_mirror(spec, proxy)
    runner.change(["debootstrap", "--foreign", f"--variant={spec['variant']}",
                   f"--include={','.join(include)}", spec["suite"], target, spec["mirror"]],
                  env=env, timeout=3600)
    apt_retries(target, runner)
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
