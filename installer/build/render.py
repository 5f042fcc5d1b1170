"""`render`: plans, PXE tree, dnsmasq configuration and a browsable copy of each node's files.

Everything is rendered in memory and checked first; only then is OUTDIR written, so a bad
cluster file or a template fault leaves no half-written output behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field

from installer.agent import planschema
from installer.build.plan import PlanRenderer
from installer.cluster import layout
from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError


def render_plans(cluster: Cluster) -> dict[str, dict]:
    """Plan per node name, each checked against the plan schema."""
    renderer = PlanRenderer(cluster)
    schema = planschema.load_schema()
    plans = {}
    for node in cluster.nodes:
        plan = renderer.render(node)
        problems = planschema.check(plan, schema)
        if problems:
            raise InstallerError(f"rendered plan of {node.name} breaks the plan schema "
                                 f"(a bug in ganeti-installer): {problems[0]}")
        plans[node.name] = plan
    return plans


def _write(path: str, content: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(path, mode)


def write_plans(plans: dict[str, dict], outdir: str) -> list[str]:
    """OUTDIR/plans/<name>.json and OUTDIR/nodes/<name>/<target path> for every file."""
    written = []
    for name, plan in plans.items():
        rel = layout.plan_path(name)
        _write(os.path.join(outdir, rel), json.dumps(plan, indent=2, sort_keys=True) + "\n",
               0o600)  # holds the root password hash
        written.append(rel)
        tree = os.path.join(outdir, "nodes", name)
        if os.path.isdir(tree):
            shutil.rmtree(tree)  # files a changed cluster file no longer makes must go
        for d in plan["directories"]:
            os.makedirs(tree + d["path"], exist_ok=True)
            os.chmod(tree + d["path"], int(d["mode"], 8))
        for f in plan["files"]:
            _write(tree + f["path"], f["content"], int(f["mode"], 8))
            written.append(f"nodes/{name}{f['path']}")
        for e in plan["edits"]:
            _write(f"{tree}{e['path']}.edit",
                   f"# ganeti-installer edits this file of the OS, it does not replace it:\n"
                   f"# in section '{e['section']}', the line matching {e['match']}\n"
                   f"# becomes (or, if none matches, gains) the line:\n{e['line']}\n")
            written.append(f"nodes/{name}{e['path']}.edit")
        _write(os.path.join(tree, "debconf-selections"), plan["debconf"])
        written.append(f"nodes/{name}/debconf-selections")
    return written


# Kernel file systems: a directory there takes no files (or worse, writing means something).
PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
             "securityfs", "configfs", "pstore", "bpf", "efivarfs", "mqueue", "hugetlbfs",
             "fusectl", "binfmt_misc", "autofs", "rpc_pipefs", "nsfs"}


def check_outdir(outdir: str) -> None:
    """Refuse an OUTDIR render cannot write, before the first write: a file, a path under
    a file, a kernel file system, a read-only one."""
    path = os.path.abspath(outdir)
    probe = path
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    try:
        st = os.stat(probe)
    except OSError as e:
        raise InstallerError(f"OUTDIR {outdir}: {probe} cannot be examined ({e.strerror}); "
                             "choose another output directory") from None
    if not stat.S_ISDIR(st.st_mode):
        what = "is" if probe == path else f"lies under {probe}, which is"
        raise InstallerError(f"OUTDIR {outdir} {what} not a directory; choose a directory "
                             "path (it is created if missing)")
    fs = _fs_type(probe)
    if fs in PSEUDO_FS:
        raise InstallerError(f"OUTDIR {outdir} is on the kernel's {fs} file system; choose a "
                             "directory on a disk, e.g. ./out")
    if os.statvfs(probe).f_flag & os.ST_RDONLY or not os.access(probe, os.W_OK | os.X_OK):
        raise InstallerError(f"OUTDIR {outdir}: {probe} is not writable; choose a directory "
                             "you may write")


def _fs_type(path: str) -> str | None:
    """The type of the file system holding path, from the longest matching mount point."""
    real, best, fs = os.path.realpath(path), "", None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    for fields in mounts:
        point = fields[1].replace("\\040", " ") if len(fields) > 2 else ""
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fs = point, fields[2]
    return fs


def render(cluster: Cluster, outdir: str, built: dict[str, str] | None = None) -> list[str]:
    """Render everything but images into OUTDIR; return the paths written (relative).
    built: the instance images `build` made, by name (render alone keeps OUTDIR's copies)."""
    from installer.build import (
        dnsmasq,
        pxe,  # the PXE side reads the same model
    )

    plans = render_plans(cluster)
    check_outdir(outdir)
    # Stage in a sibling temp dir, then move into place: a failure writes nothing.
    parent = os.path.dirname(os.path.abspath(outdir))
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".render-", dir=parent)
    try:
        written = write_plans(plans, stage)
        written += write_instance_images(cluster, stage, built or {}, keep_from=outdir)
        written += pxe.render_pxe(cluster, stage, plans=plans)
        # dnsmasq names its TFTP root by absolute path: OUTDIR's, not the stage's.
        written += dnsmasq.render_dnsmasq(cluster, stage, final_outdir=outdir)
        _install(stage, outdir, written)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if not cluster.instance_image.images:   # none any more: the old copies must go
        shutil.rmtree(os.path.join(outdir, layout.INSTANCE_IMAGES), ignore_errors=True)
    return written


