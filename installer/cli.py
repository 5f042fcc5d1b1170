"""The `ganeti-installer` command: one subcommand per job, each a short function."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from installer import __version__, config
from installer.errors import ConfigInvalid, InstallerError


def _load(path: str, as_json: bool) -> config.Cluster | None:
    try:
        return config.load(path)
    except ConfigInvalid as e:
        if as_json:
            print(json.dumps({"valid": False, "errors": [x.as_dict() for x in e.errors]},
                             indent=2))
        else:
            for err in e.errors:
                print(f"error: {err}", file=sys.stderr)
            print(f"{len(e.errors)} error(s) in {path}; nothing was written.", file=sys.stderr)
        return None


def cmd_validate(args) -> int:
    cluster = _load(args.file, args.json)
    if cluster is None:
        return 1
    if args.json:
        print(json.dumps({"valid": True, "cluster": cluster.fqdn,
                          "release": cluster.release.name,
                          "nodes": [n.fqdn for n in cluster.nodes]}, indent=2))
    else:
        print(f"{args.file}: valid: {cluster.fqdn}, {cluster.release.name}, "
              f"{len(cluster.nodes)} node(s), master {cluster.master}")
    return 0


def cmd_render(args) -> int:
    from installer import render
    cluster = _load(args.file, args.json)
    if cluster is None:
        return 1
    start = time.monotonic()
    written = render.render(cluster, args.outdir)
    took = time.monotonic() - start
    if args.json:
        print(json.dumps({"outdir": args.outdir, "files": written, "seconds": round(took, 3)},
                         indent=2))
    else:
        print(f"rendered {len(written)} files for {len(cluster.nodes)} node(s) into "
              f"{args.outdir} in {took:.2f} s")
        for node in cluster.nodes:
            print(f"  {node.name}: plan {args.outdir}/plans/{node.name}.json, "
                  f"files {args.outdir}/nodes/{node.name}/")
    return 0


def cmd_build(args) -> int:
    from installer import build
    cluster = _load(args.file, args.json)
    if cluster is None:
        return 1
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else \
        (lambda msg: print(msg, flush=True))
    summary = build.build(cluster, args.outdir, images=not args.no_images, progress=progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(build.format_summary(summary))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganeti-installer",
        description="Turn bare PCs into a Ganeti cluster from one cluster file.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check a cluster file; print every problem",
                       description="Check a cluster file and print every problem with its "
                       "key and fix. Exit 0 when valid, 1 otherwise. Writes nothing.")
    v.add_argument("file", help="the cluster file (TOML)")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("render", help="write plans, PXE tree, dnsmasq config and node files",
                       description="Render node plans, the PXE tree, the dnsmasq "
                       "configurations and a browsable copy of every node's files under "
                       "OUTDIR/nodes/<name>/. Takes seconds; builds no images.")
    r.add_argument("file", help="the cluster file (TOML)")
    r.add_argument("outdir", help="output directory (created; images in it are kept)")
    r.add_argument("--json", action="store_true", help="print the written paths as JSON")
    r.set_defaults(func=cmd_render)

    b = sub.add_parser("build", help="render, then build the netboot and OS images",
                       description="Everything `render` writes, plus the netboot image "
                       "(kernel + initrd) and the OS image of the cluster's release, built with "
                       "diskimage-builder and cached by their inputs.")
    b.add_argument("file", help="the cluster file (TOML)")
    b.add_argument("outdir", help="output directory")
    b.add_argument("--json", action="store_true", help="print the artifact summary as JSON")
    b.add_argument("--no-images", action="store_true", help="skip the images (same as render)")
    b.set_defaults(func=cmd_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InstallerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
