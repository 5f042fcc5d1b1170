"""The `ganeti-installer` command: one subcommand per job, each a short function."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import NoReturn

from installer.agent.version import __version__
from installer.cluster import config, layout
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
    for image in cluster.instance_image.images:
        if image.build and f"{layout.INSTANCE_IMAGES}/{image.filename}" not in written:
            print(f"warning: instance image {image.name} is made by `build` (build = "
                  f"\"{image.build}\"), which has not run into {args.outdir}: run "
                  "ganeti-installer build, or nodes wait for it at install", file=sys.stderr)
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


# -- power (issue 16) ------------------------------------------------------------------------

def cmd_power(args) -> int:
    from installer.master import power
    cluster = _load(args.file, False)
    if cluster is None:
        return 1
    said = power.switch(cluster, args.node, args.action).message or f"{args.action}: done"
    print(escape(said if said.startswith(args.node) else f"{args.node}: {said}"))
    return 0


def _power_parser(sub) -> None:
    pw = sub.add_parser("power", help="switch a node on or off (Wake-on-LAN, IPMI or by hand)",
                        description="Switch NODE the way its power key in the cluster file "
                        "says: Wake-on-LAN on the provisioning interface (on only), its BMC "
                        "with ipmitool (password from power.password_file), or print what "
                        "to press (manual).")
    pw.add_argument("file", help="the cluster file (TOML)")
    pw.add_argument("node", help="the node's name")
    pw.add_argument("action", choices=("on", "off", "cycle", "status"))
    pw.set_defaults(func=cmd_power)


# -- rebuild (issue 16) ----------------------------------------------------------------------

def cmd_rebuild(args) -> int:
    from installer.cluster import macedit
    from installer.master import rebuild, statedir, status
    cluster = _load(args.file, False)
    if cluster is None:
        return 1
    node = _named_node(cluster, args.node, args.file)
    if node.name == cluster.master:
        raise InstallerError(f"{node.name} is cluster.master in {args.file}: the master "
                             "cannot rebuild itself; make another node master first")
    try:
        change = macedit.prepare(args.file, node.name, args.mac) if args.mac else None
    except ConfigInvalid as e:
        _report(args.file, e.errors, False)
        return 1
    state_dir = args.state or statedir.default(cluster, args.outdir)
    url = (args.url or cluster.provisioning.base_url).rstrip("/")
    token = statedir.admin_token(state_dir, create=False)   # serve must be running
    if change is not None:      # OUTDIR takes the new MAC: it must be there
        _check_mac_change(change, args.outdir, cluster)
    # serve installs and joins the node, and the power switch turns it on: both must answer
    # before the evacuation and the offline mark, which an error later would leave behind.
    status.fetch(url, token)
    if not args.no_power:
        print(escape(_check_power(change.cluster if change else cluster, node.name)))
    act = rebuild.Actions(
        on_master=_on_master(cluster, state_dir),
        reinstall=lambda: _reinstall_via(status, url, node.name, token),
        power_on=lambda: _power_on(change.cluster if change else cluster, node.name),
        state=lambda: _node_state(status, url, node.name, token),
        new_mac=(lambda: _new_mac(status, url, token, change, args.outdir))
        if change else None)
    rebuild.run(node.fqdn, act, evacuate=args.evacuate, power=not args.no_power)
    print(f"{node.name}: rebuilt, joined and its instances' disks replaced")
    return 0


def _check_mac_change(change, outdir: str, cluster: config.Cluster) -> None:
    """What the new MAC needs before anything changes: a rendered OUTDIR, plans that render,
    and the node's files in OUTDIR as the cluster file renders them now (else the MAC would
    bring in, unasked, whatever else changed since OUTDIR was rendered)."""
    from installer.build import render
    from installer.cluster import layout
    if not os.path.isdir(os.path.join(outdir, layout.PLANS)):
        raise InstallerError(f"{outdir} has no {layout.PLANS}/: give rebuild the OUTDIR serve "
                             "serves (rebuild --mac renders the node's new MAC into it)")
    render.render_plans(change.cluster)
    stale = render.differing(cluster, outdir, [change.node])
    if stale:
        shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise InstallerError(f"{outdir} is not what {change.path} renders now ({shown} "
                             "differ): the new MAC would bring that in too. Run "
                             f"ganeti-installer render {change.path} {outdir} and restart "
                             f"serve, then rebuild with --mac {change.new} again")


def _new_mac(status, url: str, token: str, change, outdir: str) -> str:
    """The node's new MAC in the cluster file and OUTDIR (its files alone), taken by the
    running serve. If serve refuses (it changed nothing), the file and the files replaced in
    OUTDIR go back to the bytes they held."""
    from installer.build import render
    from installer.cluster import macedit

    replaced = None

    def put_back(why: str) -> NoReturn:
        if replaced is not None:
            render.restore(replaced)
        try:
            macedit.restore(change)
            back = f"{change.path} and {outdir} are as they were"
        except InstallerError as e:
            back = f"{outdir} is as it was, but {e}"
        raise InstallerError(f"{change.node}: the new MAC was not taken ({why}); {back}. "
                             "The node is offline in Ganeti now: fix the cause, then run "
                             f"rebuild --mac {change.new} again")

    macedit.write(change)
    try:
        replaced = render.render_in_place(change.cluster, outdir, [change.node])
    except (InstallerError, OSError) as e:
        put_back(f"rendering {outdir} failed: {e}")
    try:
        answer = status.reload(url, token)
    except status.Unreachable:
        put_back(f"no serve answers at {url}")
    except status.Refused as e:
        put_back(str(e))
    except InstallerError as e:     # serve failed half way, or the answer was lost: it
        raise InstallerError(       # may have taken some of it, so nothing goes back
            f"{change.node}: {change.path} and {outdir} have the new MAC, but serve did not "
            f"say it took it ({e}): if ganeti-installer status does not show {change.node} "
            f"with {change.new}, restart serve; then rebuild again without --mac") from None
    if not any(m.get("node") == change.node and m.get("new") == change.new
               for m in answer.get("changed", [])):
        put_back(f"serve runs with the cluster file {answer.get('file')}, where that MAC did "
                 "not change: give rebuild the file serve runs with")
    return change.said()


def _named_node(cluster: config.Cluster, name: str, file: str) -> config.Node:
    for n in cluster.nodes:
        if n.name == name:
            return n
    raise InstallerError(f"no node '{name}' in {file}: use one of "
                         f"{', '.join(n.name for n in cluster.nodes)}")


def _on_master(cluster: config.Cluster, state_dir: str):
    """Commands on the cluster's master as root, with serve's key and pinned host keys."""
    from installer.cluster import sshkeys
    from installer.master import statedir
    from installer.master.join.remote import Remote
    remote = Remote(statedir.key_path(state_dir), sshkeys.known_hosts_path(state_dir))
    master = cluster.node(cluster.master).ip
    return lambda argv, timeout: remote.run(master, argv, timeout=timeout).stdout


def _reinstall_via(status, url: str, name: str, token: str) -> None:
    try:
        status.reinstall(url, name, token)
    except status.Unreachable:
        raise InstallerError(f"no serve answers at {url}: rebuild needs it running (it "
                             "installs and joins the node); start `ganeti-installer serve`, "
                             "then run rebuild again") from None


def _check_power(cluster: config.Cluster, name: str) -> str:
    from installer.master import power
    try:
        return power.check(cluster, name)
    except power.PowerError as e:
        raise InstallerError(f"{e}; or rebuild with --no-power and switch {name} on yourself "
                             "(network boot). Nothing was changed") from None


def _power_on(cluster: config.Cluster, name: str) -> str:
    """On; a BMC that says the PC is on (a hung node) power-cycles it instead."""
    from installer.master import power
    if cluster.node(name).power.method == "ipmi" and \
            power.switch(cluster, name, "status").message.endswith(" on"):
        return power.switch(cluster, name, "cycle").message
    return power.switch(cluster, name, "on").message


def _node_state(status, url: str, name: str, token: str) -> tuple[str, str]:
    node = next(n for n in status.fetch(url, token)["nodes"] if n["name"] == name)
    return node["state"], node["message"]


def _node_args(p: argparse.ArgumentParser) -> None:
    """What reinstall and rebuild both take: the node, and where its serve is."""
    p.add_argument("file", help="the cluster file (TOML)")
    p.add_argument("outdir", help="the OUTDIR serve serves")
    p.add_argument("node", help="the node's name")
    p.add_argument("--state", metavar="DIR", help="serve's state directory (default: as serve)")
    p.add_argument("--url", help="the master's base URL (default: from the cluster file)")


def _rebuild_parser(sub) -> None:
    rb = sub.add_parser("rebuild", help="reinstall a failed node and restore its DRBD copies",
                        description="Check the cluster through its master, refuse while NODE "
                        "is primary for instances (unless --evacuate), mark it offline, "
                        "reinstall it and power it on; once serve has joined it again "
                        "(gnt-node add --readd), replace its instances' secondary disks, "
                        "wait for the sync and verify the cluster. Needs serve running.")
    _node_args(rb)
    rb.add_argument("--evacuate", action="store_true",
                    help="first move the instances NODE is primary for to their secondaries")
    rb.add_argument("--no-power", action="store_true",
                    help="do not switch the PC on; you power it on (network boot)")
    rb.add_argument("--mac", metavar="MAC",
                    help="new hardware: the MAC of the node's new NIC, written into the "
                    "cluster file (the old one forgotten) and taken by the running serve")
    rb.set_defaults(func=cmd_rebuild)


def _iso_target(args) -> tuple[str, str | None]:
    """serve's URL and its state directory (None when neither --state nor --outdir says)."""
    from installer.master import statedir
    cluster = _load(args.cluster, False) if args.cluster else None
    if args.cluster and cluster is None:
        raise InstallerError(f"cannot read {args.cluster}")
    url = args.url or (cluster.provisioning.base_url if cluster else None)
    if not url:
        raise InstallerError("where is serve? give --url http://ADDRESS:PORT or --cluster "
                             "FILE (its network.provisioning address and http_port)")
    state_dir = args.state or (statedir.default(cluster, args.outdir)
                               if cluster and args.outdir else None)
    return url.rstrip("/"), state_dir


