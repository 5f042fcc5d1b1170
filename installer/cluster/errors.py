"""Typed errors with user-facing messages: what is wrong, where, and how to fix it."""

from __future__ import annotations

import reprlib
import unicodedata
from dataclasses import dataclass

SHOWN = 60              # characters of a value a message quotes
FIELD_LIMIT = 1000      # characters of any one part of a message (key, problem, fix)
# Characters that move the cursor, end a line or change how text reads on a terminal.
_HIDDEN = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN


def escape(text: str) -> str:
    """The text with every control, format and line-separator character spelled out, so
    a value cannot end a message line, forge another one or drive the terminal."""
    return "".join(c if unicodedata.category(c) not in _HIDDEN else _spelled(c) for c in text)


def _spelled(c: str) -> str:
    n = ord(c)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or \
        (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")


def quote(value) -> str:
    """A value from the file as messages show it: quoted, escaped, at most SHOWN characters
    (then "…"), whatever its type or size."""
    if isinstance(value, str):
        short = value[:SHOWN]
        body = escape(short.replace("\\", "\\\\").replace("'", "\\'"))
        return f"'{body}…'" if len(value) > SHOWN else f"'{body}'"
    try:
        text = _REPR.repr(value)
    except ValueError:      # an int past Python's digit limit for str()
        text = f"<a number of about {value.bit_length() * 3 // 10} digits>"
    return escape(text)[:SHOWN * 2]


def _tidy(text: str) -> str:
    text = escape(str(text))
    return text if len(text) <= FIELD_LIMIT else text[:FIELD_LIMIT] + "…"


@dataclass(frozen=True)
class ConfigError:
    """One problem in a cluster file, located by file and key (`nodes[2].ip`)."""
    file: str
    key: str
    problem: str
    fix: str

    def __post_init__(self):
        # A safety net under quote(): keys come from the file too, and every part of a
        # message is one line of bounded length, whatever a caller interpolated.
        for name in ("file", "key", "problem", "fix"):
            object.__setattr__(self, name, _tidy(getattr(self, name)))

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
