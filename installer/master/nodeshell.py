"""How the serving host runs a command on a node for the ISOs: SSH as root with the node's
pinned key on a real cluster, `ip netns exec` in the network-namespace tests. Both are an
argv prefix, so every step (and its stdin streaming) is the same code either way.

    shell = SshShell("node2", "10.0.0.12", remote)      # or NetnsShell("node2", ip, "ns2")
    done = shell.run(["sha256sum", "--", "/iso/.incoming/x.iso"], timeout=600)
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from installer.master.isos import ROOT, IsoError
from installer.master.join import running
from installer.master.join.remote import Remote


@dataclass(frozen=True)
class Shell:
    """A node: its name (for messages), its management address (multicast replies come
    from it) and its ISO directory."""
    node: str
    address: str
    root: str = ROOT

    def argv(self, command: Sequence[str], *, tty: bool = False) -> list[str]:
        raise NotImplementedError

    def unreachable(self, returncode: int, stderr: str) -> bool:
        """Whether a failure was the transport's, not the command's."""
        return False

    def run(self, command: Sequence[str], *, stdin: IO[bytes] | None = None,
            timeout: float = 120, what: str = "") -> subprocess.CompletedProcess:
        """The command's result (text); IsoError when it cannot run, times out or fails."""
        argv = self.argv(command)
        label = what or shlex.join(command)
        try:
            with subprocess.Popen(argv, stdin=stdin if stdin is not None else
                                  subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) as proc, \
                    running.tracked(proc.terminate):
                try:
                    out, err = proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                    raise IsoError(f"{self.node}: {label}: no end within {timeout:.0f} s") \
                        from None
        except OSError as e:
            raise IsoError(f"{self.node}: cannot run {argv[0]}: {e.strerror}") from None
        done = subprocess.CompletedProcess(argv, proc.returncode, _text(out), _text(err))
        if done.returncode != 0:
            if self.unreachable(done.returncode, done.stderr):
                raise IsoError(f"{self.node} ({self.address}) is unreachable: "
                               f"{_tail(done.stderr)}; is it up? `ganeti-installer status` "
                               "shows its state")
            raise IsoError(f"{self.node}: {label} exited {done.returncode}: "
                           f"{_tail(done.stderr + done.stdout) or 'no message'}")
        return done

    def spawn(self, command: Sequence[str], log: IO[bytes]) -> subprocess.Popen:
        """A long-running command (a receiver) whose end ends it on the node as well."""
        return subprocess.Popen(self.argv(command, tty=True), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)


SSH_FAILURES = ("Connection refused", "Connection timed out", "No route to host",
                "Host key verification", "Permission denied", "Could not resolve",
                "Connection closed", "Network is unreachable")


@dataclass(frozen=True)
class SshShell(Shell):
    remote: Remote | None = None

    def argv(self, command: Sequence[str], *, tty: bool = False) -> list[str]:
        # A terminal for a receiver: when serve ends ssh, sshd hangs the terminal up and the
        # receiver ends with it, instead of lingering on the node.
        assert self.remote is not None
        return self.remote.argv(self.address, command, tty=tty)

    def unreachable(self, returncode: int, stderr: str) -> bool:
        # 255 is ssh's own failure: none of the commands run on a node exits 255.
        return returncode == 255 or any(s in stderr for s in SSH_FAILURES)


@dataclass(frozen=True)
class NetnsShell(Shell):
    netns: str = ""

    def argv(self, command: Sequence[str], *, tty: bool = False) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *command]

    def unreachable(self, returncode: int, stderr: str) -> bool:
        return "Cannot open network namespace" in stderr


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])
