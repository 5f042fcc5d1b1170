"""Entry point of the agent: `python3 -m installer.agent [options]`.

In the netboot image a systemd unit starts it with no options: the plan URL then comes from
the kernel command line (`installer.plan=<URL>`), and how long a fetch waits for an absent
master from `installer.wait=<seconds>` (default 30 minutes, retry.LIMIT).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from installer.agent import client, clock, cmdline, planschema, retry, rules, savedplan
from installer.agent.version import __version__

NO_PLAN = ("no plan: the kernel command line has no installer.plan=<URL> and no boot medium "
           "carries a plan. Boot this machine from the master's PXE entry for its MAC, or add "
           "installer.plan=http://<master>:<port>/api/v1/plans/<mac as 52-54-00-..> to the "
           "kernel command line.")


STICK_PAUSE = 10    # seconds to pull the stick before the reboot, so the PC boots its disk


def _kernel_cmdline() -> str:
    try:
        with open("/proc/cmdline", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _plan_source(args) -> str | None:
    return args.plan or cmdline.plan_url(_kernel_cmdline())


def _wait_limit(args) -> float:
    """--wait, else installer.wait= on the kernel command line, else retry.LIMIT; a bad
    kernel argument is said and the default taken (the install must not stop for it)."""
    if args.wait is not None:
        return args.wait
    try:
        limit = cmdline.wait_limit(_kernel_cmdline())
    except ValueError as e:
        _say(f"warning: {e}; waiting {retry.span(retry.LIMIT)}")
        return retry.LIMIT
    return retry.LIMIT if limit is None else limit


def _say(line: str) -> None:
    print(line, flush=True)


def _load(source: str) -> tuple[dict, str | None]:
    """The plan, and the master's Date header when it came from the master. The master hands
    a plan out once per install cycle: a node resuming after a power cut is refused (409)
    and goes on with the plan it kept on its disk."""
    if source.startswith(("http://", "https://")):
        from installer.agent.install import local_macs
        return client.fetch_plan(source, kept=lambda: savedplan.find(local_macs(), log=_say))
    if source.startswith(rules.STICK_SCHEME):     # the install stick: no master, no network
        from installer.agent import install, stick
        try:
            return stick.load_plan(source, install.local_macs(), log=_say), None
        except stick.StickError as e:
            raise ValueError(str(e)) from None
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
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="how long each fetch waits for an absent master (default: "
                        "installer.wait= on the kernel command line, else 1800)")
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
    waits: list[str] = []       # waits for the plan: said with the install's first report
    retry.configure(_wait_limit(args), log=_say,
                    on_wait=lambda what, s: waits.append(
                        f"waited for the master {retry.span(s)} ({what})"))
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
        # Not reported: a report needs the plan's token, and this plan cannot be trusted.
        print("fix: render the plans with the ganeti-installer release that built this "
              "netboot image, then ganeti-installer reinstall this node", flush=True)
        return 4
    if not args.dry_run:
        clock.follow(clock.master_time(date), log=lambda line: print(line, flush=True))
    args.offline = source.startswith(rules.STICK_SCHEME)
    return _install(plan, args, waits)


def _install(plan: dict, args, waits: list[str]) -> int:
    from installer.agent.install import Installer

    # Offline (the install stick): no report is sent now, each waits in the outbox on the
    # target, and the installed node delivers them once a master runs (booted.py).
    offline = getattr(args, "offline", False)
    reporter = client.Reporter(plan["report"]["url"], plan["report"].get("token"),
                               attempts=0 if offline else 3)
    if offline:
        print("installing from the stick: no network; reports wait on the node for the "
              "master", flush=True)
    reporter.notes = waits
    retry.default.on_wait = reporter.waited     # status shows how long the node waited
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
    if offline and not args.no_reboot:
        print(f"remove the stick; rebooting in {STICK_PAUSE} s", flush=True)
        time.sleep(STICK_PAUSE)
    if not args.no_reboot:
        # The netboot system lives in RAM and the target is unmounted and synced: nothing
        # needs an orderly shutdown (--force skips stopping each unit, seconds on an old PC).
        # An installed system, in first-boot mode, gets one.
        how = ["--no-block"] if args.first_boot else ["--force"]
        subprocess.run(["systemctl"] + how + [plan["finish"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
