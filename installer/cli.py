"""The `ganeti-installer` command: one subcommand per job, each a short function."""

from __future__ import annotations

import argparse
import json
import sys
import time

from installer.agent.version import __version__
from installer.cluster import config
from installer.cluster.errors import ConfigError, ConfigInvalid, InstallerError, escape


def _report(path: str, errors: list[ConfigError], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"valid": False, "errors": [x.as_dict() for x in errors]}, indent=2))
    else:
        for err in errors:
            print(f"error: {err}", file=sys.stderr)
        print(f"{len(errors)} error(s) in {escape(path)}; nothing was written.", file=sys.stderr)


def _load(path: str, as_json: bool) -> config.Cluster | None:
    try:
        return config.load(path)
    except ConfigInvalid as e:
        _report(path, e.errors, as_json)
        return None


def _checked(path: str, as_json: bool) -> config.Cluster | None:
    """The cluster, once every check render makes has passed too: render never fails on a
    file validate accepted (the plan schema is checked on plans rendered in memory)."""
    from installer.build import render
    cluster = _load(path, as_json)
    if cluster is None:
        return None
    try:
        render.render_plans(cluster)
    except InstallerError as e:
        _report(path, [ConfigError(path, "", str(e), "report this file with the bug; until "
                                   "it is fixed, shorten the values the message names")],
                as_json)
        return None
    return cluster


def cmd_validate(args) -> int:
    cluster = _checked(args.file, args.json)
    if cluster is None:
        return 1
    if args.json:
        print(json.dumps({"valid": True, "cluster": cluster.fqdn,
                          "release": cluster.release.name,
                          "nodes": [n.fqdn for n in cluster.nodes]}, indent=2))
    else:
        print(f"{escape(args.file)}: valid: {cluster.fqdn}, {cluster.release.name}, "
              f"{len(cluster.nodes)} node(s), master {cluster.master}")
    return 0


def cmd_render(args) -> int:
    from installer.build import render
    cluster = _checked(args.file, args.json)
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
    from installer.build import builder as build
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


def cmd_serve(args) -> int:
    from installer.master import serve, statedir
    cluster = _load(args.file, False)
    if cluster is None:
        return 1
    opts = serve.Options(cluster=cluster, cluster_file=args.file, outdir=args.outdir,
                         state_dir=args.state or statedir.default(cluster, args.outdir),
                         listen=serve.listen_addresses(cluster, args.listen),
                         dhcp=not args.no_dhcp, join=not args.no_join)
    return serve.run(opts)


def _base_url(args) -> str:
    if args.url:
        return args.url.rstrip("/")
    if args.cluster:
        cluster = _load(args.cluster, False)
        if cluster is None:
            raise InstallerError(f"cannot read the master's address from {args.cluster}")
        return cluster.provisioning.base_url
    raise InstallerError("where is the master? give --url http://ADDRESS:PORT or "
                         "--cluster FILE (its network.provisioning address and http_port)")


def cmd_status(args) -> int:
    from installer.master import statedir, status
    token = statedir.admin_token(args.state, create=False) if args.state else None
    return status.show(_base_url(args), as_json=args.json, watch=args.watch, token=token)


