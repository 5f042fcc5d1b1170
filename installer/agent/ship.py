"""The agent as files: the one list that the netboot initrd, the debian-installer bundle and
the copy on an installed node are all made from.

Shipped alone, the agent is `installer/agent/` beside an `installer/__init__.py` of its own
that imports nothing, so the node needs none of the build host's or master's code.
"""
from __future__ import annotations

import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_INIT = '"""ganeti-installer as shipped to a node: its agent only."""\n'
DATA = ("plan.schema.json",)


def sources() -> list[str]:
    """The agent's own files (absolute paths), sorted: its modules and the plan schema."""
    names = sorted(n for n in os.listdir(HERE) if n.endswith(".py") or n in DATA)
    return [os.path.join(HERE, n) for n in names]


def copy_to(site: str) -> str:
    """Write the agent as the package `installer` under `site`; returns the package path.
    A package already there is replaced whole, so no module of an older agent lingers."""
    pkg = os.path.join(site, "installer")
    if os.path.realpath(os.path.join(pkg, "agent")) == os.path.realpath(HERE):
        return pkg                      # the running agent is that copy (first-boot mode)
    shutil.rmtree(pkg, ignore_errors=True)
    os.makedirs(os.path.join(pkg, "agent"), mode=0o755)
    with open(os.path.join(pkg, "__init__.py"), "w", encoding="utf-8") as f:
        f.write(PACKAGE_INIT)
    for src in sources():
        shutil.copyfile(src, os.path.join(pkg, "agent", os.path.basename(src)))
    for path in (pkg, os.path.join(pkg, "agent")):
        os.chmod(path, 0o755)
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                os.chmod(full, 0o644)
    return pkg
