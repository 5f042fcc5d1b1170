"""All work inside the target root goes through this one chroot context: API filesystems
bound in, no daemon started by a package's maintainer script, the netboot image's DNS."""

from __future__ import annotations

import os
from typing import List

from installer.agent.proc import Runner

POLICY = "#!/bin/sh\n# ganeti-installer: no daemon starts inside the install target\nexit 101\n"


class Target:
    def __init__(self, root: str, runner: Runner):
        self.root, self.run = root, runner
        self.mounted: List[str] = []

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))

    def __enter__(self) -> Target:
        if self.root == "/":
            return self  # first-boot mode: we are the installed system
        binds = [("proc", "proc", ["-t", "proc", "proc"]), ("sys", "sys", ["-t", "sysfs", "sys"]),
                 ("dev", "dev", ["--bind", "/dev"]), ("dev/pts", "dev/pts", ["--bind", "/dev/pts"]),
                 ("run", "run", ["-t", "tmpfs", "tmpfs"])]
        for _, sub, args in binds:
            where = self.path(sub)
            self.run.files.makedirs(where)
            if not os.path.ismount(where):
                self.run.change(["mount"] + args + [where])
                self.mounted.append(where)
        efivars = "/sys/firmware/efi/efivars"
        if os.path.isdir(efivars) and os.listdir(efivars):
            self.run.change(["mount", "-t", "efivarfs", "efivarfs", self.path(efivars)])
            self.mounted.append(self.path(efivars))
        files = self.run.files
        files.write(self.path("usr/sbin/policy-rc.d"), POLICY, 0o755)
        resolv = self.path("etc/resolv.conf")
        if os.path.lexists(resolv):
            files.replace(resolv, resolv + ".gi-saved")
        if os.path.exists("/etc/resolv.conf"):
            files.copy("/etc/resolv.conf", resolv)
        return self

    def __exit__(self, *exc) -> None:
        if self.root == "/":
            return
        files = self.run.files
        resolv = self.path("etc/resolv.conf")
        if os.path.lexists(resolv + ".gi-saved"):
            files.replace(resolv + ".gi-saved", resolv)
        policy = self.path("usr/sbin/policy-rc.d")
        if os.path.exists(policy):
            files.remove(policy)
        for where in reversed(self.mounted):
            self.run.change(["umount", "--lazy", where])
        self.mounted.clear()

    def chroot(self, argv: List[str], *, input=None, env=None) -> str:
        env = dict(env or os.environ, DEBIAN_FRONTEND="noninteractive",
                   DEBCONF_NONINTERACTIVE_SEEN="true", LC_ALL="C.UTF-8",
                   PATH="/usr/sbin:/usr/bin:/sbin:/bin")
        prefix = [] if self.root == "/" else ["chroot", self.root]
        return self.run.change(prefix + argv, input=input, env=env)
