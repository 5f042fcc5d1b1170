"""crypt(3) hashes as /etc/shadow holds them: is a value a whole hash of a known method?

A value that merely starts like one ("$6$secret") would be written to /etc/shadow as
given and lock root out, or be a password in plain text: the salt and hash fields must
have the lengths and alphabet their method produces.
"""

from __future__ import annotations

import re

_B64 = r"[./0-9A-Za-z]"
METHODS = {
    "md5crypt ($1$)": re.compile(rf"\$1\${_B64}{{1,8}}\${_B64}{{22}}"),
    "sha256crypt ($5$)": re.compile(rf"\$5\$(rounds=\d{{1,9}}\$)?[^$:\s]{{1,16}}\${_B64}{{43}}"),
    "sha512crypt ($6$)": re.compile(rf"\$6\$(rounds=\d{{1,9}}\$)?[^$:\s]{{1,16}}\${_B64}{{86}}"),
    "bcrypt ($2b$)": re.compile(rf"\$2[aby]\$\d\d\${_B64}{{53}}"),
    "yescrypt ($y$)": re.compile(rf"\$g?y\${_B64}+\${_B64}{{1,86}}\${_B64}{{43}}"),
}
PREFIXES = {"$1$": "md5crypt ($1$)", "$5$": "sha256crypt ($5$)", "$6$": "sha512crypt ($6$)",
            "$2a$": "bcrypt ($2b$)", "$2b$": "bcrypt ($2b$)", "$2y$": "bcrypt ($2b$)",
            "$y$": "yescrypt ($y$)", "$gy$": "yescrypt ($y$)"}
LOCKED = ("!", "*")


def problem(value: str) -> str | None:
    """None for a whole hash or a locked password ("!", "*", "!<hash>"); else what is wrong."""
    if value in LOCKED:
        return None
    text = value[1:] if value.startswith("!") else value
    method = next((m for p, m in PREFIXES.items() if text.startswith(p)), None)
    if method is None:
        return "looks like a plaintext password, not a crypt(3) hash"
    if not METHODS[method].fullmatch(text):
        return (f"starts like a {method} hash but its salt or hash field has the wrong length "
                "or characters (truncated, or a password after the prefix)")
    return None
