"""Images: the netboot kernel and initrd, and the OS image of a release.

Both are built by diskimage-builder from the elements in `elements/` and cached by their
inputs (elements, release, packages, mirrors, diskimage-builder version), so a rebuild with
no change copies files instead of building. The agent is not part of the cached netboot
root: it is packed on every build as a second, small cpio archive appended to the initrd
(the kernel unpacks concatenated archives in order), so agent changes cost seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import requests

from installer.agent import ship
from installer.build import resources

ELEMENTS = Path(resources.ELEMENTS)
NETBOOT_RELEASE = "bookworm"          # the netboot image is always Debian 12
AGENT_SITE = "usr/lib/python3/dist-packages"
# Compression level of the netboot root: -19 saves ~15% over -10 at ~4x the time;
# the kernel's zstd decompressor takes either.
ZSTD_LEVEL = os.environ.get("GANETI_INSTALLER_ZSTD_LEVEL", "15")


class ImageError(Exception):
    """An image could not be built; the message names the setting or tool to fix."""


@dataclass(frozen=True)
class Artifact:
    path: str
    size: int
    sha256: str
    cached: bool


def cache_dir() -> Path:
    base = os.environ.get("GANETI_INSTALLER_CACHE") or os.path.expanduser(
        "~/.cache/ganeti-installer")
    return Path(base)


# -- cache keys ------------------------------------------------------------------------------

def _tree_digest(h, top: Path) -> None:
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(top)).encode() + b"\0")
        h.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        h.update(path.read_bytes())


def input_key(kind: str, elements: list[str], **inputs) -> str:
    """A short digest of everything that changes an image's content."""
    h = hashlib.sha256(kind.encode())
    h.update(metadata.version("diskimage-builder").encode())
    for name in elements:
        if (ELEMENTS / name).is_dir():
            _tree_digest(h, ELEMENTS / name)
    for key in sorted(inputs):
        h.update(f"{key}={inputs[key]!r}\0".encode())
    return h.hexdigest()[:16]


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- running diskimage-builder ---------------------------------------------------------------

def _dib_command() -> str:
    beside = Path(sys.executable).parent / "disk-image-create"
    found = str(beside) if beside.exists() else shutil.which("disk-image-create")
    if not found:
        raise ImageError("disk-image-create not found: run ./build.sh --deps-only, which "
                         "installs diskimage-builder into .venv")
    return found


def _dib_env(release: str, mirror: str, security_mirror: str | None, proxy: str | None,
             extra: dict) -> dict:
    env = dict(os.environ, ELEMENTS_PATH=str(ELEMENTS), DIB_RELEASE=release,
               DIB_DISTRIBUTION_MIRROR=mirror, DIB_APT_MINIMAL_CREATE_INTERFACES="0",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **extra)
    if security_mirror:
        env["DIB_DEBIAN_SECURITY_MIRROR"] = security_mirror
    else:   # an archived release has no security suite to follow
        env["DIB_APT_SOURCES_CONF"] = f"default:deb {mirror} {release} main"
    if proxy:
        env.update(http_proxy=proxy, DIB_APT_PROXY=proxy)
    return env


def dib_cache() -> Path:
    """diskimage-builder's own download cache, shared by every build of this user."""
    return Path(os.environ.get("DIB_IMAGE_CACHE") or os.path.expanduser("~/.cache/image-create"))


