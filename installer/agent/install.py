"""The install, as named stages from the plan, each reported and journaled.

identify → storage → os → configure → bootloader → finish. Storage checks the disk before
it acts (so a resumed install finds its own partitions and VG); the later stages are journaled
on the root filesystem and skipped once done. The same code serves first-boot mode, where the
target is the running system (`/`) and storage claims the disk's free space as the VG.
"""

from __future__ import annotations

import os
import resource
import subprocess
from typing import Callable, List, Optional

from installer.agent import (
    booted,
    bootloader,
    configure,
    disks,
    hooks,
    instancefetch,
    journal,
    osinstall,
    rules,
    savedplan,
    servinghost,
)
from installer.agent.client import Reporter, fetch_secrets
from installer.agent.proc import Runner
from installer.agent.storage import Storage
from installer.agent.target import Target
from installer.agent.version import __version__

STAGES = ["identify", "storage", "os", "configure", "bootloader", "finish"]
# First-boot mode: the OS and its boot loader are there already (debian-installer made them).
FIRST_BOOT_STAGES = ["identify", "storage", "configure", "drbd", "finish"]
KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8"
MIN_VG = rules.MIN_VG_BYTES
INSTALLED = "var/lib/ganeti-installer/installed"   # first-boot mode has run to the end


class IdentityError(Exception):
    pass