def write_instance_images(cluster: Cluster, outdir: str, built: dict[str, str] | None = None,
                          keep_from: str | None = None) -> list[str]:
    """OUTDIR/instance-images/<name>-<arch>.<suffix> and its .sha256, which the nodes check
    it against (a hard link to the cluster file's image, or to the one `build` made, where the
    file system allows). A built image that this call was not given stays as keep_from (the
    OUTDIR of an earlier build) has it, if it does."""
    written = []
    for image in cluster.instance_image.images:
        rel = f"{layout.INSTANCE_IMAGES}/{image.filename}"
        source = image.file or (built or {}).get(image.name)
        if source is None and keep_from and os.path.isfile(os.path.join(keep_from, rel)):
            source = os.path.join(keep_from, rel)
        if source is None:          # built by `build`, which has not run yet
            continue
        target = os.path.join(outdir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        os.chmod(target, 0o644)
        _write(target + ".sha256", f"{_sha256(target)}  {image.filename}\n")
        written += [rel, rel + ".sha256"]
    return written


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _install(stage: str, outdir: str, written: list[str]) -> None:
    """Move the staged files into OUTDIR, keeping what `build` put there (images)."""
    os.makedirs(outdir, exist_ok=True)
    for top in sorted({w.split("/")[0] for w in written}):
        target = os.path.join(outdir, top)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(os.path.join(stage, top), target)


@dataclass
class Replaced:
    """What render_in_place replaced in OUTDIR: each file's old bytes and mode (None: it was
    not there) and the directories it made, so that `restore` puts exactly that back."""
    outdir: str
    old: dict[str, tuple[bytes, int] | None] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)


def render_in_place(cluster: Cluster, outdir: str, names: list[str]) -> Replaced:
    """The files a new MAC of the nodes NAMES touches, rendered again into the OUTDIR serve
    is serving (`rebuild --mac`): those nodes' plans and files, their PXE entries and the
    dnsmasq configurations; each file that changed is replaced whole, nothing is removed, and
    no other node's file is written (OUTDIR may hold what an older cluster file, apt sources
    or ganeti-installer rendered: that is `render`'s to change, not a MAC's). The active
    entries are left to the handoff (serve sets them from its state). Returns what it
    replaced, for `restore`; on a failure what it wrote is put back first."""
    from installer.cluster import files

    done = Replaced(outdir)
    try:
        for rel, content, mode in _staged(cluster, outdir, names):
            dst = os.path.join(outdir, rel)
            if _holds(dst, content):
                continue
            done.made += _mkdirs(outdir, os.path.dirname(rel))
            done.old[rel] = _old(dst)
            files.write_atomically(dst, content, mode)
    except BaseException:
        restore(done)
        raise
    return done


def differing(cluster: Cluster, outdir: str, names: list[str]) -> list[str]:
    """The files render_in_place would replace in OUTDIR for CLUSTER: none where OUTDIR was
    rendered from it (relative paths)."""
    return [rel for rel, content, _ in _staged(cluster, outdir, names)
            if not _holds(os.path.join(outdir, rel), content)]


def _staged(cluster: Cluster, outdir: str, names: list[str]) -> list[tuple[str, bytes, int]]:
    """(path, content, mode) of each file a MAC of the nodes NAMES touches, rendered."""
    from installer.build import dnsmasq, pxe

    plans = render_plans(cluster)
    macs = {n.mac for n in cluster.nodes if n.name in names}
    wanted = {layout.entry_path(mac, form, kind) for mac in macs for form in layout.FORMS
              for kind in layout.KINDS}
    stage = tempfile.mkdtemp(prefix=".render-", dir=os.path.dirname(os.path.abspath(outdir)))
    try:
        written = write_plans({name: plans[name] for name in names}, stage)
        written += [rel for rel in pxe.render_entries(cluster, stage, plans=plans)
                    if rel in wanted]
        written += dnsmasq.render_dnsmasq(cluster, stage, final_outdir=outdir)
        found = []
        for rel in written:
            with open(os.path.join(stage, rel), "rb") as f:
                found.append((rel, f.read(), stat.S_IMODE(os.fstat(f.fileno()).st_mode)))
        return found
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def restore(done: Replaced) -> None:
    """OUTDIR's files as they were before render_in_place: the old bytes and mode back, a
    file that was not there removed, and the directories it made (if empty)."""
    from installer.cluster import files
    for rel, old in reversed(list(done.old.items())):
        path = os.path.join(done.outdir, rel)
        if old is None:
            if os.path.lexists(path):
                os.unlink(path)
        else:
            files.write_atomically(path, old[0], old[1])
    for rel in reversed(done.made):
        try:
            os.rmdir(os.path.join(done.outdir, rel))
        except OSError:
            pass        # not empty: something else is in it now


def _old(path: str) -> tuple[bytes, int] | None:
    try:
        with open(path, "rb") as f:
            return f.read(), stat.S_IMODE(os.fstat(f.fileno()).st_mode)
    except FileNotFoundError:
        return None


def _holds(path: str, content: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read() == content
    except FileNotFoundError:
        return False


def _mkdirs(outdir: str, rel: str) -> list[str]:
    """OUTDIR/REL and the directories above it, world-searchable (dnsmasq reads the TFTP
    tree as an unprivileged user), whatever the umask. Returns those it made (relative)."""
    path, made = outdir, []
    for part in [p for p in rel.split("/") if p]:
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path)
            os.chmod(path, 0o755)
            made.append(os.path.relpath(path, outdir))
    return made