@contextlib.contextmanager
def dib_lock(progress) -> Iterator[None]:
    """One image build at a time on this machine: two diskimage-builder runs at once fail on
    the apt cache they share, and two builds of one cache entry would write the same work
    directory. A lock file (not a lock of this process) so two `build`s, or the tests beside
    a build, wait for each other; the kernel drops it when its holder dies. Not re-entrant:
    take it once, around the whole check-and-build of a cache entry."""
    path = dib_cache() / "ganeti-installer.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"  waiting for another diskimage-builder build to finish (lock {path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_dib(name: str, elements: list[str], workdir: Path, env: dict, progress) -> Path:
    """Build `elements` into workdir/<name>.tar; the log stays in workdir for a failure."""
    for element in elements:
        if element.startswith("ganeti-") and not (ELEMENTS / element).is_dir():
            raise ImageError(f"element {element} is missing from {ELEMENTS}: run from a "
                             "complete ganeti-installer checkout")
    log = workdir / f"{name}.log"
    # -n: without the "base" element, which adds software-properties-common and
    # with it PackageKit, GLib and ICU (~100 MB) that neither image uses.
    cmd = [_dib_command(), "-n", "-a", "amd64", "-t", "tar", "-o", str(workdir / name),
           *elements]
    with open(log, "w", encoding="utf-8") as out:
        start = last = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None          # asked for: stdout=PIPE
        for line in proc.stdout:
            out.write(line)
            if time.monotonic() - last >= 20 and "Running " in line:
                last = time.monotonic()
                step = line.split("Running ", 1)[1].strip()[-60:]
                progress(f"  {name}: {int(last - start)} s, {step}")
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-25:])
        raise ImageError(f"diskimage-builder failed building {name} (exit {rc}); "
                         f"full log: {log}\n{tail}")
    return workdir / f"{name}.tar"


# -- mirrors ---------------------------------------------------------------------------------

def probe_mirror(mirror: str, release: str, key: str = "apt.mirror") -> None:
    """Fail early, naming the setting, when the mirror does not serve the release."""
    url = f"{mirror.rstrip('/')}/dists/{release}/Release"
    try:
        r = requests.get(url, timeout=15)
    except requests.RequestException as e:
        raise ImageError(f"{key} = {mirror!r}: cannot reach {url} ({type(e).__name__}). "
                         f"Set {key} in the cluster file to a mirror that serves {release} "
                         "(Debian 7 lives on archive mirrors).") from None
    if r.status_code != 200:
        raise ImageError(f"{key} = {mirror!r}: {url} answered HTTP {r.status_code}. "
                         f"Set {key} in the cluster file to a mirror that serves {release}.")


# -- netboot ---------------------------------------------------------------------------------

def _pack_root(tar: Path, dest: Path) -> None:
    """Unpack DIB's root tarball, take the kernel out of /boot, pack the rest as a cpio."""
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        subprocess.run(["tar", "-xpf", str(tar), "-C", str(root), "--numeric-owner"],
                       check=True)
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise ImageError(f"{tar}: no kernel in /boot (linux-image-amd64 not installed?)")
        shutil.copyfile(kernels[-1], dest / "vmlinuz")
        for item in (root / "boot").iterdir():   # the initrd of the image is not needed
            item.unlink() if not item.is_dir() else shutil.rmtree(item)
        _cpio(root, dest / "base.cpio.zst", level=ZSTD_LEVEL)


