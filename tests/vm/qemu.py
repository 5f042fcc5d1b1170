"""QEMU guests for the VM tests: TCG, serial console read with pexpect, qcow2 disks.

Every guest logs its serial console to <workdir>/<name>.serial.log, which a failing test
points at. Guests are software-emulated (no KVM here): timeouts are generous.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

QEMU = "qemu-system-x86_64"
# OVMF's code (read-only) and the empty variable store a new VM's NVRAM starts as: a pair.
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# What a guest prints once it runs userspace: the kernel names its init (the netboot image),
# or, for an installed system booted `quiet`, systemd's banner or a login prompt.
USERSPACE = re.compile(rb"Run \S+ as init process|Welcome to |\slogin: ")


class EmulatorReset(UserWarning):
    """QEMU ended a guest before its kernel ran init, and the VM was powered on again."""


def make_disk(path: Path, size: str = "40G") -> Path:
    """A sparse qcow2 disk: a 40 GiB disk costs only what the guest writes."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def _pxe_nic(nic: str, index: int) -> list[str]:
    """A `-nic` option as -netdev plus a -device with bootindex=0: -nic takes no bootindex."""
    backend, *options = nic.split(",")
    device = [o for o in options if o.split("=")[0] in ("model", "mac")]
    model = next(o.split("=", 1)[1] for o in device if o.startswith("model="))
    mac = [o for o in device if o.startswith("mac=")]
    netdev = [o for o in options if o not in device]
    return ["-netdev", ",".join([backend, f"id=pxe{index}"] + netdev),
            "-device", ",".join([model, f"netdev=pxe{index}", "bootindex=0"] + mac)]


