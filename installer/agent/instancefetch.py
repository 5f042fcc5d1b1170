"""Instance images from the master into the image OS definition's image directory.

Each is fetched into `<path>.part`, resumed with a Range request after a cut (the part file
holds what arrived), checked whole against the master's `.sha256`, renamed into place and
given its checksum file, which the OS definition's create checks again before each use. An
image already there with the right checksum (a resumed install) is not fetched again.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import requests

from installer.agent import retry
from installer.agent.imagefetch import InstallError
from installer.agent.osinstall import local_sha256
from installer.agent.proc import Runner

CHUNK = 1 << 20


def fetch_all(plan: dict, root: str, run: Runner,
              waiter: Optional[retry.Waiter] = None) -> list:
    """Every instance image of the plan under `root`; the paths fetched (not already there)."""
    fetched = []
    for item in plan.get("instance_images", []):
        dest = os.path.join(root, item["path"].lstrip("/"))
        if fetch(item, dest, run, waiter or retry.default):
            fetched.append(item["path"])
    return fetched


def fetch(item: dict, dest: str, run: Runner, waiter: retry.Waiter) -> bool:
    """Whether it had to be fetched. InstallError when it cannot be had whole. An install
    from a stick copies the stick's file (stick_path): no network."""
    local = item.get("stick_path")
    want = local_sha256(local + ".sha256") if local else _checksum(item["checksum_url"], waiter)
    if run.dry_run:
        run.files.write(dest, "")
        return True
    if os.path.isfile(dest) and sha256(dest) == want:
        return False
    part = dest + ".part"
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if local:
        _copy(local, part)
    else:
        try:
            waiter.run(f"the instance image {item['url']}",
                       lambda: _attempt(item["url"], part),
                       progress=lambda: os.path.getsize(part) if os.path.exists(part) else 0)
        except (retry.GaveUp, retry.HTTPStatus) as e:
            raise InstallError(f"cannot fetch the instance image {item['url']}: {e}") from e
    got = sha256(part)
    if got != want:
        os.remove(part)
        raise InstallError(f"the instance image {local or item['url']} has sha256 {got}, its "
                           f"checksum file says {want}: "
                           + ("make the stick again" if local else
                              "render again on the build host"))
    os.replace(part, dest)
    run.files.write(dest + ".sha256", f"{want}  {os.path.basename(dest)}\n", 0o644)
    return True


def _copy(src: str, part: str) -> None:
    """The stick's file into the part file; a read error blames the stick, a write error
    the node's disk."""
    with open(part, "wb") as out:
        try:
            f = open(src, "rb")
        except OSError as e:
            raise InstallError(f"cannot read the instance image {src} on the stick: "
                               f"{e.strerror}; make the stick again") from None
        with f:
            while True:
                try:
                    block = f.read(CHUNK)
                except OSError as e:
                    raise InstallError(f"cannot read the instance image {src} on the stick: "
                                       f"{e.strerror}; the stick may be failing") from None
                if not block:
                    break
                try:
                    out.write(block)
                except OSError as e:
                    raise InstallError(f"cannot write {part}: {e.strerror}") from None
        out.flush()
        os.fsync(out.fileno())


def _checksum(url: str, waiter: retry.Waiter) -> str:
    def ask() -> str:
        resp = requests.get(url, timeout=30)
        if resp.status_code != 200:
            raise retry.HTTPStatus(url, resp.status_code, resp.text[:200])
        return resp.text
    try:
        words = waiter.run(f"the checksum {url}", ask).split()
    except (retry.GaveUp, retry.HTTPStatus) as e:
        raise InstallError(f"no checksum at {url}: {e}") from e
    if not words or len(words[0]) != 64:
        raise InstallError(f"{url} holds no sha256 checksum")
    return words[0].lower()


def _attempt(url: str, part: str) -> None:
    """Append to the part file from its size on; from byte 0 if the server sends it whole."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=(10, 60), headers=headers) as resp:
        if resp.status_code == 416:         # the part holds it all already
            return
        if resp.status_code not in (200, 206):
            raise retry.HTTPStatus(url, resp.status_code, resp.text[:200])
        with open(part, "ab" if resp.status_code == 206 else "wb") as f:
            for block in resp.iter_content(CHUNK):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
