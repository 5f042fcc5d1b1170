"""Finding an instance image by name and architecture, and checking it against its sha256
file before a byte of it reaches the instance's disk."""

from __future__ import annotations

import hashlib
import os
import re

from .settings import SettingError, Settings

SUFFIX = {"raw": "raw", "qcow2": "qcow2", "tarball": "tar"}
HEX = re.compile(r"[0-9a-f]{64}")


class ImageError(Exception):
    pass


def path_of(s: Settings) -> str:
    """IMAGE_DIR/IMAGE_NAME-ARCH.<raw|qcow2|tar>; a SettingError when no image is named."""
    name = s.values["IMAGE_NAME"]
    if not name:
        raise SettingError(s.where("IMAGE_NAME"), None, f"variant {s.variant} names no "
                           "instance image (IMAGE_NAME is empty)",
                           f'set IMAGE_NAME="<name>" in /etc/ganeti/instance-image/variants/'
                           f'{s.variant}.conf (in the cluster file: the variant\'s image), or '
                           'use the cd variant')
    suffix = SUFFIX[s.values["IMAGE_TYPE"]]
    return os.path.join(s.values["IMAGE_DIR"], f"{name}-{s.values['ARCH']}.{suffix}")


def checked(s: Settings) -> str:
    """The image's path, once it exists and matches its .sha256; ImageError otherwise."""
    path = path_of(s)
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such instance image (variant {s.variant}: IMAGE_NAME "
                         f"from {s.where('IMAGE_NAME')}); put the image there with its "
                         ".sha256, or fix IMAGE_NAME, ARCH or IMAGE_TYPE")
    expected = _expected(path + ".sha256")
    got = sha256(path)
    if got != expected:
        raise ImageError(f"{path}: sha256 {got} is not {expected} from {path}.sha256 (a "
                         "cut or changed copy); copy the image again, or write its new "
                         "checksum with `sha256sum`")
    return path


def _expected(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            words = f.read().split()
    except FileNotFoundError:
        raise ImageError(f"{path}: missing: every instance image needs its checksum; write "
                         f"it with `sha256sum {os.path.basename(path)[:-7]} > "
                         f"{os.path.basename(path)}`") from None
    if not words or not HEX.fullmatch(words[0].lower()):
        raise ImageError(f"{path}:1: not a sha256 checksum (64 hex digits first); write it "
                         "with `sha256sum`")
    return words[0].lower()


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
