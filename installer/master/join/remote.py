"""Commands on a node as root over SSH from the serving host, with the node's key pinned.

Every connection logs in with serve's own key only (IdentitiesOnly: an agent or ~/.ssh of
whoever runs serve plays no part), checks the host against serve's own known_hosts strictly
(the keys the node reported), and never prompts itself (BatchMode). The remote command is an
argv list quoted with shlex, since ssh hands the remote shell one string.

`ssh` is the argv prefix of the client, so tests (and odd setups) can point it elsewhere.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from installer.cluster.sshkeys import PublicKey, host_patterns
from installer.master.join import prompts, running
from installer.master.join.errors import JoinError, JoinKind


@dataclass(frozen=True)
class Remote:
    key: str                                # serve's private key (statedir.key_path)
    known_hosts: str                        # serve's known_hosts (sshkeys.known_hosts_path)
    port: int = 22
    ssh: tuple[str, ...] = ("ssh",)
    connect_timeout: int = 15

    def argv(self, host: str, command: Sequence[str], *, tty: bool = False) -> list[str]:
        """The ssh command line that runs `command` as root on `host`."""
        host_patterns([host])                       # validates the name or address
        if not os.path.isfile(self.key):
            raise JoinError(JoinKind.FAILED, f"serve's SSH key {self.key} is missing: "
                            "`serve` makes it at its start, and the plans carry its public "
                            "half")
        options = {
            "BatchMode": "yes",                     # ssh itself never asks anything
            "StrictHostKeyChecking": "yes",         # only keys the nodes reported
            "UserKnownHostsFile": self.known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "HashKnownHosts": "no",
            "CheckHostIP": "no",                    # the pin already names the address
            "IdentitiesOnly": "yes",
            "IdentityFile": self.key,
            "IdentityAgent": "none",
            "ConnectTimeout": str(self.connect_timeout),
            "ServerAliveInterval": "15",            # a node that dies mid-command ends it
            "ServerAliveCountMax": "4",
            "EscapeChar": "none",
            "LogLevel": "ERROR",                    # errors yes, "Connection closed" no
            "Port": str(self.port),
            "User": "root",
        }
        argv = list(self.ssh)
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        if tty:
            argv.append("-tt")          # a pty on the far side: the prompts of the
        return argv + ["--", host, shlex.join(command)]     # commands it runs show up

    def run(self, host: str, command: Sequence[str], *, input: str | None = None,
            timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """Run a short command; SSH failures (and a non-zero exit with `check`) raise."""
        argv = self.argv(host, command)
        what = f"`{shlex.join(command)}` on {host}"
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL  # not serve's
        with subprocess.Popen(argv, stdin=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as proc, running.tracked(proc.terminate):
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                raise JoinError(JoinKind.TIMEOUT, f"{what}: no end within {timeout:.0f} s",
                                output=_text(out) + _text(err)) from None
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if done.returncode == 255:      # ssh's own failure (none of our commands exit 255)
            kind, why = prompts.ssh_failure(done.stderr) or \
                (JoinKind.FAILED, f"ssh failed: {prompts.tail(done.stderr) or 'no message'}")
            raise JoinError(kind, f"{what}: {why}", output=done.stderr)
        if check and done.returncode != 0:
            raise JoinError(JoinKind.FAILED, f"{what} exited {done.returncode}:\n"
                            f"{prompts.tail(done.stderr + done.stdout)}",
                            output=done.stdout + done.stderr)
        return done

    def converse(self, host: str, command: Sequence[str], *, trusted: Iterable[PublicKey],
                 log: Callable[[str], None], timeout: float,
                 confirm: bool = False) -> prompts.Result:
        """Run a command with a terminal, answering its prompts as join.prompts does."""
        argv = self.argv(host, command, tty=True)
        what = f"`{shlex.join(command)}` on {host}"
        log(f"+ {shlex.join(command)}   (on {host})")
        result = prompts.drive(argv, trusted=trusted, log=log, what=what, timeout=timeout,
                               confirm=confirm)
        if result.status == 255:
            failure = prompts.ssh_failure(result.output)
            if failure:
                raise JoinError(failure[0], f"{what}: {failure[1]}", output=result.output)
        return result


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
