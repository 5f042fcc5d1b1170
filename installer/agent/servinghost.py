"""The master installed from an `usb --all` stick becomes the serving host: the plan's
serving_host section names what to copy from the stick onto the new system (OUTDIR, serve's
state, the cluster file, the program) and serve's unit, enabled here for the first boot.

The stick's FAT file system has no modes: every copy gets 0755/0644, or 0700/0600 where the
plan says private (serve's state: tokens and its SSH key). A copy is made beside its place and
renamed into it, so a resumed install never finds half a tree; the plan lists a tree before
the trees copied into it (OUTDIR, then its netboot/ and images/).
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

from installer.agent.imagefetch import InstallError
from installer.agent.proc import Runner


def install(plan: dict, root: str, run: Runner, log: Callable[[str], None]) -> None:
    section = plan.get("serving_host")
    if not section:
        return
    for copy in section["copies"]:
        dest = os.path.join(root, copy["to"].lstrip("/"))
        if run.dry_run:
            run.files.write(dest, "")
            continue
        _copy(copy["from"], dest, copy["private"])
    unit = section["unit"]
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    link = os.path.join(wants, unit)
    if run.dry_run:
        run.files.write(link, "")
        return
    os.makedirs(wants, exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(f"/etc/systemd/system/{unit}", link)
    log(f"serving host: OUTDIR, serve's state and the program copied from the stick; "
        f"{unit} starts at the first boot")


def _copy(source: str, dest: str, private: bool) -> None:
    """`source` (a file or a tree on the stick) at `dest`, whole, with our modes."""
    dir_mode, file_mode = (0o700, 0o600) if private else (0o755, 0o644)
    part = dest + ".part"
    _remove(part)
    try:
        os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, part, copy_function=shutil.copyfile)
            for top, _, names in os.walk(part):
                os.chmod(top, dir_mode)
                for name in names:
                    os.chmod(os.path.join(top, name), file_mode)
        else:
            shutil.copyfile(source, part)
            os.chmod(part, file_mode)
        _remove(dest)
        os.replace(part, dest)
    except OSError as e:
        raise InstallError(f"cannot copy {source} from the install stick to {dest}: "
                           f"{e.strerror or e}; make the stick again, or check the disk") from None


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
