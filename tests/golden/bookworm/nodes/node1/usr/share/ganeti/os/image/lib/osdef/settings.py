"""The OS definition's settings: shell-style KEY="value" files, parsed and never sourced.

Where they live is the paper's (section 2.12): defaults in /etc/default/ganeti-instance-image,
the variants in /etc/ganeti/instance-image/variants.list, and each variant's own settings in
/etc/ganeti/instance-image/variants/<variant>.conf, which override the defaults. A line that
is not KEY="value", a key this definition does not know, or a value outside its choices is a
SettingError naming the file, the line and the fix; nothing is written to any disk then.
"""

from __future__ import annotations

import difflib
import os
import re
import textwrap
from typing import Dict, List, NamedTuple, Optional, Tuple

DEFAULTS_FILE = "default/ganeti-instance-image"       # under /etc
VARIANTS_LIST = "ganeti/instance-image/variants.list"
VARIANTS_DIR = "ganeti/instance-image/variants"
YES_NO = ("yes", "no")
IMAGE_TYPES = ("raw", "qcow2", "tarball")
FILESYSTEMS = ("ext4", "ext3")


class Setting(NamedTuple):
    default: str
    choices: Tuple[str, ...]        # () for free text, checked by `pattern`
    meaning: str


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
PATH_PATTERN = re.compile(r"(/[A-Za-z0-9._+-]+)+")

# Every setting, in the order the defaults file lists them.
SETTINGS: Dict[str, Setting] = {
    "CDINSTALL": Setting("no", YES_NO, "yes: create only makes sure the disk is there and "
                         "writes nothing to it; the instance is installed from a CD image "
                         "(gnt-instance start -H boot_order=cdrom,cdrom_image_path=...)"),
    "NOMOUNT": Setting("no", YES_NO, "yes: never mount the instance's disk (an OS whose file "
                       "system Linux cannot write); a tarball image needs it mounted"),
    "IMAGE_NAME": Setting("", (), "the instance image's name: create writes "
                          "IMAGE_DIR/IMAGE_NAME-ARCH.<raw|qcow2|tar> (with its .sha256 "
                          "beside it) to the instance's first disk"),
    "IMAGE_TYPE": Setting("raw", IMAGE_TYPES, "raw: a whole disk, written as it is; qcow2: "
                          "a whole disk, converted with qemu-img; tarball: a root file "
                          "system, unpacked into one partition made on the disk"),
    "ARCH": Setting("x86_64", (), "the instance image's architecture, part of its file name"),
    "IMAGE_DIR": Setting("/var/cache/ganeti-instance-image", (),
                         "where the instance images and their .sha256 files are"),
    "FILESYSTEM": Setting("ext4", FILESYSTEMS, "the file system a tarball image is unpacked "
                          "into"),
    "IMAGE_DEBUG": Setting("no", YES_NO, "yes: print every command create runs"),
}
LINE = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\"[^\"$`\\]*\"|'[^']*'|"
                  r"[A-Za-z0-9_./:+-]*)\s*(#.*)?")


class SettingError(Exception):
    def __init__(self, file: str, line: Optional[int], problem: str, fix: str):
        self.file, self.line, self.problem, self.fix = file, line, problem, fix
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {problem}; {fix}")