def _iso_token(state_dir: str | None) -> str:
    from installer.master import statedir
    if state_dir is None:
        raise InstallerError("iso add and remove need serve's admin token: name serve's "
                             "state directory with --state DIR (or --cluster FILE --outdir "
                             "OUTDIR, as serve got them)")
    return statedir.admin_token(state_dir, create=False)


def cmd_iso_add(args) -> int:
    import os

    from installer.master import isos, status
    files = [os.path.abspath(f) for f in args.files]
    for path in files:          # the quick refusals here; serve checks all again
        isos.readable(path)
        isos.check_name(os.path.basename(path), path)
    url, state_dir = _iso_target(args)
    result = status.iso_request("POST", f"{url}/api/v1/isos", _iso_token(state_dir),
                                {"files": files, "copy": args.copy, "rate_mbps": args.rate})
    if args.json:
        print(json.dumps(result, indent=2))
    for iso in [] if args.json else result["isos"]:
        print(f"{iso['name']} (sha256 {iso['sha256']}, {iso['size']} bytes):")
        for node in iso["nodes"] or [{"node": "-", "ok": True, "message": "no joined node "
                                      "yet: each gets it when it joins"}]:
            print(f"  {node['node']}: {'ok' if node['ok'] else 'FAILED'}: {node['message']}")
    return 0 if result["ok"] else 1


