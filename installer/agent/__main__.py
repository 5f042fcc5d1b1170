"""Entry point of the agent: `python3 -m installer.agent`."""

from __future__ import annotations

import sys

from installer import __version__
from installer.agent import cmdline

NO_PLAN = ("no plan: the kernel command line has no installer.plan=<URL> and no boot medium "
           "carries a plan. Boot this machine from the master's PXE entry for its MAC, or add "
           "installer.plan=http://<master>/plans/<node>.json to the kernel command line.")


def main(argv: list[str] | None = None) -> int:
    print(f"ganeti-installer agent {__version__}", flush=True)
    try:
        with open("/proc/cmdline", encoding="utf-8") as f:
            url = cmdline.plan_url(f.read())
    except OSError:
        url = None
    if url is None:
        print(NO_PLAN, flush=True)
        return 2
    print(f"plan: {url}", flush=True)
    print("installing is not implemented in this version of the agent", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main())
