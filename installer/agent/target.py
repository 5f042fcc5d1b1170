"""All work inside the target root goes through this one chroot context: API filesystems
bound in, no daemon started by a package's maintainer script, the netboot image's DNS."""

from __future__ import annotations

import os
import shutil
from typing import List

from installer.agent.proc import Runner

POLICY = "#!/bin/sh\n# ganeti-installer: no daemon starts inside the install target\nexit 101\n"


class Target:
    def __init__(self, root: str, runner: Runner):
        self.root, self.run = root, runner
        self.mounted: List[str] = []

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))

    def __enter__(self) -> "Target":
        if self.root == "/":
            return self  # first-boot mode: we are the installed system
        binds = [("proc", "proc", ["-t", "proc", "proc"]), ("sys", "sys", ["-t", "sysfs", "sys"]),
                 ("dev", "dev", ["--bind", "/dev"]), ("dev/pts", "dev/pts", ["--bind", "/dev/pts"]),
                 ("run", "run", ["-t", "tmpfs", "tmpfs"])]
        for _, sub, args in binds:
            where = self.path(sub)
            os.makedirs(where, exist_ok=True)
            if not os.path.ismount(where):
                self.run.change(["mount"] + args + [where])
                self.mounted.append(where)
        efivars = "/sys/firmware/efi/efivars"
        if os.path.isdir(efivars) and os.listdir(efivars):
            self.run.change(["mount", "-t", "efivarfs", "efivarfs", self.path(efivars)])
            self.mounted.append(self.path(efivars))
        self._write("usr/sbin/policy-rc.d", POLICY, 0o755)
        resolv = self.path("etc/resolv.conf")
        if os.path.lexists(resolv):
            os.replace(resolv, resolv + ".gi-saved")
        if os.path.exists("/etc/resolv.conf"):
            shutil.copyfile("/etc/resolv.conf", resolv)
        return self

    def __exit__(self, *exc) -> None:
        if self.root == "/":
            return
        resolv = self.path("etc/resolv.conf")
        if os.path.lexists(resolv + ".gi-saved"):
            os.replace(resolv + ".gi-saved", resolv)
        policy = self.path("usr/sbin/policy-rc.d")
        if os.path.exists(policy):
            os.remove(policy)
        for where in reversed(self.mounted):
            self.run.change(["umount", "--lazy", where])
        self.mounted.clear()

    def _write(self, rel: str, content: str, mode: int) -> None:
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(path, mode)

    def chroot(self, argv: List[str], *, input=None, env=None) -> str:
        env = dict(env or os.environ, DEBIAN_FRONTEND="noninteractive",
                   DEBCONF_NONINTERACTIVE_SEEN="true", LC_ALL="C.UTF-8",
                   PATH="/usr/sbin:/usr/bin:/sbin:/bin")
        prefix = [] if self.root == "/" else ["chroot", self.root]
        return self.run.change(prefix + argv, input=input, env=env)