def cmd_iso_list(args) -> int:
    from installer.master import status
    url, state_dir = _iso_target(args)
    # The list shows nodes and their messages: the admin token, unless on the serving host.
    token = _iso_token(state_dir) if state_dir else None
    items = status.isos(url, {"Authorization": f"Bearer {token}"} if token else None)
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        print("\n".join(status.iso_lines(items)[1:]) or "no ISOs: ganeti-installer iso add "
              "FILE")
    return 0


def cmd_iso_remove(args) -> int:
    from installer.master import isos, status
    isos.check_name(args.name)
    url, state_dir = _iso_target(args)
    result = status.iso_request("DELETE", f"{url}/api/v1/isos/{args.name}",
                                _iso_token(state_dir))
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["removed"]:
        print(f"{args.name}: removed from every joined node and from serve")
    else:
        print(f"{args.name}: still on {', '.join(result['failed'])} (see ganeti-installer "
              f"status); run iso remove {args.name} again", file=sys.stderr)
    return 0 if result["removed"] else 1


def _iso_parser(sub) -> None:
    i = sub.add_parser("iso", help="the cluster's ISO images at /iso on every joined node",
                       description="Add, list and remove the ISO images every joined node "
                       "keeps at /iso/<name> (a node that joins later gets them at its "
                       "join). Runs on the serving host through the running serve, with the "
                       "admin token from its state directory.")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--url", help="serve's base URL (default: from --cluster)")
    where.add_argument("--cluster", metavar="FILE", help="the cluster file serve runs with")
    where.add_argument("--outdir", help="the OUTDIR serve serves (for the default --state)")
    where.add_argument("--state", metavar="DIR", help="serve's state directory")
    where.add_argument("--json", action="store_true", help="print JSON")
    isub = i.add_subparsers(dest="iso_command", required=True, metavar="ACTION")
    a = isub.add_parser("add", parents=[where], help="send ISO files to every joined node",
                        description="Send each FILE to /iso/<its file name> on every joined "
                        "node: by multicast (uftp) to all at once, checked by sha256 on each "
                        "node before it takes its name; a node the multicast misses gets a "
                        "plain SSH copy (the automatic fallback). Exit 1 if a node failed.")
    a.add_argument("files", nargs="+", metavar="FILE", help="an ISO image")
    a.add_argument("--copy", action="store_true",
                   help="no multicast: one SSH copy per node (as gnt-cluster copyfile)")
    a.add_argument("--rate", type=int, metavar="MBIT", default=None,
                   help="multicast send rate in Mbit/s (default 900, for a gigabit "
                   "management LAN; about 90 %% of the slowest node's link)")
    a.set_defaults(func=cmd_iso_add)
    ls = isub.add_parser("list", parents=[where], help="the ISOs and their state per node")
    ls.set_defaults(func=cmd_iso_list)
    rm = isub.add_parser("remove", parents=[where], help="remove an ISO from every node")
    rm.add_argument("name", help="the ISO's name (as iso list shows it)")
    rm.set_defaults(func=cmd_iso_remove)


