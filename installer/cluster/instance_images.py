"""The cluster file's [instance_image] section: the `image` OS definition's variants (what
`gnt-os list` shows as image+<variant>) and the instance images the nodes get.

Without the section a cluster gets the paper's variants: `default` and `cd` (CDINSTALL and
NOMOUNT "yes", section 2.12). An image is a file beside the cluster file (`file`), or a Debian
release that `build` makes with diskimage-builder (`build`: a root file system tarball, which
the OS definition gives a partition table and GRUB). render copies it into OUTDIR with its
sha256, and every node fetches it into the image directory at install.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass

from installer.agent.osdef import image as osimage
from installer.agent.osdef import settings as ossettings
from installer.cluster.errors import quote
from installer.cluster.validate import Reader

VARIANT = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")      # no '+': Ganeti's os+variant
IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ARCH = re.compile(r"[a-z0-9_]{1,16}")
FORMATS = ossettings.IMAGE_TYPES
QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class InstanceImage:
    name: str
    arch: str
    format: str             # raw, qcow2 or tarball: the OS definition's IMAGE_TYPE
    file: str | None        # on the build host, absolute; None for a built one until built
    build: str | None = None    # the Debian release `build` makes it of

    @property
    def filename(self) -> str:
        """Its name in OUTDIR and in the nodes' image directory (what create looks up)."""
        return f"{self.name}-{self.arch}.{osimage.SUFFIX[self.format]}"


@dataclass(frozen=True)
class Variant:
    name: str
    image: InstanceImage | None = None
    cdinstall: bool = False
    nomount: bool = False

    def settings(self) -> dict[str, str]:
        """Its variants/<name>.conf: the settings that differ from the defaults file."""
        out = {}
        if self.cdinstall:
            out["CDINSTALL"] = "yes"
        if self.nomount:
            out["NOMOUNT"] = "yes"
        if self.image:
            out.update(IMAGE_NAME=self.image.name, IMAGE_TYPE=self.image.format,
                       ARCH=self.image.arch)
        return out


@dataclass(frozen=True)
class InstanceImages:
    variants: tuple[Variant, ...]
    images: tuple[InstanceImage, ...] = ()


PAPER = InstanceImages((Variant("default"), Variant("cd", cdinstall=True, nomount=True)))
SECTION = "instance_image"


def read(r: Reader) -> InstanceImages:
    images = _images(r)
    if not r.present(f"{SECTION}.variants"):
        return InstanceImages(PAPER.variants, tuple(images))
    raw = r.table_list(f"{SECTION}.variants")
    if not raw and not r.was_refused(f"{SECTION}.variants"):
        r.error(f"{SECTION}.variants", "lists no variant: `gnt-os list` would show no image "
                "OS", "leave the key out for the paper's default and cd, or add a "
                "[[instance_image.variants]] table")
    variants, seen = [], set()
    for i, _ in enumerate(raw):
        v = _variant(r, f"{SECTION}.variants[{i}]", images)
        if v is None:
            continue
        if v.name in seen:
            r.error(f"{SECTION}.variants[{i}].name", f"variant {v.name} is declared twice",
                    "give every variant its own name")
        seen.add(v.name)
        variants.append(v)
    return InstanceImages(tuple(variants), tuple(images))


def _variant(r: Reader, k: str, images: list[InstanceImage]) -> Variant | None:
    name = r.string(f"{k}.name", what="a variant name")
    if name is not None and not VARIANT.fullmatch(name):
        r.error(f"{k}.name", f"{quote(name)} is not a variant name", "use lowercase letters, "
                "digits and . _ - (Ganeti shows it as image+<name>), e.g. cd")
        name = None
    cdinstall = r.boolean(f"{k}.cdinstall", default=False)
    nomount = r.boolean(f"{k}.nomount", default=False)
    wanted = r.string(f"{k}.image", default=None, what="an image name")
    found = next((i for i in images if i.name == wanted), None)
    if wanted is not None and found is None:
        known = ", ".join(i.name for i in images) or "none"
        r.error(f"{k}.image", f"names no image of {SECTION}.images (declared: {known})",
                "add an [[instance_image.images]] table with that name, or fix the name")
    if found and cdinstall:
        r.error(f"{k}.cdinstall", "a variant that installs from a CD writes no image",
                "remove cdinstall, or the variant's image")
    if found and nomount and found.format == "tarball":
        r.error(f"{k}.nomount", "a tarball image is unpacked into a mounted file system",
                "remove nomount, or use a raw or qcow2 image")
    if name is None:
        return None
    return Variant(name, found, bool(cdinstall), bool(nomount))


