"""`build`: the images a cluster needs, then everything `render` writes, then a manifest."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from installer.build import render
from installer.cluster import layout, sizes
from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError


def _images(cluster: Cluster, outdir: str, progress) -> dict:
    from installer.build import images  # imports diskimage-builder helpers only when building

    apt = cluster.apt
    out = {}
    try:
        # The cluster's mirror fails fastest: check it before the long netboot build.
        images.probe_mirror(apt.mirror, cluster.release.name)
        netboot = images.build_netboot(outdir, mirror=_netboot_mirror(cluster),
                                       security_mirror=_netboot_security(cluster),
                                       proxy=apt.proxy, progress=progress)
        out.update(netboot)
        out.update(images.agent_bundle(outdir))
        if cluster.install_method == "image":
            packages = cluster.release.node_packages(cluster.hypervisor)
            out.update(images.build_os_image(
                outdir, release=cluster.release.name, packages=packages, mirror=apt.mirror,
                security_mirror=apt.security_mirror, proxy=apt.proxy, progress=progress))
        for image in cluster.instance_image.images:
            if image.build:
                out[f"instance:{image.name}"] = images.build_instance_image(
                    image.build, mirror=apt.mirror, security_mirror=apt.security_mirror,
                    proxy=apt.proxy, progress=progress)
    except images.ImageError as e:
        raise InstallerError(str(e)) from None
    return out


def _netboot_mirror(cluster: Cluster) -> str:
    """The netboot image is always Debian 12: an archived release's mirror cannot build it."""
    from installer.cluster.mirror import host_mirror
    if cluster.release.archived:
        return host_mirror().debian or cluster.apt.mirror
    return cluster.apt.mirror


def _netboot_security(cluster: Cluster) -> str | None:
    from installer.cluster.mirror import host_mirror
    if cluster.release.archived:
        return host_mirror().security
    return cluster.apt.security_mirror


def build(cluster: Cluster, outdir: str, *, images: bool = True, progress=print) -> dict:
    start = time.monotonic()
    artifacts = _images(cluster, outdir, progress) if images else {}
    progress("rendering plans, PXE tree and dnsmasq configuration")
    built = {name.split(":", 1)[1]: a.path for name, a in artifacts.items()
             if name.startswith("instance:")}
    written = render.render(cluster, outdir, built=built)
    for image in cluster.instance_image.images:    # the placed copy, not the cache's
        if image.build:
            placed = os.path.join(outdir, layout.INSTANCE_IMAGES, image.filename)
            key = f"instance:{image.name}"
            artifacts[key] = dataclasses.replace(artifacts[key], path=placed)
    summary = {
        "cluster": cluster.fqdn, "release": cluster.release.name, "outdir": outdir,
        "seconds": round(time.monotonic() - start, 1),
        "artifacts": {name: {"path": os.path.relpath(a.path, outdir), "size": a.size,
                             "sha256": a.sha256, "cached": a.cached}
                      for name, a in artifacts.items()},
        "plans": sorted(w for w in written if w.startswith("plans/")),
        "files": len(written),
    }
    with open(os.path.join(outdir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"built {summary['cluster']} ({summary['release']}) in {summary['outdir']} "
             f"in {summary['seconds']} s"]
    for name, a in summary["artifacts"].items():
        cached = " (cached)" if a["cached"] else ""
        lines.append(f"  {name:9} {sizes.human(a['size']):>10}  {summary['outdir']}/{a['path']}"
                     f"{cached}")
    for plan in summary["plans"]:
        lines.append(f"  plan      {summary['outdir']}/{plan}")
    lines.append(f"  {summary['files']} files rendered; manifest {summary['outdir']}/manifest.json")
    return "\n".join(lines)