def _stick_plans(cluster: config.Cluster, outdir: str, state_dir: str,
                 names: list[str]) -> dict[str, dict]:
    """Each node's plan as serve would hand it out: its report token from the state
    directory (made there if serve never ran), the serving host's key in authorized_keys.
    The node's reports then wait in its outbox until serve, with this state, takes them."""
    from installer.master import api, state, statedir
    statedir.prepare(state_dir)
    key = statedir.serve_key(state_dir, f"ganeti-installer@{cluster.fqdn}")
    db = state.open_state(state_dir)
    try:
        db.sync_nodes(cluster)
        rows = {row.name: row for row in db.nodes()}
    finally:
        db.close()
    return {name: api.stick_plan(outdir, key, rows[name]) for name in names}


def cmd_usb(args) -> int:
    from installer.build import servinghost, stickdevice, usb
    from installer.master import statedir
    cluster = _load(args.file, False)
    if cluster is None:
        return 1
    if not args.output and not args.device:
        raise InstallerError("where should the stick go? give --output stick.img (a file "
                             "to dd onto a stick) or --device /dev/sdX (the stick)")
    names = [n.name for n in cluster.nodes]
    if args.node and args.node not in names:
        raise InstallerError(f"no node '{args.node}' in {args.file}: use one of "
                             f"{', '.join(names)}")
    if args.all:
        servinghost.check(cluster, args.file, args.node)
    usb.check_tools()
    state_dir = args.state or statedir.default(cluster, args.outdir)
    plans_dir = os.path.join(args.outdir, "plans")
    if not os.path.isdir(plans_dir):
        raise InstallerError(f"{plans_dir} is missing: run ganeti-installer build "
                             f"{args.file} {args.outdir} first")
    with tempfile.TemporaryDirectory(prefix="ganeti-installer-usb-") as work:
        if args.device:     # checked before the state directory or any file is touched
            sized = _stick(args, cluster, _rendered_plans(args, names), None, work)
            stickdevice.check(args.device, usb.image_bytes(sized))
        plans = _stick_plans(cluster, args.outdir, state_dir,
                             [args.node] if args.node else names)
        stick = _stick(args, cluster, plans, state_dir, work)
        return _write_stick(args, cluster, stick)