def _cpio(root: Path, dest: Path, level: str | None = None) -> None:
    """newc cpio of root (owned by root), zstd-compressed when level is given."""
    part = dest.with_name(dest.name + ".part")
    find = subprocess.Popen(["find", ".", "-print0"], cwd=root, stdout=subprocess.PIPE)
    cpio = subprocess.Popen(["cpio", "--null", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                            cwd=root, stdin=find.stdout, stdout=subprocess.PIPE)
    assert find.stdout is not None and cpio.stdout is not None      # both PIPEs
    find.stdout.close()
    with open(part, "wb") as out:
        if level:
            subprocess.run(["zstd", "-q", "-T0", f"-{level}", "-c"], stdin=cpio.stdout,
                           stdout=out, check=True)
        else:
            shutil.copyfileobj(cpio.stdout, out)
    if cpio.wait() or find.wait():
        raise ImageError(f"packing {root} into {dest} failed")
    os.replace(part, dest)


def agent_cpio(dest: Path) -> None:
    """The agent at the path Debian's python3 searches, for the netboot initrd."""
    with tempfile.TemporaryDirectory() as tmp:
        ship.copy_to(str(Path(tmp) / AGENT_SITE))
        # Every folder of the archive 0755, whatever the umask: the kernel unpacks this
        # archive first, so its "." and usr/lib/... entries set those folders' modes.
        site = Path(tmp) / AGENT_SITE
        for folder in (site, *site.parents):
            if folder.is_relative_to(tmp):
                folder.chmod(0o755)
        _cpio(Path(tmp), dest)


def agent_bundle(outdir: str) -> dict[str, Artifact]:
    """OUTDIR/agent: the agent as a tarball, and the first-boot script and unit that a
    debian-installer install's late_command puts on the node to fetch and run it."""
    out = Path(outdir) / "agent"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ship.copy_to(str(Path(tmp) / "agent"))
        tarball, part = out / "agent.tar.gz", out / "agent.tar.gz.part"
        with gzip.GzipFile(part, "wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w") as tar:
            tar.add(Path(tmp) / "agent" / "installer", arcname="installer",
                    filter=_reproducible)
        same = tarball.exists() and tarball.read_bytes() == part.read_bytes()
        os.replace(part, tarball)
    for src in sorted(Path(resources.FIRSTBOOT).iterdir()):
        shutil.copyfile(src, out / src.name)
        (out / src.name).chmod(src.stat().st_mode & 0o755)
    return {"agent": _artifact(tarball, same)}


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def build_netboot(outdir: str, *, mirror: str, security_mirror: str | None,
                  proxy: str | None = None, progress=print) -> dict[str, Artifact]:
    elements = ["debian-minimal", "ganeti-netboot"]
    key = input_key("netboot", elements, release=NETBOOT_RELEASE, mirror=mirror,
                    security=security_mirror)
    cached = cache_dir() / f"netboot-{key}"
    def ready() -> bool:
        return (cached / "base.cpio.zst").exists() and (cached / "vmlinuz").exists()
    hit = ready()
    if not hit:
        with dib_lock(progress):
            if not ready():         # another build may have made it while this one waited
                progress(f"building the netboot image (Debian {NETBOOT_RELEASE}, "
                         "diskimage-builder); a few minutes")
                _build_netboot_base(cached, elements, mirror, security_mirror, proxy,
                                    progress)
    out = Path(outdir) / "netboot"
    out.mkdir(parents=True, exist_ok=True)
    kernel = _place(cached / "vmlinuz", out / "vmlinuz")
    initrd = out / "initrd"
    with tempfile.TemporaryDirectory() as tmp:
        agent_cpio(Path(tmp) / "agent.cpio")
        # The plain agent archive goes first: the kernel's zstd decompressor takes the rest of
        # the initrd as its input, so an archive after the zstd one would never be unpacked.
        _concat([Path(tmp) / "agent.cpio", cached / "base.cpio.zst"], initrd)
    return {"kernel": _artifact(kernel, hit), "initrd": _artifact(initrd, hit)}


def _build_netboot_base(cached: Path, elements, mirror, security_mirror, proxy, progress):
    work = cached.with_name(cached.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = _dib_env(NETBOOT_RELEASE, mirror, security_mirror, proxy, {})
    tar = _run_dib("netboot", elements, work, env, progress)
    progress("  netboot: packing the root as the initramfs")
    _pack_root(tar, work)
    tar.unlink()
    shutil.rmtree(cached, ignore_errors=True)
    os.replace(work, cached)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def split_initrd(data: bytes) -> tuple[bytes, bytes]:
    """The initrd's two archives: the agent's plain cpio and the zstd-compressed root."""
    start = data.find(ZSTD_MAGIC)
    if start <= 0:
        raise ImageError("not a ganeti-installer initrd: no agent cpio before a zstd root")
    return data[:start], data[start:]


def _concat(parts: list[Path], dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    os.replace(tmp, dest)


# -- OS image --------------------------------------------------------------------------------

def build_os_image(outdir: str, *, release: str, packages: list[str], mirror: str,
                   security_mirror: str | None, proxy: str | None = None,
                   progress=print) -> dict[str, Artifact]:
    """The release's root as a tree (`<release>.tar.zst`, for tools that want files) and as
    the file system the agent streams onto a node's root partition (`<release>.ext4.zst`)."""
    elements = ["debian-minimal", "ganeti-node-os"]
    key = input_key("os", elements, release=release, packages=sorted(packages),
                    mirror=mirror, security=security_mirror)
    cached = cache_dir() / f"os-{release}-{key}"
    tree, rootfs = cached / "root.tar.zst", cached / f"root.{ROOTFS_VERSION}.ext4.zst"
    hit, fs_hit = tree.exists(), rootfs.exists()
    if not (hit and fs_hit):
        with dib_lock(progress):    # the cache entry is written by one build at a time
            if not tree.exists():
                probe_mirror(mirror, release)
                progress(f"building the {release} OS image ({len(packages)} node packages, "
                         "diskimage-builder); a few minutes")
                _build_os_base(cached, release, elements, packages, mirror, security_mirror,
                               proxy, progress)
            if not rootfs.exists():
                progress(f"  os: making the {release} root file system from the tree")
                _build_rootfs(cached, progress)
    out = Path(outdir) / "images"
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for kind, src, name in (("os_image", "root.tar.zst", f"{release}.tar.zst"),
                            ("os_rootfs", f"root.{ROOTFS_VERSION}.ext4.zst",
                             f"{release}.ext4.zst")):
        image = _place(cached / src, out / name)
        digest = (cached / f"{src}.sha256").read_text().split()[0]
        (out / f"{name}.sha256").write_text(f"{digest}  {name}\n")
        made[kind] = Artifact(str(image), image.stat().st_size, digest,
                              hit and (fs_hit or kind == "os_image"))
    return made


def _build_os_base(cached, release, elements, packages, mirror, security_mirror, proxy,
                   progress):
    env = _dib_env(release, mirror, security_mirror, proxy,
                   {"GANETI_NODE_PACKAGES": " ".join(packages)})
    _build_root_tarball(cached, "os", elements, env, ["zstd", "-q", "-T0", "-10", "-c"],
                        "root.tar.zst", progress)


def _build_root_tarball(cached: Path, name: str, elements: list[str], env: dict,
                        compress: list[str], output: str, progress) -> None:
    """diskimage-builder's root tarball, compressed into the cache entry with its sha256;
    the entry appears whole or not at all (built in a .work sibling, then renamed)."""
    work = cached.with_name(cached.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tar = _run_dib(name, elements, work, env, progress)
    progress(f"  {name}: compressing the {env['DIB_RELEASE']} root")
    with open(tar, "rb") as src, open(work / output, "wb") as dst:
        subprocess.run(compress, stdin=src, stdout=dst, check=True)
    tar.unlink()
    _write_sha256(work / output)
    shutil.rmtree(cached, ignore_errors=True)
    os.replace(work, cached)


# Bumped when the file system's making changes, so a cached tree gets a new one.
ROOTFS_VERSION = "fs2"
GRUB_PLATFORMS = ("i386-pc", "x86_64-efi")
# The node's root partition is what the file system grows into (resize2fs): it is made
# only as large as its files need, so the node writes no more than that.
ROOTFS_SLACK = 1.15
ROOTFS_EXTRA = 96 << 20     # the 64 MiB journal, lost+found, and inode tables' growth


def _build_rootfs(cached: Path, progress) -> None:
    """The tree as an ext4 image: `mkfs.ext4 -d`, no loop device or mount needed.

    With the features mkfs.ext4 gives the 10 GiB root on a node (`-T default`, a 64 MiB
    journal), so the grown file system is the one the agent used to make and unpack into."""
    name = f"root.{ROOTFS_VERSION}.ext4"
    with tempfile.TemporaryDirectory(dir=cached) as tmp:
        tree, fs = Path(tmp) / "root", Path(tmp) / name
        tree.mkdir(mode=0o755)
        subprocess.run(["tar", "--zstd", "-xpf", str(cached / "root.tar.zst"),
                        "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(tree)],
                       check=True)
        for mountpoint in ("proc", "sys", "dev", "run", "tmp"):   # the tar leaves them out
            (tree / mountpoint).mkdir(exist_ok=True)
        (tree / "tmp").chmod(0o1777)
        # GRUB's modules where grub-install would copy them: the node then only makes its
        # core images (hundreds of small files, seconds on an old PC).
        for platform in GRUB_PLATFORMS:
            src = tree / "usr/lib/grub" / platform
            if src.is_dir():
                shutil.copytree(src, tree / "boot/grub" / platform, symlinks=True)
        used = int(subprocess.run(["du", "-s", "--block-size=1", str(tree)], check=True,
                                  capture_output=True, text=True).stdout.split()[0])
        size = (int(used * ROOTFS_SLACK) + ROOTFS_EXTRA) // (1 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-T", "default", "-J", "size=64", "-L", "root",
                        "-d", str(tree), str(fs), f"{size}M"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["e2fsck", "-f", "-n", str(fs)], check=True, capture_output=True)
        part = cached / f"{name}.zst.part"
        subprocess.run(["zstd", "-q", "-f", "-T0", "-10", str(fs), "-o", str(part)], check=True)
        os.replace(part, cached / f"{name}.zst")
    _write_sha256(cached / f"{name}.zst")
    for stale in cached.glob("root.*.ext4.zst*"):     # an older recipe's
        if not stale.name.startswith(f"{name}.zst"):
            stale.unlink()
    progress(f"  os: root file system {size} MiB")


def _write_sha256(path: Path) -> None:
    path.with_name(path.name + ".sha256").write_text(f"{sha256_file(path)}  {path.name}\n")


# -- instance images -------------------------------------------------------------------------

def build_instance_image(release: str, *, mirror: str, security_mirror: str | None,
                         proxy: str | None = None, progress=print) -> Artifact:
    """A Debian release's root for Ganeti instances (`[[instance_image.images]] build`), a
    gzip tarball in the cache: the image OS definition unpacks it into a partition it makes
    and installs the tarball's own GRUB. gzip because `tar -x` on every node of every release
    reads it without a zstd-aware tar."""
    elements = ["debian-minimal", "ganeti-instance-os"]
    key = input_key("instance", elements, release=release, mirror=mirror,
                    security=security_mirror)
    cached = cache_dir() / f"instance-{release}-{key}"
    tarball = cached / "root.tar.gz"
    hit = tarball.exists()
    if not hit:
        with dib_lock(progress):
            if not tarball.exists():
                probe_mirror(mirror, release)
                progress(f"building the {release} instance image (diskimage-builder); "
                         "a few minutes")
                env = _dib_env(release, mirror, security_mirror, proxy, {})
                _build_root_tarball(cached, "instance", elements, env,
                                    ["gzip", "-6", "-n", "-c"], tarball.name, progress)
    digest = (cached / "root.tar.gz.sha256").read_text().split()[0]
    return Artifact(str(tarball), tarball.stat().st_size, digest, hit)


# -- placing cached files --------------------------------------------------------------------

def _place(src: Path, dest: Path) -> Path:
    """Hard-link a cached file into the output (a copy across file systems)."""
    tmp = dest.with_name(dest.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return dest


def _artifact(path: Path, cached: bool) -> Artifact:
    return Artifact(str(path), path.stat().st_size, sha256_file(path), cached)
