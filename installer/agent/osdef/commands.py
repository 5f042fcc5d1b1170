"""The OS API's five commands (ganeti-os-interface(7), API version 20). Ganeti passes
everything in the environment: INSTANCE_NAME, OS_VARIANT, DISK_COUNT, DISK_0_PATH, ...;
import and export also IMPORT_/EXPORT_DISK_PATH (or the older _DEVICE) and the index.

Every command checks its environment and settings before it touches a disk: a bad setting
fails here, naming the file, the line and the fix, and the disk is left as it was.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Mapping, Optional

from . import disk, image, settings

COMMANDS = ("create", "import", "export", "rename", "verify")
USAGE = {
    "create": "create: write the variant's instance image to DISK_0_PATH (nothing with "
              "CDINSTALL=yes)",
    "import": "import: restore IMPORT_DISK_PATH from the stream on stdin",
    "export": "export: write EXPORT_DISK_PATH to stdout",
    "rename": "rename: nothing to do on the instance's disk (OLD_INSTANCE_NAME to "
              "INSTANCE_NAME)",
    "verify": "verify parameters: check the variant's settings and OS parameters",
}
PARAMETERS: Dict[str, str] = {}         # parameters.list: this definition takes none


class UsageError(Exception):
    pass


def need(env: Mapping[str, str], *names: str) -> List[str]:
    """The first of each group of alternative names that is set; UsageError if none is."""
    out = []
    for name in names:
        options = name.split("|")
        value = next((env[o] for o in options if env.get(o)), None)
        if value is None:
            raise UsageError(f"{' or '.join(options)} is not set (Ganeti sets it; to run by "
                             "hand, export it)")
        out.append(value)
    return out


def create(env: Mapping[str, str], etc: str, log: Callable[[str], None]) -> None:
    s = settings.load(etc, env.get("OS_VARIANT", ""))
    name, count = need(env, "INSTANCE_NAME", "DISK_COUNT")
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"DISK_COUNT={count!r}: the instance needs at least one disk")
    (target,) = need(env, "DISK_0_PATH")
    if s.yes("CDINSTALL"):
        disk.size_of(target)        # the disk must be there, but stays blank for the CD
        log(f"{name}: variant {s.variant} installs from a CD: disk {target} left blank")
        return
    kind = s.values["IMAGE_TYPE"]
    if kind == "tarball" and s.yes("NOMOUNT"):
        raise settings.SettingError(s.where("NOMOUNT"), None, "NOMOUNT=\"yes\" but a "
                                    "tarball image is unpacked into a mounted file system",
                                    "use a raw or qcow2 image, or NOMOUNT=\"no\"")
    path = image.checked(s)
    say = log if s.yes("IMAGE_DEBUG") else (lambda line: None)
    if kind == "raw":
        disk.write_raw(path, target, say)
    elif kind == "qcow2":
        disk.write_qcow2(path, target, say)
    else:
        disk.write_tarball(path, target, s.values["FILESYSTEM"], name, say)
    log(f"{name}: wrote {os.path.basename(path)} to {target}")


def export(env: Mapping[str, str], out, size_fd: Optional[int]) -> None:
    (source,) = need(env, "EXPORT_DISK_PATH|EXPORT_DEVICE")
    size = disk.size_of(source)
    if size_fd is not None:         # Ganeti's progress estimate
        os.write(size_fd, f"{size}\n".encode())
    with open(source, "rb") as src:
        disk.stream(src, out, size)
    out.flush()


def import_(env: Mapping[str, str], src) -> None:
    (target,) = need(env, "IMPORT_DISK_PATH|IMPORT_DEVICE")
    room = disk.size_of(target)
    with open(target, "r+b") as dst:
        disk.stream(src, dst, room)
        if src.read(1):
            raise disk.DiskError(f"the stream is larger than the disk {target} ({room} bytes):"
                                 " import into a disk at least as large as the exported one")
        dst.flush()
        os.fsync(dst.fileno())


def rename(env: Mapping[str, str], log: Callable[[str], None]) -> None:
    new, old = need(env, "INSTANCE_NAME", "OLD_INSTANCE_NAME")
    log(f"{old} is now {new}: the image OS definition keeps no name on the instance's disk")


def verify(env: Mapping[str, str], args: List[str], etc: str) -> None:
    if not args or any(a != "parameters" for a in args):
        raise UsageError(f"verify takes the checks to run: 'parameters' (got {args})")
    settings.load(etc, env.get("OS_VARIANT", ""))
    unknown = sorted(k[4:].lower() for k in env if k.startswith("OSP_")
                     and k[4:].lower() not in PARAMETERS)
    if unknown:
        raise UsageError(f"unknown OS parameter(s) {', '.join(unknown)}: the image OS "
                         "definition takes none (parameters.list is empty)")


def main(command: str, argv: List[str], env: Optional[Mapping[str, str]] = None,
         etc: str = "/etc") -> int:
    env = os.environ if env is None else env
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {USAGE[command]}")
        return 0
    try:
        if command != "verify" and argv:
            raise UsageError(f"{command} takes no arguments (got {argv})")
        _dispatch(command, argv, env, etc)
    except (UsageError, settings.SettingError, image.ImageError, disk.DiskError,
            OSError) as e:
        print(f"image OS {command}: {e}", file=sys.stderr)
        if isinstance(e, UsageError):
            print(f"usage: {USAGE[command]}", file=sys.stderr)
        return 1
    return 0


def _dispatch(command: str, argv: List[str], env: Mapping[str, str], etc: str) -> None:
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731  stdout may be the disk
    if command == "create":
        create(env, etc, log)
    elif command == "export":
        fd = env.get("EXP_SIZE_FD", "")
        export(env, sys.stdout.buffer, int(fd) if fd.isdigit() else None)
    elif command == "import":
        import_(env, sys.stdin.buffer)
    elif command == "rename":
        rename(env, log)
    else:
        verify(env, argv, etc)


if __name__ == "__main__":      # python3 -m osdef.commands <command> [--etc DIR] [args]
    args = sys.argv[1:]
    root = "/etc"
    if len(args) > 2 and args[1] == "--etc":
        root = args[2]
        del args[1:3]
    sys.exit(main(args[0], args[1:], etc=root) if args and args[0] in COMMANDS else 2)
