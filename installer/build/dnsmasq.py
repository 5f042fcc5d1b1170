"""dnsmasq configurations for the provisioning network: DHCP server or proxy DHCP, and TFTP.

Both are always written (OUTDIR/dnsmasq/dnsmasq.conf and dnsmasq-proxy.conf) so an admin can
switch by hand; OUTDIR/dnsmasq/mode names the one the cluster file chose, which `serve` runs.
"""

from __future__ import annotations

import os
import re

from installer.build import plan
from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError
from installer.cluster.layout import DNSMASQ_CONFIGS as CONFIGS
from installer.cluster.layout import DNSMASQ_MODE

TEMPLATES = os.path.join(plan.TEMPLATES, "dnsmasq")
# A tftp-root value ends at a comma (an interface name follows) or a newline.
UNSAFE_PATH = re.compile(r"[,\s\"'#]")


def render_dnsmasq(cluster: Cluster, outdir: str, *, final_outdir: str | None = None) -> list[str]:
    """Write both configurations; tftp-root is FINAL_OUTDIR/tftp (OUTDIR may be a stage)."""
    tftp_root = os.path.join(os.path.abspath(final_outdir or outdir), "tftp")
    if UNSAFE_PATH.search(tftp_root):
        raise InstallerError(f"dnsmasq cannot serve TFTP from '{tftp_root}': choose an output "
                             "directory whose path has no spaces, commas, quotes or '#'")
    env = plan.template_env(TEMPLATES)
    p = cluster.provisioning
    ctx = {"cluster": cluster, "p": p, "tftp_root": tftp_root,
           "boot_url": f"{p.base_url}/tftp/boot.ipxe"}
    written = []
    for name in CONFIGS.values():
        written.append(_put(outdir, f"dnsmasq/{name}",
                            env.get_template(f"{name}.j2").render(ctx)))
    written.append(_put(outdir, DNSMASQ_MODE, f"{p.dhcp}\n"))
    return written


def _put(outdir: str, rel: str, content: str) -> str:
    path = os.path.join(outdir, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    return rel
