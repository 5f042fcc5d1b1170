"""Running commands on the node: every change goes through a Runner, so a dry run prints the
exact command list (as FAI's setup-storage -X does) and a real run logs what it did. Files
the install writes go through its Writer (`runner.files`), for the same reason."""

from __future__ import annotations

import subprocess
from typing import Callable, List, Optional, Sequence

from installer.agent.files import Writer


class CommandFailed(Exception):
    def __init__(self, argv: Sequence[str], code: int, output: str):
        self.argv, self.code, self.output = list(argv), code, output
        tail = "\n".join(output.strip().splitlines()[-15:])
        super().__init__(f"`{' '.join(argv)}` exited {code}: {tail}")


class Runner:
    """Runs commands; in dry-run mode records the changing ones instead of running them.

    `read()` always runs (it only inspects state); `change()` is what a dry run lists.
    """

    def __init__(self, dry_run: bool = False, log: Optional[Callable[[str], None]] = None):
        self.dry_run = dry_run
        self.log = log or (lambda line: None)
        self.commands: List[List[str]] = []
        self.files = Writer(dry_run)

    def _run(self, argv, *, input=None, env=None, check=True, timeout=None, merge=True):
        """Run argv; `merge` folds stderr into the output (for logs), else it is kept apart."""
        proc = subprocess.run(list(argv), input=input, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, proc.stdout + (proc.stderr or ""))
        return proc

    def read(self, argv: Sequence[str], *, check: bool = True, env=None) -> str:
        return self._run(argv, check=check, env=env, merge=False).stdout

    def record(self, argv: Sequence[str]) -> bool:
        """List a change this runner does not run itself (a pipeline, a hook); whether to
        go on and make it (False in a dry run)."""
        self.commands.append(list(argv))
        return not self.dry_run

    def change(self, argv: Sequence[str], *, input: Optional[str] = None, env=None,
               timeout=None) -> str:
        self.commands.append(list(argv))
        if self.dry_run:
            return ""
        self.log("+ " + " ".join(argv))
        out = self._run(argv, input=input, env=env, timeout=timeout).stdout
        for line in out.strip().splitlines()[-5:]:
            self.log("  " + line)
        return out
