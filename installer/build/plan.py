"""Node plans: everything one node must get, rendered on the build host.

A plan is plain JSON the agent executes without templating: identity, the storage actions,
how to lay down the OS, packages, debconf answers, every file with its mode, the hooks to run
and where to report. Its shape is `installer/plan.schema.json`, checked here and on the node.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import jinja2

from installer.agent import rules
from installer.agent.osdef import osdir
from installer.agent.osdef import settings as ossettings
from installer.agent.version import __version__
from installer.build import resources
from installer.cluster import layout, sizes
from installer.cluster.config import Cluster, Node

PLAN_VERSION = 1
TEMPLATES, PRESEED, HOOKS = resources.TEMPLATES, resources.PRESEED, resources.HOOKS
PHASES = ("pre-partition", "post-partition", "post-install", "pre-reboot")
LVM_FILTER = '[ "r|/dev/cdrom|", "r|/dev/drbd[0-9]+|" ]'
ESP_SIZE = 512 * sizes.MiB
BIOS_GRUB_SIZE = 1 * sizes.MiB
INSTANCE_IMAGES = layout.INSTANCE_IMAGES


def plan_url(cluster: Cluster, node: Node) -> str:
    """Where `serve` hands out the node's plan, with its token: by MAC, in the dashed form
    the PXE entry for that MAC is named by."""
    return f"{cluster.provisioning.base_url}/api/v1/plans/{node.mac.replace(':', '-')}"


@dataclass(frozen=True)
class NodeFile:
    path: str
    template: str
    mode: str = "0644"


@functools.lru_cache(maxsize=16)
def template_env(*dirs: str) -> jinja2.Environment:
    """One environment per template directories, so each template is compiled once per
    process (validate renders every plan in memory too)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(list(dirs)), trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