def _stick(args, cluster: config.Cluster, plans: dict[str, dict], state_dir: str | None,
           work: str):
    """What goes on the stick; with --all, the master's serving host too (state_dir None:
    without serve's state, only to size it)."""
    from installer.build import servinghost, usb
    if args.all:
        plans = dict(plans, **{cluster.master: servinghost.master_plan(plans[cluster.master])})
    stick = usb.contents(args.outdir, plans)
    if args.all:
        stick.files.update(servinghost.stick_files(cluster, args.file, args.outdir,
                                                   state_dir, work))
    return stick


def _write_stick(args, cluster: config.Cluster, stick) -> int:
    from installer.build import stickdevice, usb
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.outdir)),
                                         f".{cluster.name}-stick.img")
    try:
        digest = usb.build(stick, output)
        os.chmod(output, 0o600)     # it carries the nodes' report tokens
        print(f"stick image {output}: {os.path.getsize(output) >> 20} MiB, sha256 {digest}, "
              f"{len(stick.nodes)} node(s): {', '.join(n for n, _ in stick.nodes)}")
        if args.all:
            print(f"{cluster.master} becomes the serving host: it carries OUTDIR, serve's "
                  "state (its SSH key, the nodes' tokens) and the program")
        if args.device:
            stickdevice.write(output, args.device)
            print(f"{args.device}: written; it boots BIOS and UEFI PCs and installs them "
                  "with no network")
    finally:
        if not args.output and os.path.exists(output):
            os.unlink(output)       # the image only went to the device
    return 0


def _rendered_plans(args, names: list[str]) -> dict[str, dict]:
    """The plans as render wrote them (no token yet): enough to size the stick."""
    plans = {}
    for name in [args.node] if args.node else names:
        with open(os.path.join(args.outdir, "plans", f"{name}.json"), encoding="utf-8") as f:
            plans[name] = json.load(f)
    return plans


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
    _node_args(ri)
    ri.set_defaults(func=cmd_reinstall)
    _power_parser(sub)
    _rebuild_parser(sub)
    _iso_parser(sub)

    u = sub.add_parser("usb", help="make the install stick: BIOS and UEFI, installs offline",
                       description="A disk image (or a stick, with --device) that boots BIOS "
                       "and UEFI PCs into the netboot image and installs them with no network "
                       "from the plans and OS image on it: the PC's plan is chosen by its MAC, "
                       "or in the boot menu. Each plan carries its node's report token (from "
                       "the state directory): keep the stick as a secret.")
    u.add_argument("file", help="the cluster file (TOML)")
    u.add_argument("outdir", help="the OUTDIR build wrote (netboot and OS images, plans)")
    u.add_argument("--output", metavar="FILE", help="the stick image to write (dd it onto "
                   "a stick)")
    u.add_argument("--device", metavar="DEV", help="write onto this stick (a whole, removable "
                   "or USB disk with nothing mounted), e.g. /dev/sdb")
    u.add_argument("--node", help="a stick for this node only (default: every node)")
    u.add_argument("--all", action="store_true", help="the master installed from the stick "
                   "becomes the serving host: the stick also carries OUTDIR, serve's state "
                   "(its SSH key, tokens) and this program, and the master runs serve from "
                   "its first boot, so the other PCs PXE-boot from it (bookworm or trixie)")
    u.add_argument("--state", metavar="DIR", help="serve's state directory, where the tokens "
                   "are (default: as serve)")
    u.set_defaults(func=cmd_usb)
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
