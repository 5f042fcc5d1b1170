"""OUTDIR's layout: every path that `build` writes and `serve` reads, named once.

    plans/<node>.json                  each node's plan, without its token
    nodes/<node>/…                     the same files one by one, for people to read
    tftp/                              the TFTP root (also served over HTTP as /tftp/)
    tftp/entries/<mac>/<form>.<kind>   both forms of a node's PXE entry for each loader
    tftp/ipxe/<mac>.ipxe, tftp/pxelinux.cfg/01-<mac>, tftp/grub/grub.cfg-01-<mac>
                                       the active form, where each loader looks (the handoff)
    dnsmasq/{dnsmasq.conf,dnsmasq-proxy.conf,mode}   both configurations and the chosen one
    netboot/, images/, agent/, manifest.json          what `serve` publishes over HTTP
    instance-images/<name>-<arch>.<raw|qcow2|tar>(.sha256)
                                       the cluster file's instance images, for the nodes
"""
from __future__ import annotations

import os

from installer.cluster.errors import InstallerError

PLANS = "plans"
NODES = "nodes"
TFTP = "tftp"
MANIFEST = "manifest.json"
INSTANCE_IMAGES = "instance-images"
# What serve publishes; everything else stays private.
SERVED = ("netboot", "images", TFTP, "agent", MANIFEST, INSTANCE_IMAGES)
FORMS = ("install", "local")            # a node's PXE entry: install it, or boot its disk
KINDS = ("ipxe", "pxelinux", "grub")    # the loaders we render entries for
DNSMASQ_MODE = os.path.join("dnsmasq", "mode")
DNSMASQ_CONFIGS = {"server": "dnsmasq.conf", "proxy": "dnsmasq-proxy.conf"}


def dashed(mac: str) -> str:
    """52-54-00-..: the MAC as iPXE's ${mac:hexhyp}, pxelinux and GRUB name files by it."""
    return mac.replace(":", "-")


def plan_path(name: str) -> str:
    return f"{PLANS}/{name}.json"


def entry_path(mac: str, form: str, kind: str) -> str:
    return f"{TFTP}/entries/{dashed(mac)}/{form}.{kind}"


def active_paths(mac: str) -> dict[str, str]:
    """Where each loader looks for this MAC's entry, relative to OUTDIR."""
    d = dashed(mac)
    return {"ipxe": f"{TFTP}/ipxe/{d}.ipxe", "pxelinux": f"{TFTP}/pxelinux.cfg/01-{d}",
            "grub": f"{TFTP}/grub/grub.cfg-01-{d}"}


def active_dnsmasq_config(outdir: str) -> str:
    """The configuration `serve` runs dnsmasq with: the mode the cluster file chose."""
    with open(os.path.join(outdir, DNSMASQ_MODE), encoding="utf-8") as f:
        mode = f.read().strip()
    if mode not in DNSMASQ_CONFIGS:
        raise InstallerError(f"{outdir}/{DNSMASQ_MODE} says '{mode}': run ganeti-installer render")
    return os.path.join(outdir, "dnsmasq", DNSMASQ_CONFIGS[mode])
