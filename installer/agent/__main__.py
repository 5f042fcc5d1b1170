"""Entry point of the agent: `python3 -m installer.agent [options]`.

In the netboot image a systemd unit starts it with no options: the plan URL then comes from
the kernel command line (`installer.plan=<URL>`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from installer.agent.version import __version__
from installer.agent import planschema
from installer.agent import client, clock, cmdline

NO_PLAN = ("no plan: the kernel command line has no installer.plan=<URL> and no boot medium "
           "carries a plan. Boot this machine from the master's PXE entry for its MAC, or add "
           "installer.plan=http://<master>:<port>/api/v1/plans/<mac as 52-54-00-..> to the "
           "kernel command line.")


def _plan_source(args) -> str | None:
    if args.plan:
        return args.plan
    try:
        with open("/proc/cmdline", encoding="utf-8") as f:
            return cmdline.plan_url(f.read())
    except OSError:
        return None


def _load(source: str) -> tuple[dict, str | None]:
    """The plan, and the master's Date header when it came from the master."""
    if source.startswith(("http://", "https://")):
        return client.fetch_plan(source)
    with open(source, encoding="utf-8") as f:
        return json.load(f), None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m installer.agent",
                                description="Install this machine as a Ganeti node from its plan.")
    p.add_argument("--plan", help="plan URL or file (default: installer.plan= on the kernel "
                   "command line)")
    p.add_argument("--target", default="/target", help="where the new root is mounted")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands that would change the disk, change nothing")
    p.add_argument("--no-reboot", action="store_true", help="stay up when done")
    p.add_argument("--first-boot", action="store_true",
                   help="configure this installed system (a debian-installer install) in "
                        "place: its free disk space becomes the VG; no partitioning, no OS")
    args = p.parse_args(argv)
    print(f"ganeti-installer agent {__version__}", flush=True)
    source = _plan_source(args)
    if source is None:
        print(NO_PLAN, flush=True)
        return 2
    print(f"plan: {source}", flush=True)
    try:
        plan, date = _load(source)
    except (client.ClientError, OSError, ValueError) as e:
        print(f"error: cannot load the plan: {e}", flush=True)
        return 3
    problems = planschema.check(plan)
    if problems:
        print(f"error: the plan from {source} is not a valid plan; nothing was touched:",
              flush=True)
        for problem in problems[:20]:
            print(f"  {problem}", flush=True)
        url = plan.get("report", {}).get("url") if isinstance(plan, dict) else None
        if isinstance(url, str) and not args.dry_run:
            client.Reporter(url).event("plan", "failed", "; ".join(problems[:5]), final=True)
        return 4
    if not args.dry_run:
        clock.follow(clock.master_time(date), log=lambda line: print(line, flush=True))
    return _install(plan, args)


def _install(plan: dict, args) -> int:
    from installer.agent.install import Installer

    reporter = client.Reporter(plan["report"]["url"], plan["report"].get("token"))
    inst = Installer(plan, reporter, target=args.target, dry_run=args.dry_run,
                     log=lambda line: print(line, flush=True), first_boot=args.first_boot)
    try:
        inst.run_all()
    except Exception as e:
        print(f"error: install failed: {type(e).__name__}: {e}", flush=True)
        return 1
    if args.dry_run:
        print("commands the install would run:", flush=True)
        for argv in inst.run.commands:
            print("  " + " ".join(argv), flush=True)
        print("files the install would write:", flush=True)
        for path in inst.run.files.written:
            print("  " + path, flush=True)
        return 0
    if not args.first_boot:
        inst.unmount()
    print(f"installed {plan['node']['fqdn']}", flush=True)
    if not args.no_reboot:
        # The netboot system lives in RAM and the target is unmounted and synced: nothing
        # needs an orderly shutdown (--force skips stopping each unit, seconds on an old PC).
        # An installed system, in first-boot mode, gets one.
        how = ["--no-block"] if args.first_boot else ["--force"]
        subprocess.run(["systemctl"] + how + [plan["finish"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
