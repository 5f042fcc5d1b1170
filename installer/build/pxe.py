"""The PXE tree under OUTDIR/tftp: boot loaders and both forms of every node's entry.

OUTDIR/tftp is the TFTP root and, served over HTTP, `{base_url}/tftp/`: firmware fetches a
loader by TFTP, iPXE fetches everything else by HTTP. Each node has its entries rendered in both
forms under tftp/entries/<mac>/; the active form is a copy at the path each loader looks for
(installer.cluster.outdir), so `serve` flips a node from install to local boot by copying
files, with no rendering (installer.master.handoff).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from installer.agent import rules
from installer.build import plan
from installer.cluster.config import Cluster, Node
from installer.cluster.errors import InstallerError
from installer.cluster.layout import FORMS, KINDS, active_paths, entry_path

TEMPLATES = os.path.join(plan.TEMPLATES, "pxe")
DEFAULTS = {"ipxe": "tftp/ipxe/default.ipxe", "pxelinux": "tftp/pxelinux.cfg/default",
            "grub": "tftp/grub/grub.cfg"}


@dataclass(frozen=True)
class Loader:
    name: str           # its name in tftp/
    source: str
    package: str        # the Debian package that ships it
    optional: bool = False


LOADERS = (
    Loader("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe", "ipxe"),
    Loader("ipxe.efi", "/usr/lib/ipxe/ipxe.efi", "ipxe"),
    Loader("pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    # lpxelinux.0 is the pxelinux that can fetch http:// paths (the entries' kernel).
    Loader("lpxelinux.0", "/usr/lib/PXELINUX/lpxelinux.0", "pxelinux", optional=True),
    Loader("ldlinux.c32", "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"),
)
GRUB_IMAGE = "grubnetx64.efi"
GRUB_DIR = "/usr/lib/grub/x86_64-efi"
# Built into the image so it needs no module directory on the server.
GRUB_MODULES = ("normal", "configfile", "echo", "sleep", "test", "minicmd", "efinet", "net",
                "tftp", "http", "linux", "chain", "search", "search_fs_file", "part_gpt",
                "part_msdos", "fat", "ext2", "efi_gop", "all_video", "reboot", "halt")
GRUB_PACKAGES = ("grub-efi-amd64-bin", "grub-common")


def cmdline(cluster: Cluster, node: Node, node_plan: dict) -> str:
    """The netboot kernel's command line: the plan's arguments and where the plan is."""
    return f"{node_plan['kernel_args']} {rules.PLAN_ARG}={plan.plan_url(cluster, node)}"


def render_pxe(cluster: Cluster, outdir: str, *,
               plans: dict[str, dict] | None = None) -> list[str]:
    """Write OUTDIR/tftp: loaders and entries; every node's active entry is `install`."""
    return install_loaders(outdir) + render_entries(cluster, outdir, plans=plans)


def install_loaders(outdir: str) -> list[str]:
    """The binary half of the tree, from the build host's Debian packages."""
    return copy_loaders(outdir) + build_grub(outdir) + write_versions(outdir)


def render_entries(cluster: Cluster, outdir: str, *,
                   plans: dict[str, dict] | None = None) -> list[str]:
    """boot.ipxe, the defaults for unknown MACs, and both forms of every node's entries."""
    if plans is None:
        renderer = plan.PlanRenderer(cluster)
        plans = {n.name: renderer.render(n) for n in cluster.nodes}
    env = plan.template_env(TEMPLATES)
    p = cluster.provisioning
    base = {"cluster": cluster, "base_url": p.base_url, "http_host": f"{p.address}:{p.http_port}"}
    written = [_put(outdir, "tftp/boot.ipxe", env.get_template("boot.ipxe.j2").render(base))]
    unknown = dict(base, form="unknown", node=None, plan_url=None, cmdline=None)
    for kind in KINDS:
        written.append(_put(outdir, DEFAULTS[kind],
                            env.get_template(f"entry.{kind}.j2").render(unknown)))
    for node in cluster.nodes:
        ctx = dict(base, node=node, plan_url=plan.plan_url(cluster, node),
                   cmdline=cmdline(cluster, node, plans[node.name]))
        for form in FORMS:
            for kind in KINDS:
                text = env.get_template(f"entry.{kind}.j2").render(ctx, form=form)
                written.append(_put(outdir, entry_path(node.mac, form, kind), text))
        for kind, path in active_paths(node.mac).items():
            with open(os.path.join(outdir, entry_path(node.mac, "install", kind)),
                      encoding="utf-8") as f:
                written.append(_put(outdir, path, f.read()))
    return written


def _put(outdir: str, rel: str, content: str | bytes) -> str:
    """Write a file readable by all: dnsmasq serves it as an unprivileged user."""
    path = os.path.join(outdir, rel)
    _mkdir(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    os.chmod(path, 0o644)
    return rel


def _mkdir(path: str) -> None:
    if path and not os.path.isdir(path):
        _mkdir(os.path.dirname(path))
        os.mkdir(path)
        os.chmod(path, 0o755)   # whatever the umask


def copy_loaders(outdir: str) -> list[str]:
    """The firmware-loaded files, copied from the build host's Debian packages."""
    found = [lo for lo in LOADERS if os.path.isfile(lo.source)]
    for loader in LOADERS:
        if loader not in found and not loader.optional:
            raise InstallerError(f"boot loader {loader.source} is missing: install the Debian "
                                 f"package {loader.package} (apt-get install {loader.package})")
    written = []
    for loader in found:
        with open(loader.source, "rb") as f:
            written.append(_put(outdir, f"tftp/{loader.name}", f.read()))
    return written


def build_grub(outdir: str) -> list[str]:
    """GRUB's UEFI netboot image; it reads (tftp)/grub/grub.cfg-01-<mac>, then grub.cfg."""
    mkimage = shutil.which("grub-mkimage")
    if mkimage is None or not os.path.isdir(GRUB_DIR):
        raise InstallerError(f"{'grub-mkimage' if mkimage is None else GRUB_DIR} is missing: "
                             f"install the Debian packages {' and '.join(GRUB_PACKAGES)} "
                             f"(apt-get install {' '.join(GRUB_PACKAGES)})")
    rel = f"tftp/{GRUB_IMAGE}"
    _mkdir(os.path.join(outdir, "tftp"))
    argv = [mkimage, "-O", "x86_64-efi", "-d", GRUB_DIR, "-p", "(tftp)/grub",
            "-o", os.path.join(outdir, rel), *GRUB_MODULES]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallerError(f"grub-mkimage failed: {done.stderr.strip()}; reinstall "
                             f"{' and '.join(GRUB_PACKAGES)}")
    os.chmod(os.path.join(outdir, rel), 0o644)
    return [rel]


def write_versions(outdir: str) -> list[str]:
    """tftp/VERSIONS: which package version each loader came from, for bug reports."""
    packages = sorted({lo.package for lo in LOADERS} | set(GRUB_PACKAGES))
    lines = ["# Debian packages of the boot loaders in this directory (dpkg-query)"]
    for package in packages:
        try:
            done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                  capture_output=True, text=True, check=False)
            version = done.stdout.strip() if done.returncode == 0 else ""
        except FileNotFoundError:   # not a Debian host
            version = ""
        lines.append(f"{package} {version or 'unknown'}")
    return [_put(outdir, "tftp/VERSIONS", "\n".join(lines) + "\n")]
