"""Reading a cluster file safely: a regular file, of bounded size, UTF-8, bounded nesting.

Whatever the path names (a directory, a FIFO, /dev/zero, a 5000-deep array, Latin-1 text),
the answer is a parsed dict or ConfigInvalid naming the problem, never a hang or a traceback.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tomllib
from typing import NoReturn

from installer.cluster.errors import ConfigError, ConfigInvalid

MAX_BYTES = 1 << 20     # a cluster file of 500 nodes is under 100 KiB
MAX_DEPTH = 16          # [[nodes]] and inline arrays need 3
BOM = b"\xef\xbb\xbf"
# What can hold a bracket that does not nest: strings and comments, and the brackets.
_TOKENS = re.compile(r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|'
                     r"'[^'\n]*'|#[^\n]*|[\[\]{}]", re.S)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))
FIX_PATH = "give the path of a cluster file, e.g. examples/cluster.toml"


def _fail(path: str, problem: str, fix: str) -> NoReturn:
    raise ConfigInvalid([ConfigError(path, "", problem, fix)])


def read(path: str) -> dict:
    """The parsed cluster file at `path`, or ConfigInvalid saying what is wrong with it."""
    text = decode(path, read_bytes(path))
    check_depth(path, text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        _fail(path, f"not valid TOML ({e})", "fix the syntax at the line and column named")
    except ValueError:      # an integer past Python's 4300-digit limit
        _fail(path, "holds a number of thousands of digits", "write numbers of at most 19 digits")
    except RecursionError:  # check_depth stops this first; kept in case tomllib changes
        _fail(path, "nests values too deep to read", "nest arrays and tables a few levels deep")


def read_bytes(path: str) -> bytes:
    """The file's bytes; only a regular file is opened, and at most MAX_BYTES are read."""
    try:
        st = os.stat(path)
    except OSError as e:
        _fail(path, *_open_problem(e))
    kind = next((name for test, name in _KINDS if test(st.st_mode)), None)
    if kind:
        _fail(path, f"is {kind}, not a file", FIX_PATH)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since stat(), open does not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        _fail(path, *_open_problem(e))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            _fail(path, "is not a regular file", FIX_PATH)
        chunks, size = [], 0
        while size <= MAX_BYTES:        # /proc files say size 0: count what is read
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        _fail(path, f"cannot be read ({e.strerror})", FIX_PATH)
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        _fail(path, f"is larger than {MAX_BYTES >> 20} MiB, far more than a cluster file "
              "holds", "check that this is the cluster file (a TOML text file)")
    return b"".join(chunks)


def _open_problem(e: OSError) -> tuple[str, str]:
    if e.errno == errno.ENOENT:
        return "no such file", FIX_PATH
    if e.errno == errno.ENOTDIR:
        return ("a part of the path is a file, not a directory",
                "remove a trailing / and check each directory of the path")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ("cannot be read: permission denied",
                "make it readable to this user (chmod u+r) or run as a user who may read it")
    if e.errno == errno.ELOOP:
        return "the path is a loop of symbolic links", "point the link at the cluster file"
    if e.errno == errno.ENAMETOOLONG:
        return "the path is too long", FIX_PATH
    return f"cannot be opened ({e.strerror})", FIX_PATH


def decode(path: str, raw: bytes) -> str:
    """UTF-8 text, with a leading BOM dropped; a bad byte is named by line and column."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        _fail(path, "is UTF-16 text", "save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8)")
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        _fail(path, f"is not UTF-8: byte 0x{raw[e.start]:02x} at line {line}, column {column}",
              "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE)")


def check_depth(path: str, text: str) -> None:
    """Refuse arrays and inline tables nested deeper than MAX_DEPTH before tomllib, whose
    recursive parser would otherwise run out of stack."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    line = text.count("\n", 0, m.start()) + 1
                    _fail(path, f"brackets nest more than {MAX_DEPTH} deep (line {line})",
                          "a cluster file nests arrays and tables at most 3 deep: close the "
                          "brackets")
        elif token in "]}":
            depth -= 1