def _images(r: Reader) -> list[InstanceImage]:
    out: list[InstanceImage] = []
    for i, _ in enumerate(r.table_list(f"{SECTION}.images")):
        k = f"{SECTION}.images[{i}]"
        name = r.string(f"{k}.name", what="an image name")
        if name is not None and not IMAGE.fullmatch(name):
            r.error(f"{k}.name", f"{quote(name)} is not an image name",
                    "use letters, digits and . _ - (it names the file on the nodes)")
            name = None
        if name is not None and any(x.name == name for x in out):
            r.error(f"{k}.name", f"image {name} is declared twice",
                    "give every image its own name")
        arch = r.string(f"{k}.arch", default="x86_64", what="an architecture")
        if arch is not None and not ARCH.fullmatch(arch):
            r.error(f"{k}.arch", f"{quote(arch)} is not an architecture name",
                    'write e.g. arch = "x86_64"')
            arch = None
        if r.present(f"{k}.build"):
            release = _buildable(r, k, arch)
            if name and arch and release:
                out.append(InstanceImage(name, arch, "tarball", None, release))
            continue
        fmt = r.choice(f"{k}.format", FORMATS)
        path = _file(r, f"{k}.file", fmt)
        if name and arch and fmt and path:
            out.append(InstanceImage(name, arch, fmt, path))
    return out


def _buildable(r: Reader, k: str, arch: str | None) -> str | None:
    """The release of a `build` image, which diskimage-builder makes as a root tarball."""
    from installer.cluster.releases import RELEASES
    release = r.string(f"{k}.build", what="a Debian release name")
    ok = [n for n, rel in RELEASES.items() if not rel.archived]
    if release is not None and release not in ok:
        r.error(f"{k}.build", f"{quote(release)} is not a release `build` can make an image "
                f"of (it builds {', '.join(ok)})", "name one of those, or give an image "
                "`file` instead" + r.did_you_mean(release, ok))
        release = None
    if r.present(f"{k}.file"):
        r.error(f"{k}.file", "an image is either built or taken from a file",
                "remove file, or build")
        release = None
    fmt = r.string(f"{k}.format", default=None, what="an image format")
    if fmt not in (None, "tarball"):
        r.error(f"{k}.format", f"a built image is a root file system tarball, not {quote(fmt)}",
                "leave format out (or write \"tarball\")")
        release = None
    if arch is not None and arch != "x86_64":
        r.error(f"{k}.arch", f"`build` makes x86_64 images only, not {quote(arch)}",
                "leave arch out, or give an image `file` of that architecture")
        release = None
    return release


def _file(r: Reader, key: str, fmt: str | None) -> str | None:
    """The image file, beside the cluster file unless absolute, with its format's shape."""
    value = r.string(key, what="a file path")
    if value is None:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(r.file)), value)
    if not os.path.isfile(path):
        r.error(key, f"{quote(value)} is not a file (looked for {quote(path)})",
                "give the image's path, relative to the cluster file or absolute")
        return None
    problem = _shape(path, fmt)
    if problem:
        r.error(key, f"{quote(value)} {problem}", "convert it, or set format to what it is")
        return None
    return path


def _shape(path: str, fmt: str | None) -> str | None:
    """Why the file is not an image of its format, or None (looks at its start only)."""
    size = os.path.getsize(path)
    if fmt == "qcow2":
        with open(path, "rb") as f:
            if f.read(4) != QCOW2_MAGIC:
                return "is not a qcow2 image (no QFI\\xfb magic at its start)"
    elif fmt == "tarball" and not tarfile.is_tarfile(path):
        return "is not a tar archive (plain, gzip, bzip2 or xz)"
    elif fmt == "raw" and (size == 0 or size % 512):
        return f"holds {size} bytes, not whole 512-byte sectors of a disk"
    return None
