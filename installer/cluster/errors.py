"""Typed errors with user-facing messages: what is wrong, where, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigError:
    """One problem in a cluster file, located by file and key (`nodes[2].ip`)."""
    file: str
    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.problem}; {self.fix}"

    def as_dict(self) -> dict:
        return {"file": self.file, "key": self.key, "problem": self.problem, "fix": self.fix}


class ConfigInvalid(Exception):
    """All the problems found in a cluster file, reported together."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class InstallerError(Exception):
    """An error the CLI prints as it is (no traceback): the message names the fix."""
