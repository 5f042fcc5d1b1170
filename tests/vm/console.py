"""Working on a booted node's serial console as an admin would: log in, run a command."""

from __future__ import annotations

from .qemu import VM

ROOT_PASSWORD = "ganeti"      # examples/cluster.toml carries the hash of this password


def login(vm: VM, hostname: str, password: str = ROOT_PASSWORD) -> None:
    vm.expect(f"{hostname} login:", timeout=600)
    vm.child.sendline("root")
    vm.expect("Password:", timeout=60)
    vm.child.sendline(password)
    vm.expect(rf"root@{hostname}:~# ", timeout=120)
    # The quotes keep the echoed command line from matching the prompt. dmesg -n 1: kernel
    # messages (drbd's under TCG load) would land amid a command's output on this console.
    vm.child.sendline("stty -echo; dmesg -n 1; export SYSTEMD_PAGER= PAGER=cat PS1='G''I# '")
    vm.expect("GI# ", timeout=30)


def run(vm: VM, command: str, timeout: float = 120) -> str:
    """Run a shell command on the serial console; its output, between two markers."""
    vm.child.sendline(f"echo ==BEGIN==; {command}; echo ==END==")
    vm.expect(r"==BEGIN==[\r\n]+", timeout=timeout)
    vm.expect(r"==END==", timeout=timeout)
    return vm.child.before.decode(errors="replace").replace("\r", "")


def status(vm: VM, command: str, timeout: float = 120) -> int:
    """The exit status of a shell command on the console."""
    out = run(vm, f"{command} >/dev/null 2>&1; echo rc=$?", timeout)
    return int(out.strip().rsplit("rc=", 1)[1].split()[0])