def parse(path: str) -> Dict[str, Tuple[str, int]]:
    """KEY -> (value, line number) of one settings file; SettingError on the first bad line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    out: Dict[str, Tuple[str, int]] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        m = LINE.fullmatch(text)
        if m is None:
            raise SettingError(path, number, f"{_shown(text)} is not a KEY=\"value\" line "
                               "(it is read, not run by a shell: no commands, $ or `)",
                               'write it as KEY="value", e.g. CDINSTALL="yes"')
        key, value = m["key"], m["value"]
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        _check(path, number, key, value)
        out[key] = (value, number)
    return out


def _check(path: str, number: int, key: str, value: str) -> None:
    setting = SETTINGS.get(key)
    if setting is None:
        close = difflib.get_close_matches(key.upper(), list(SETTINGS), n=1)
        hint = f"did you mean {close[0]}?" if close else \
            f"remove the line; known settings: {', '.join(SETTINGS)}"
        raise SettingError(path, number, f"unknown setting {key}", hint)
    if setting.choices and value not in setting.choices:
        raise SettingError(path, number, f"{key}={_shown(value)} is not one of "
                           f"{', '.join(setting.choices)}",
                           f'write {key}="{setting.choices[0]}" or another of those')
    if key == "IMAGE_DIR" and not (PATH_PATTERN.fullmatch(value) and ".." not in value):
        raise SettingError(path, number, f"IMAGE_DIR={_shown(value)} is not an absolute "
                           "directory path", 'write e.g. IMAGE_DIR="/var/cache/'
                           'ganeti-instance-image"')
    if key in ("IMAGE_NAME", "ARCH") and value and not NAME_PATTERN.fullmatch(value):
        raise SettingError(path, number, f"{key}={_shown(value)} is not a file-name part",
                           "use letters, digits and . _ + - only")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "…")


class Settings(NamedTuple):
    variant: str
    values: Dict[str, str]
    source: Dict[str, str]          # KEY -> "file:line" that set it (the defaults: absent)

    def yes(self, key: str) -> bool:
        return self.values[key] == "yes"

    def where(self, key: str) -> str:
        return self.source.get(key, "the built-in default")


def variants(etc: str) -> List[str]:
    """The variants listed in variants.list (Ganeti's rules: '#' lines and blanks skipped)."""
    path = os.path.join(etc, VARIANTS_LIST)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            names = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    except FileNotFoundError:
        raise SettingError(path, None, "missing", "list the variants there, one a line "
                           "(the paper's: default and cd)") from None
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise SettingError(path, names.index(name) + 1, f"{_shown(name)} is not a variant "
                               "name", "use letters, digits and . _ + - only")
    return names


def load(etc: str, variant: str) -> Settings:
    """The settings of a variant: the built-in defaults, then the defaults file, then the
    variant's own file. The variant must be listed in variants.list."""
    variant = variant or "default"
    listed = variants(etc)
    if variant not in listed:
        raise SettingError(os.path.join(etc, VARIANTS_LIST), None,
                           f"variant {_shown(variant)} is not listed (it lists "
                           f"{', '.join(listed) or 'none'})",
                           f"add {variant} on a line of its own, or use a listed variant")
    values = {k: s.default for k, s in SETTINGS.items()}
    source: Dict[str, str] = {}
    for path in (os.path.join(etc, DEFAULTS_FILE),
                 os.path.join(etc, VARIANTS_DIR, f"{variant}.conf")):
        if not os.path.exists(path):
            continue
        for key, (value, number) in parse(path).items():
            values[key], source[key] = value, f"{path}:{number}"
    return Settings(variant, values, source)


def defaults_text() -> str:
    """/etc/default/ganeti-instance-image: every setting with its meaning and default."""
    out = ["# Settings of the `image` OS definition (ganeti-installer's ganeti-instance-image).",
           "# Read as KEY=\"value\" lines, never run by a shell. A variant's own file,",
           "# /etc/ganeti/instance-image/variants/<variant>.conf, overrides these: change a",
           "# variant there (or in the cluster file), not here (the paper's section 2.12).",
           "# An unknown key or a bad value fails `verify` and `create`, naming the line.", ""]
    for key, s in SETTINGS.items():
        out += textwrap.wrap(f"{key}: {s.meaning}.", 88, initial_indent="# ",
                             subsequent_indent="#   ", break_on_hyphens=False,
                             break_long_words=False)
        if s.choices:
            out.append(f"#   one of: {', '.join(s.choices)}")
        out.append(f'{key}="{s.default}"')
        out.append("")
    return "\n".join(out)


def conf_text(variant: str, values: Dict[str, str]) -> str:
    """A variant's .conf: only what differs from the defaults file."""
    lines = [f"# Variant {variant} of the image OS definition (from the cluster file)."]
    lines += [f'{k}="{v}"' for k, v in values.items()]
    return "\n".join(lines) + "\n"
