"""Phase hooks carried by the plan, run run-parts style with their output reported."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Callable, List

from installer.agent.proc import Runner


def run_phase(plan: dict, phase: str, target: str, report: Callable[[str, str], None],
              run: Runner) -> List[str]:
    """Run the plan's hooks of `phase` in name order; a failing hook fails the install.
    A dry run lists each as `<phase>.d/<name>` and runs none."""
    ran = []
    hooks = sorted((h for h in plan["hooks"] if h["phase"] == phase), key=lambda h: h["name"])
    env = dict(os.environ, TARGET=target, GI_NODE=plan["node"]["name"], GI_PHASE=phase)
    for hook in hooks:
        if not run.record([f"{phase}.d/{hook['name']}"]):
            continue
        with tempfile.NamedTemporaryFile("w", prefix=f"gi-hook-{hook['name']}-",
                                         delete=False) as f:
            f.write(hook["content"])
        os.chmod(f.name, 0o700)
        try:
            proc = subprocess.run([f.name], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        finally:
            os.remove(f.name)
        report(f"{phase}/{hook['name']}", proc.stdout[-4000:])
        if proc.returncode != 0:
            raise RuntimeError(f"hook {phase}/{hook['name']} exited {proc.returncode}: "
                               f"{proc.stdout.strip()[-400:]}")
        ran.append(hook["name"])
    return ran