def usage() -> dict:
    """The agent's own CPU time and peak memory, and its children's (tar, mkfs, grub...)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": round(me.ru_utime + me.ru_stime, 2), "max_rss_kib": me.ru_maxrss,
            "children_cpu_s": round(kids.ru_utime + kids.ru_stime, 2),
            "children_max_rss_kib": kids.ru_maxrss}


def local_macs() -> List[str]:
    macs = []
    for name in sorted(os.listdir("/sys/class/net")):
        try:
            with open(f"/sys/class/net/{name}/address", encoding="utf-8") as f:
                macs.append(f.read().strip().lower())
        except OSError:
            continue
    return macs


class ConsoleReporter:
    """A dry run's reporter: each event on the console, none to the master, whose state it
    would move (an "installed" flips the node's PXE entry to local boot)."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def attach(self, target: str) -> None:
        pass

    def event(self, step: str, status: str, message: str = "", index: int = 0,
              total: int = 0, final: bool = False, **extra) -> bool:
        self.log(f"[{index}/{total}] {step}: {status}{' - ' + message if message else ''}")
        return True


class Installer:
    def __init__(self, plan: dict, reporter: Reporter, *, target: str = "/target",
                 dry_run: bool = False, log: Callable[[str], None] = print,
                 list_disks: Optional[Callable[[], List[disks.Disk]]] = None,
                 macs: Optional[Callable[[], List[str]]] = None, first_boot: bool = False):
        self.plan, self.target, self.log = plan, target, log
        self.reporter = ConsoleReporter(log) if dry_run else reporter
        self.first_boot = first_boot
        self.stages = FIRST_BOOT_STAGES if first_boot else STAGES
        if first_boot:
            self.target = "/"
        self.run = Runner(dry_run=dry_run, log=log)
        self.journal = journal.Journal(plan)
        # Looked up at each call, not bound here: tests replace the module's functions.
        self.list_disks = list_disks or (lambda: disks.list_disks())
        self.macs = macs or (lambda: local_macs())
        self.disk: Optional[disks.Disk] = None
        self.storage: Optional[Storage] = None
        self.host_keys: dict = {}

    # -- stages -----------------------------------------------------------------------------

    def identify(self) -> str:
        mac = self.plan["node"]["mac"]
        found = self.macs()
        if mac not in found:
            raise IdentityError(f"this machine has no NIC with the plan's MAC {mac} "
                                f"(found {', '.join(found) or 'none'}): wrong plan for it")
        if self.first_boot:
            self.disk = disks.root_disk(self.list_disks())
            self.log(f"installed system's disk: {self.disk.describe()}")
            return f"installed system's disk: {self.disk.describe()}"
        exclude = disks.boot_medium_disks()
        self.disk = disks.choose(self.list_disks(), self._match(),
                                 self.plan["storage"]["min_disk"], exclude)
        self.log(f"install disk: {self.disk.describe()}")
        return f"install disk: {self.disk.describe()}"

    def _match(self) -> dict:
        disk = next(a for a in self.plan["storage"]["actions"] if a["type"] == "disk")
        return {k: v for k, v in disk["match"].items() if k != "largest"}

    def storage_stage(self) -> None:
        self._hooks("pre-partition")
        self.storage = Storage(self.plan, self._disk(), self.run, self.target,
                               keep_root=lambda dev: journal.root_done(dev, self.plan, self.run))
        report = lambda name: self.reporter.event(f"storage/{name}", "running")  # noqa: E731
        if self.first_boot:
            self.storage.claim_free(report, MIN_VG)
        else:
            self.storage.apply(report)
        self._keep()
        self._hooks("post-partition")

    def os_stage(self) -> None:
        inst = self.plan["install"]
        if inst["method"] == "image":
            # Root's blocks are overwritten: unmount it, and keep the journal and the report
            # outbox (both in memory too) on the new file system once it is mounted again.
            storage = self._storage()
            storage.unmount()
            osinstall.write_rootfs(inst["image"], storage.root_device(), self.run)
            storage.mount()
            self._keep()
        else:
            osinstall.debootstrap(inst["debootstrap"], self.plan["packages"], self.target,
                                  inst.get("proxy"), self.run)
        osinstall.initramfs_policy(self.target, inst["initramfs_modules"], self.run)
        if inst["method"] != "image":
            with Target(self.target, self.run) as t:
                osinstall.build_initramfs(t.chroot)

    def configure_stage(self) -> None:
        with Target(self.target, self.run) as t:
            configure.write_files(self.plan, t)
            configure.debconf(self.plan, t, self._disk().devnode)
            configure.install_packages(self.plan, t)
            configure.write_files(self.plan, t)  # again: packages may ship the same paths
            for path in instancefetch.fetch_all(self.plan, t.root, self.run):
                self.log(f"instance image: fetched {path}")
            servinghost.install(self.plan, t.root, self.run, self.log)
            configure.set_root_password(self.plan, t, self._password_hash())
            configure.machine_id(t)
            self.host_keys = configure.host_keys(t)
            if self.plan["release"]["init"] == "systemd":   # wheezy's sysvinit: not yet
                self._boot_report(t)
            if not self.first_boot:     # debian-installer wrote the fstab of its own layout
                storage = self._storage()
                configure.fstab(t, {k: storage.uuid(rules.format_id(k))
                                    for k in (rules.ROOT, rules.ESP, rules.SWAP)
                                    if rules.format_id(k) in storage.devices})

    def drbd_stage(self) -> str:
        """Load drbd now, with the options just written (an install gets them at its boot)."""
        self.run.change(["modprobe", "drbd"])
        if self.run.dry_run:
            return ""
        params = "/sys/module/drbd/parameters"
        found = {}
        for name in ("minor_count", "usermode_helper"):
            with open(os.path.join(params, name), encoding="utf-8") as f:
                found[name] = f.read().strip()
        return ", ".join(f"{k}={v}" for k, v in found.items())

    def bootloader_stage(self) -> None:
        args = self.plan.get("kernel_args", KERNEL_ARGS)
        efi = os.path.isdir("/sys/firmware/efi")
        with Target(self.target, self.run) as t:
            if self.plan["install"]["method"] == "image":
                bootloader.install_prepared(t, self._disk().devnode, self._storage().root_uuid(),
                                            args, efi)
            else:   # the release's own grub-install and update-grub (wheezy's GRUB too)
                bootloader.install(t, self._disk().devnode, args, efi)
        self._hooks("post-install")

    def finish_stage(self) -> None:
        self._hooks("pre-reboot")
        if not self.host_keys:
            with Target(self.target, self.run) as t:
                self.host_keys = configure.host_keys(t)
        if self.first_boot:
            self.run.files.write(os.path.join(self.target, INSTALLED),
                                 journal.plan_hash(self.plan) + "\n")
        if not self.run.dry_run:
            savedplan.forget(self.target)

    def _password_hash(self) -> Optional[str]:
        """The plan's root password hash, or the master's (asked for with the node's token:
        a plan served over the LAN does not carry it)."""
        root = self.plan["users"]["root"]
        url = root.get("password_hash_url")
        if root.get("password_hash") or not url or self.run.dry_run:
            return root.get("password_hash")
        return fetch_secrets(url, self.plan["report"].get("token")).get("root_password_hash")

    def _keep(self) -> None:
        """Journal, report outbox and plan on the (new) root file system: a power cut from
        here on resumes with this plan, which the master does not hand out twice."""
        if self.run.dry_run:
            return
        self.journal.attach(self.target)
        self.reporter.attach(self.target)
        savedplan.save(self.plan, self.target, self.log)

    def _disk(self) -> disks.Disk:
        if self.disk is None:   # identify runs first, after every restart: a bug if not
            raise RuntimeError("no install disk chosen: the identify stage did not run")
        return self.disk

    def _storage(self) -> Storage:
        if self.storage is None:
            raise RuntimeError("no storage laid out: the storage stage did not run")
        return self.storage

    def _boot_report(self, t: Target) -> None:
        """The boot report's unit and settings on the new system (booted.install)."""
        report = self.plan["report"]
        if self.run.dry_run:    # booted.install writes directly: list what it would write
            for path in (booted.LIB, booted.REPORT_CONF, f"etc/systemd/system/{booted.UNIT_NAME}"):
                self.run.files.write(t.path(path), "")
            return
        booted.install(t.root, report.get("boot_url", report["url"]), report.get("token"))

    def _hooks(self, phase: str) -> None:
        hooks.run_phase(self.plan, phase, self.target, self._hook_report, self.run)

    # -- driver -----------------------------------------------------------------------------

    def _hook_report(self, name: str, output: str) -> None:
        self.reporter.event(f"hook/{name}", "done", output)

    def run_all(self) -> bool:
        total = len(self.stages)
        self.reporter.event("install", "started", f"ganeti-installer agent {__version__}",
                            0, total)
        stage = "identify"
        try:
            for index, stage in enumerate(self.stages, start=1):
                if self.journal.is_done(stage):
                    self.reporter.event(stage, "skipped", "done before a restart", index, total)
                    continue
                self.reporter.event(stage, "started", "", index, total)
                done = getattr(self, f"{stage}_stage" if stage != "identify" else "identify")()
                if stage not in ("identify", "storage", "finish") and not self.run.dry_run:
                    self.journal.mark(stage)
                self.reporter.event(stage, "done", done or "", index, total)
        except Exception as e:  # reported, then re-raised for the exit status
            self.reporter.event(stage, "failed", f"{type(e).__name__}: {e}", final=True)
            raise
        self.reporter.event("install", "installed", "", total, total, final=True,
                            host_keys=self.host_keys, usage=usage())
        return True

    def unmount(self) -> None:
        subprocess.run(["sync"])
        subprocess.run(["umount", "--recursive", self.target], stderr=subprocess.DEVNULL)