@dataclass
class VM:
    name: str
    workdir: Path
    memory: int = 1024
    cpus: int = 1
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    disks: list[Path] = field(default_factory=list)
    usb_disks: list[Path] = field(default_factory=list)     # removable: USB sticks
    stick: Path | None = None   # a raw install stick on USB, booted first (bootindex 0;
                                # with nvram, as its firmware orders it)
    extra: list[str] = field(default_factory=list)          # more QEMU arguments, as given
    nics: list[str] = field(default_factory=lambda: ["user,model=virtio-net-pci"])
    uefi: bool = False
    # UEFI with this file as its variable store, kept across boots as a PC's NVRAM; no
    # device gets a bootindex: OVMF would rewrite BootOrder to QEMU's order at every boot,
    # and the test is that the PC boots by the BootOrder the agent left.
    nvram: Path | None = None
    pxe: bool = False           # the first NIC boots first (its iPXE ROM), then the disks
    rtc: str | None = None      # the hardware clock's time at power-on (a flat CMOS battery)
    child: pexpect.spawn | None = None
    restarted: bool = False     # powered on again after an emulator reset (_power_on_again)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.serial.log"

    @property
    def monitor_path(self) -> Path:
        return self.workdir / f"{self.name}.monitor"

    @property
    def qemu_log_path(self) -> Path:
        """QEMU's own log of CPU resets: it says "Triple fault" when the guest caused one."""
        return self.workdir / f"{self.name}.qemu.log"

    def command(self) -> list[str]:
        cmd = [QEMU, "-name", self.name, "-machine", "q35,accel=tcg", "-cpu", "max",
               "-m", str(self.memory), "-smp", str(self.cpus), "-display", "none",
               "-serial", "stdio", "-no-reboot", "-d", "cpu_reset,guest_errors",
               "-D", str(self.qemu_log_path),
               "-monitor", f"unix:{self.monitor_path},server,nowait"]
        if self.kernel:
            cmd += ["-kernel", self.kernel, "-append", self.append or ""]
            cmd += ["-initrd", self.initrd] if self.initrd else []
        if self.rtc:
            cmd += ["-rtc", f"base={self.rtc}"]
        if self.nvram:
            if not self.nvram.exists():     # a new PC: the firmware's empty store
                shutil.copyfile(OVMF_VARS, self.nvram)
            cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,file={self.nvram}"]
        elif self.uefi:
            cmd += ["-bios", "/usr/share/ovmf/OVMF.fd"]
        for i, disk in enumerate(self.disks):
            index = "" if self.nvram else f",bootindex={i + 1}"
            cmd += ["-drive", f"file={disk},if=none,id=disk{i},format=qcow2,cache=unsafe",
                    "-device", f"virtio-blk-pci,drive=disk{i},serial=disk{i}{index}"]
        if self.usb_disks or self.stick:
            cmd += ["-device", "qemu-xhci,id=xhci"]
        if self.stick:
            index = "" if self.nvram else ",bootindex=0"
            cmd += ["-drive", f"if=none,id=stick,format=raw,file={self.stick}",
                    "-device", f"usb-storage,bus=xhci.0,drive=stick,removable=on{index}"]
        for i, disk in enumerate(self.usb_disks):
            cmd += ["-drive", f"file={disk},if=none,id=usb{i},format=qcow2,cache=unsafe",
                    "-device", f"usb-storage,bus=xhci.0,drive=usb{i},removable=on,"
                               f"serial=stick{i}"]
        for i, nic in enumerate(self.nics):
            pxe = self.pxe and i == 0 and not self.nvram
            cmd += _pxe_nic(nic, i) if pxe else ["-nic", nic]
        return cmd + self.extra

    def start(self) -> VM:
        if not shutil.which(QEMU):
            raise RuntimeError(f"{QEMU} is missing: run ./build.sh --deps-only")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = self.command()
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        self._run_starts_at = log.tell()
        self.child = pexpect.spawn(cmd[0], cmd[1:], timeout=600, logfile=log,
                                   env=dict(os.environ, TERM="dumb"))
        return self

    def expect(self, pattern, timeout: float = 300) -> str:
        """Wait for a regex on the serial console; fail with the log's tail."""
        while True:
            try:
                self.child.expect(pattern, timeout=timeout)
                break
            except pexpect.TIMEOUT:
                self._fail(f"timed out waiting for {pattern!r}")
            except pexpect.EOF:
                self._power_on_again(f"waiting for {pattern!r}")
        return self.child.after.decode(errors="replace") if isinstance(
            self.child.after, bytes) else str(self.child.after)

    def pump(self, seconds: float) -> None:
        """Read the console for `seconds`: a guest whose serial output nobody reads stalls."""
        try:
            self.child.expect([pexpect.TIMEOUT], timeout=seconds)
        except pexpect.EOF:
            self._power_on_again("while running")

    def _power_on_again(self, doing: str) -> None:
        """QEMU 7.2's TCG now and then resets a guest early in its kernel's boot (CI saw one
        at PCI enumeration, silent on the console). A real PC would just be powered on again,
        and so is this VM, once, if it ended before its kernel ran init: nothing of ours had
        run yet. An end after that is the guest's doing and fails the test."""
        why = self.exit_reason()
        if self.restarted or self._reached_userspace():
            self._fail(f"{why} {doing}")
        self.restarted = True
        note = f"{self.name}: {why} before its kernel ran init; powering it on again"
        warnings.warn(note, EmulatorReset, stacklevel=2)
        if self.qemu_log_path.exists():     # QEMU truncates its log: keep the first run's
            self.qemu_log_path.rename(self.qemu_log_path.with_suffix(".log.1"))
        self.start()

    def _reached_userspace(self) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(self._run_starts_at)
            text = log.read()
        return USERSPACE.search(text) is not None

    def _fail(self, what: str) -> None:
        raise AssertionError(f"{self.name}: {what}; serial log {self.log_path}:\n"
                             f"{self.tail()}") from None

    def exit_reason(self) -> str:
        """Why QEMU ended: a signal, or its status and the reset it logged (-no-reboot)."""
        self.child.close(force=False)
        if self.child.signalstatus is not None:
            return f"QEMU was killed by signal {self.child.signalstatus}"
        path = self.qemu_log_path
        fault = path.exists() and "Triple fault" in path.read_text(errors="replace")
        return (f"the VM exited (QEMU status {self.child.exitstatus}, "
                f"{'a' if fault else 'no'} triple fault in {path.name})")

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def monitor(self, command: str) -> str:
        """A command on the QEMU monitor (`quit` is a power cut); what it printed."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.monitor_path))
            s.settimeout(30)
            reply = b""
            while b"(qemu)" not in reply:       # the greeting, then the first prompt
                reply += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            reply = b""
            try:
                while b"(qemu)" not in reply.split(command.encode(), 1)[-1]:
                    chunk = s.recv(4096)
                    if not chunk:
                        break               # `quit` closes the monitor
                    reply += chunk
            except (TimeoutError, ConnectionResetError):
                pass
            return reply.decode(errors="replace")

    def stop(self) -> None:
        if self.child and self.child.isalive():
            self.child.terminate(force=True)
        self.child = None