def cmd_reinstall(args) -> int:
    from installer.master import api, state, statedir, status
    cluster = _load(args.file, False)
    if cluster is None:
        return 1
    names = [n.name for n in cluster.nodes]
    if args.node not in names:
        raise InstallerError(f"no node '{args.node}' in {args.file}: use one of "
                             f"{', '.join(names)}")
    state_dir = args.state or statedir.default(cluster, args.outdir)
    url = (args.url or cluster.provisioning.base_url).rstrip("/")
    try:
        token = statedir.admin_token(state_dir, create=False)
    except InstallerError:
        token = None        # serve never ran with this state directory
    if token:
        try:
            status.reinstall(url, args.node, token)
            print(f"{args.node}: marked for reinstall by the master at {url}; its next PXE "
                  "boot installs it")
            return 0
        except status.Unreachable:
            pass
    # No serve listening: change the state and the PXE tree directly (SQLite serialises
    # this with any other writer).
    db = state.open_state(state_dir)
    try:
        db.sync_nodes(cluster)
        api.reinstall(db, args.outdir, args.node)
    finally:
        db.close()
    print(f"{args.node}: marked for reinstall in {state_dir} (no master answered at {url}); "
          "its next PXE boot installs it once serve runs")
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

    s = sub.add_parser("serve", help="run the master: HTTP API and artifacts, DHCP/TFTP, state",
                       description="Serve OUTDIR to the nodes: plans by MAC with a per-node "
                       "token, progress reports, the PXE handoff to local boot, the artifacts "
                       "over HTTP, and dnsmasq (DHCP or proxy DHCP, and TFTP) on "
                       "network.provisioning.interface. State (SQLite) survives restarts. "
                       "Stops on SIGTERM or Ctrl-C.")
    s.add_argument("file", help="the cluster file (TOML)")
    s.add_argument("outdir", help="the OUTDIR render or build wrote")
    s.add_argument("--state", metavar="DIR", help="state directory (default: beside OUTDIR, "
                   "<cluster name>-state)")
    s.add_argument("--listen", metavar="ADDR:PORT", action="append",
                   help="HTTP address, repeated or a comma list (default: "
                   "network.provisioning.address and the address booted nodes report to, "
                   "at network.provisioning.http_port)")
    s.add_argument("--no-dhcp", action="store_true",
                   help="do not start dnsmasq (another server does DHCP and TFTP)")
    s.add_argument("--no-join", action="store_true",
                   help="install and hand off nodes, but leave gnt-cluster init and "
                        "gnt-node add to the admin (nodes stay 'booted')")
    s.set_defaults(func=cmd_serve)

    st = sub.add_parser("status", help="show the nodes, their state and current step",
                        description="A table of the nodes from the master's API: state, "
                        "current step, progress, last message; and machines whose MAC is not "
                        "in the cluster file.")
    st.add_argument("--url", help="the master's base URL, e.g. http://10.99.0.1:8080")
    st.add_argument("--cluster", metavar="FILE", help="take the URL from this cluster file")
    st.add_argument("--state", metavar="DIR", help="serve's state directory: its admin "
                    "token is sent (needed unless --url is a loopback address, 127.0.0.1)")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                    help="refresh every SECONDS (default 2) until Ctrl-C")
    st.set_defaults(func=cmd_status)

    ri = sub.add_parser("reinstall", help="mark a node for reinstall (PXE entry back to install)",
                        description="Set NODE back to pending with a new token and make its "
                        "PXE entry the install form: its next network boot reinstalls it. "
                        "Goes through the running serve (admin token from the state "
                        "directory), or straight to the state when none answers.")
    ri.add_argument("file", help="the cluster file (TOML)")
    ri.add_argument("outdir", help="the OUTDIR serve serves")
    ri.add_argument("node", help="the node's name")
    ri.add_argument("--state", metavar="DIR", help="serve's state directory (default: as serve)")
    ri.add_argument("--url", help="the master's base URL (default: from the cluster file)")
    ri.set_defaults(func=cmd_reinstall)
    return p


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed command: an InstallerError or OSError is one line (JSON with --json),
    and with --json even an unexpected failure prints JSON."""
    as_json = getattr(args, "json", False)
    try:
        return args.func(args)
    except (InstallerError, OSError) as e:
        if as_json:     # --json promises JSON on stdout, whatever went wrong
            _json_failure(args, str(e), "the message names the fix")
        else:
            print(f"error: {escape(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if not as_json:
            raise
        _json_failure(args, f"internal error ({type(e).__name__}: {e})",
                      "a bug in ganeti-installer: report it with the file")
        return 2


def _json_failure(args, problem: str, fix: str) -> None:
    error = ConfigError(getattr(args, "file", None) or "", "", problem, fix)
    print(json.dumps({"valid": False, "errors": [error.as_dict()]}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