class PlanRenderer:
    """Renders plans for the nodes of one cluster; templates are compiled once."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.release = cluster.release
        self.env = template_env(os.path.join(TEMPLATES, "node"),
                        os.path.join(PRESEED, self.release.preseed_family))
        self.hooks = _read_hooks()

    def node_files(self) -> list[NodeFile]:
        """Which files a node of this cluster gets, per its release."""
        rel = self.release
        files = [
            NodeFile("/etc/hostname", "hostname.j2"),
            NodeFile("/etc/hosts", "hosts.j2"),
            NodeFile("/etc/resolv.conf", "resolv.conf.j2"),
            NodeFile("/etc/network/interfaces", "interfaces.j2"),
            NodeFile("/etc/modprobe.d/drbd.conf", "drbd.conf.j2"),
            NodeFile("/etc/modules", "modules.j2"),
            NodeFile(rel.ntp_conf, "ntp.conf.j2"),
            NodeFile("/etc/apt/sources.list", "sources.list.j2"),
            NodeFile("/root/.ssh/authorized_keys", "authorized_keys.j2", "0600"),
        ]
        if rel.init == "systemd":
            files.append(NodeFile(f"/etc/systemd/network/10-{self.cluster.provisioning.nic}.link",
                                  "nic.link.j2"))
            files.append(NodeFile("/etc/lvm/lvmlocal.conf", "lvmlocal.conf.j2"))
        else:
            files.append(NodeFile("/etc/udev/rules.d/70-persistent-net.rules",
                                  "persistent-net.rules.j2"))
        if rel.backports:
            # The paper's own file name (section 2.8).
            files.append(NodeFile(f"/etc/apt/sources.list.d/{rel.name}backports.list",
                                  "backports.list.j2"))
        if rel.archived:
            files.append(NodeFile("/etc/apt/apt.conf.d/10archive", "archive.apt.conf.j2"))
        if self.cluster.apt.proxy:
            files.append(NodeFile("/etc/apt/apt.conf.d/01proxy", "proxy.apt.conf.j2"))
        return files

    def edits(self) -> list[dict]:
        """Line edits of files the OS owns; only where no drop-in directory exists."""
        if self.release.init == "systemd":
            return []
        # wheezy's LVM has no lvmlocal.conf: set the paper's filter line in lvm.conf.
        return [{"path": "/etc/lvm/lvm.conf", "match": r"^\s*filter\s*=",
                 "line": f"    filter = {LVM_FILTER}", "section": "devices"}]

    def render(self, node: Node) -> dict:
        ctx = {"cluster": self.cluster, "node": node, "release": self.release,
               "lvm_filter": LVM_FILTER}
        files = [{"path": f.path, "mode": f.mode,
                  "content": self.env.get_template(f.template).render(ctx)}
                 for f in self.node_files()] + self.image_os_files()
        plan = {
            "plan_version": PLAN_VERSION,
            "generator": f"ganeti-installer {__version__}",
            "node": {"name": node.name, "fqdn": node.fqdn, "mac": node.mac, "ip": node.ip,
                     "role": node.role},
            "cluster": {"name": self.cluster.fqdn, "master": self.cluster.node(
                self.cluster.master).fqdn, "vg": self.cluster.storage.vg},
            "release": {"name": self.release.name, "init": self.release.init},
            "install": self._install(),
            "storage": self._storage(),
            "packages": self.release.node_packages(self.cluster.hypervisor),
            "debconf": self.env.get_template("node.cfg.j2").render(ctx),
            "directories": [{"path": "/root/.ssh", "mode": "0700"},
                            {"path": "/iso", "mode": "0755"}],
            "files": files,
            "edits": self.edits(),
            "users": {"root": {"password_hash": self.cluster.root_password_hash}},
            "hooks": self.hooks,
            "report": {"url": f"{self.cluster.provisioning.base_url}/api/v1/nodes/{node.name}",
                       "boot_url": f"{self.cluster.boot_report_url}/api/v1/nodes/{node.name}"},
            "kernel_args": "console=tty0 console=ttyS0,115200n8",
            "finish": "reboot",
        }
        if self.image_os():
            plan["instance_images"] = self.instance_images()
        return plan

    def image_os(self) -> bool:
        """The image OS definition runs on the node's python3: 3.9 or later, so not on
        wheezy's 3.2 (whose nodes get no image OS)."""
        return not self.release.archived

    def image_os_files(self) -> list[dict]:
        """The image OS definition (API scripts, its package) and the paper's settings files
        for the cluster file's variants: every node gets them at every install."""
        if not self.image_os():
            return []
        variants = {v.name: v.settings() for v in self.cluster.instance_image.variants}
        return [{"path": path, "mode": mode, "content": content}
                for path, mode, content in osdir.scripts() + osdir.configuration(variants)]

    def instance_images(self) -> list[dict]:
        """Where the node fetches each instance image from, and where it puts it."""
        base = f"{self.cluster.provisioning.base_url}/{INSTANCE_IMAGES}"
        folder = ossettings.SETTINGS["IMAGE_DIR"].default
        return [{"url": f"{base}/{i.filename}", "checksum_url": f"{base}/{i.filename}.sha256",
                 "path": f"{folder}/{i.filename}"}
                for i in self.cluster.instance_image.images]

    def _install(self) -> dict:
        base = self.cluster.provisioning.base_url
        rel, apt = self.release, self.cluster.apt
        out = {
            "method": self.cluster.install_method,
            "debootstrap": {"suite": rel.name, "mirror": apt.mirror, "variant": "minbase"},
            "proxy": apt.proxy,
            "initramfs_modules": self.cluster.initramfs_modules,
        }
        if self.cluster.install_method == "image":
            url = f"{base}/images/{rel.name}.ext4.zst"
            out["image"] = {"url": url, "checksum_url": f"{url}.sha256", "format": "ext4.zst"}
        return out

    def _storage(self) -> dict:
        st = self.cluster.storage
        # (id, size in bytes or None for the rest of the disk, GPT type)
        parts: list[tuple[str, int | None, str]] = [
            (rules.BIOS_GRUB, BIOS_GRUB_SIZE, "bios_grub"), (rules.ESP, ESP_SIZE, "esp")]
        if st.swap:
            parts.append((rules.SWAP, st.swap, "swap"))
        parts += [(rules.ROOT, st.root, "linux"), (rules.PV, None, "lvm")]
        actions: list[dict] = [{"id": rules.DISK_ID, "type": "disk", "ptable": "gpt",
                                "match": dict(st.disk) or {"largest": True}, "wipe": st.wipe}]
        for number, (pid, size, flag) in enumerate(parts, start=1):
            actions.append({"id": pid, "type": "partition", "device": rules.DISK_ID,
                            "number": number, "size": size, "flag": flag})
        actions.append({"id": rules.vg_id(st.vg), "type": "lvm_volgroup", "name": st.vg,
                        "devices": [rules.PV]})
        formats = [(rules.ESP, "vfat")] + ([(rules.SWAP, "swap")] if st.swap else []) + \
            [(rules.ROOT, "ext4")]
        for volume, fstype in formats:
            actions.append({"id": rules.format_id(volume), "type": "format", "volume": volume,
                            "fstype": fstype})
        for volume, path in ((rules.ROOT, "/"), (rules.ESP, "/boot/efi")):
            actions.append({"id": rules.mount_id(volume), "type": "mount",
                            "device": rules.format_id(volume), "path": path})
        return {"min_disk": BIOS_GRUB_SIZE + ESP_SIZE + st.swap + st.root + rules.MIN_VG_BYTES,
                "actions": actions}


def _read_hooks() -> list[dict]:
    """Every agent hook shipped in hooks/agent/<phase>.d, in run-parts order."""
    hooks = []
    for phase in PHASES:
        folder = os.path.join(HOOKS, f"{phase}.d")
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith(".") or not os.access(path, os.X_OK):
                continue
            with open(path, encoding="utf-8") as f:
                hooks.append({"phase": phase, "name": name, "content": f.read()})
    return hooks
