"""Rules the node and the build host must agree on, kept once, here, where the agent (which
imports nothing else of the project) can read them and every other side may import them."""
from __future__ import annotations

import hashlib
import re

# A MAC as plans, state and file names carry it: six lower-case hex bytes, colon separated.
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# The same, or dashed as PXE loaders and the plan URL write it (52-54-00-...).
MAC_ANY = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}|[0-9a-f]{2}(-[0-9a-f]{2}){5}")
MIN_VG_BYTES = 20 << 30          # Ganeti refuses a smaller volume group at gnt-cluster init
PLAN_ARG = "installer.plan"      # the kernel argument that names the plan's URL

# The install stick (installer/build/usb.py makes it, installer/agent/stick.py reads it):
# its ESP's FAT label, the folder of plans and index on it, where the agent mounts it
# (read-only), and the plan source on the kernel command line: usb:<FAT UUID>[:<node>].
STICK_LABEL = "GI-INSTALL"
STICK_DIR = "ganeti-installer"
STICK_MOUNT = "/run/ganeti-installer/stick"
STICK_SCHEME = "usb:"

# Storage: the ids the build side gives a plan's actions and the agent looks up, and the GPT
# name the agent gives each partition it makes (`gi-<action id>`): a disk whose partitions all
# carry that prefix is ours to re-partition.
GPT_NAME_PREFIX = "gi-"
DISK_ID = "disk0"
BIOS_GRUB, ESP, SWAP, ROOT, PV = "bios-grub", "esp", "swap", "root", "pv0"


def format_id(volume: str) -> str:
    """The id of the action that makes the file system on partition `volume`."""
    return f"fmt-{volume}"


def mount_id(volume: str) -> str:
    return f"mnt-{volume}"


def vg_id(vg: str) -> str:
    return f"vg-{vg}"


# The GPT disk GUID the agent gives the disk it partitions: 16 hex digits naming the cluster
# (its FQDN, hashed), 16 naming the install (the plan's hash). Read back with blkid, no
# mount and no LVM needed: the whole GUID is this install (a power cut resumes it), the
# first half an earlier install for this cluster (a reinstall tears it down); any other
# GUID on a disk of gi- partitions is another cluster's (refused like foreign data).
def disk_guid(cluster_fqdn: str, install: str) -> str:
    digits = hashlib.sha256(f"ganeti-installer {cluster_fqdn}".encode()).hexdigest()[:16] + \
        install[:16]
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


def same_cluster(guid: str, ours: str) -> bool:
    """Whether a disk GUID names the same cluster as ours (any install of it)."""
    return guid.replace("-", "").lower()[:16] == ours.replace("-", "").lower()[:16]
