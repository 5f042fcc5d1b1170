"""Run a command under a pty (pexpect) and answer its prompts only when it is safe.

`gnt-node add` runs ssh from the master to the new node, and that ssh asks its questions on
a terminal: we give it one and read every line. The answers:

* ssh's host-key question ("ED25519 key fingerprint is SHA256:...", then "Are you sure you
  want to continue connecting (yes/no/[fingerprint])?") is answered "yes" only when the
  fingerprint is one of the keys we trust for that host (the ones the node reported);
  otherwise "no", and the error names both fingerprints.
* a password or passphrase prompt is never answered: the plan put the right key in place,
  so a prompt means it is missing, and that is the error.
* Ganeti's own confirmation ("... y/[n]/?: ") is answered "y" only when the caller asked for
  exactly that operation (`confirm`), otherwise "n".
* no end within `timeout` seconds is an error with the last output.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pexpect

from installer.cluster.sshkeys import PublicKey
from installer.master.join import running
from installer.master.join.errors import JoinError, JoinKind

FINGERPRINT = re.compile(r"(?P<type>[A-Z0-9-]+) key fingerprint is "
                         r"(?P<fp>SHA256:[A-Za-z0-9+/]+|(?:MD5:)?[0-9a-f]{2}(?::[0-9a-f]{2}){15})")
AUTHENTICITY = re.compile(r"The authenticity of host '(?P<host>[^']*)' can't be established")
QUESTION = r"(Are you sure you want to continue connecting \([^)\r\n]*\)\?|" \
           r"Please type 'yes', 'no' or the fingerprint:) ?\Z"
PASSWORD = r"(?i)([^\r\n]*password[^\r\n]*|Enter passphrase for key[^\r\n]*):[ \t]*\Z"
CONFIRM = r"y/\[n\]/\?: ?\Z"            # lib/cli.py AskUser: "<question>\ny/[n]/?: "
LINE = r"[^\n]*\n"                     # "\r\r\n" happens: \r is dropped later
TAIL = 15                               # lines of output an error message quotes

# What ssh prints when it cannot get anywhere, and what that means for the join.
_UNREACHABLE = re.compile(r"ssh: connect to host (?P<host>\S+) port \d+: (?P<why>Connection "
                          r"refused|No route to host|Connection timed out|Network is "
                          r"unreachable|Operation timed out)|ssh: Could not resolve hostname "
                          r"(?P<name>\S+?):? (?P<rwhy>[^\r\n]*)|Connection closed by "
                          r"(?P<closed>\S+) port")
_HOST_KEY = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
                       r"No (?P<type>\S+) host key is known for (?P<host>\S+)")
_DENIED = re.compile(r"(?P<who>\S+): Permission denied \((?P<methods>[^)]*)\)|"
                     r"Permission denied \((?P<methods2>[^)]*)\)")


@dataclass
class Result:
    status: int | None          # exit status; None when the command died by a signal
    output: str                 # everything it printed, "\r" removed


def drive(argv: Sequence[str], *, trusted: Iterable[PublicKey], log: Callable[[str], None],
          what: str, timeout: float, confirm: bool = False) -> Result:
    """Run argv under a pty until it ends; raise JoinError on an unsafe prompt or timeout.

    `trusted` are the keys whose fingerprints may be accepted at a host-key question, `what`
    names the operation in messages ("gnt-node add node2 on node1"), every output line goes
    to `log`. A non-zero exit is returned, not raised: the caller knows what it means."""
    trusted = list(trusted)
    env = dict(os.environ, TERM="dumb", LC_ALL="C")     # English, no colours or escapes
    child = pexpect.spawn(argv[0], list(argv[1:]), env=env, encoding="utf-8",
                          codec_errors="replace", dimensions=(24, 250), echo=False)
    session = _Session(child, trusted, log, what, confirm)
    try:
        # A signal, not child.terminate(): that reaps, and this thread reaps the child too.
        with running.tracked(lambda: os.kill(child.pid, signal.SIGTERM)):
            deadline = time.monotonic() + timeout
            session.run(deadline, timeout)
            _reap(child, deadline, session, timeout)
    finally:
        if child.isalive():         # a refusal or a timeout: the command goes
            child.terminate(force=True)
        child.close()
    return Result(child.exitstatus, session.text())


def _reap(child, deadline: float, session: _Session, timeout: float) -> None:
    """Wait for the exit status after EOF (the pty closed; the process is ending)."""
    while child.isalive():
        if time.monotonic() > deadline:
            raise JoinError(JoinKind.TIMEOUT, f"{session.what}: closed its output but did not exit "
                            f"within {timeout:.0f} s", output=session.text())
        time.sleep(0.02)


class _Session:
    def __init__(self, child, trusted: list[PublicKey], log, what: str, confirm: bool):
        self.child, self.trusted, self.log, self.what = child, trusted, log, what
        self.confirm = confirm
        self.lines: list[str] = []
        self.offered: tuple[str, str] | None = None     # (type, fingerprint) ssh just showed
        self.host = ""

    def run(self, deadline: float, timeout: float) -> None:
        patterns = [QUESTION, PASSWORD, CONFIRM, LINE, pexpect.EOF, pexpect.TIMEOUT]
        while True:
            left = deadline - time.monotonic()
            i = self.child.expect(patterns, timeout=max(left, 0.01))
            if i == 0:
                self._host_key_question()
            elif i == 1:
                self._password(self.child.after)
            elif i == 2:
                self._confirm()
            elif i == 3:
                self._line(self.child.before + self.child.after)
            elif i == 4:
                self._line(self.child.before)
                return
            else:
                self._line(self.child.before)
                raise JoinError(JoinKind.TIMEOUT, f"{self.what}: no end within {timeout:.0f} s; "
                                f"last output:\n{self.tail()}", output=self.text())

    def _line(self, text: str) -> None:
        for line in text.replace("\r", "").split("\n"):
            if not line.strip():
                continue
            self.lines.append(line)
            self.log(line)
            m = FINGERPRINT.search(line)
            if m:
                self.offered = (m["type"], m["fp"].removeprefix("MD5:"))
            m = AUTHENTICITY.search(line)
            if m:
                self.host = m["host"]

    def _host_key_question(self) -> None:
        self._line(self.child.after)
        offered = self.offered
        if offered is not None and offered in self._fingerprints():
            self.child.sendline("yes")
            self.offered = None
            return
        self.child.sendline("no")
        self._drain()
        raise JoinError(JoinKind.HOST_KEY, self._refusal(offered), output=self.text())

    def _fingerprints(self) -> set[tuple[str, str]]:
        out = set()
        for key in self.trusted:
            out.add((key.printed_type, key.fingerprint()))
            out.add((key.printed_type, key.md5()))
        return out

    def _refusal(self, offered: tuple[str, str] | None) -> str:
        host = self.host or "the host"
        if offered is None:
            return (f"{self.what}: ssh asked to accept the key of {host} without showing its "
                    "fingerprint: refused")
        kind, fp = offered
        md5 = not fp.startswith("SHA256:")
        same = [k.md5() if md5 else k.fingerprint() for k in self.trusted
                if k.printed_type == kind]
        known = ", ".join(same) if same else \
            f"none of type {kind} (it reported " + \
            ", ".join(k.describe() for k in self.trusted) + ")"
        return (f"{self.what}: {host} showed the host key {kind} {fp}, which is not the key "
                f"the node reported ({kind} {known}): refused; if the node was reinstalled "
                "its new report replaces the old key, otherwise check what answers on its "
                "address")

    def _password(self, prompt: str) -> None:
        prompt = prompt.strip()
        self._line(prompt + "\n")
        raise JoinError(JoinKind.PASSWORD, f"{self.what}: ssh asked for a password ({prompt!r}); "
                        "none is ever typed: the key that should let it in is missing from "
                        "root's /root/.ssh/authorized_keys on the host it logs in to (the "
                        "plan puts serve's key there, the join the master's)",
                        output=self.text())

    def _confirm(self) -> None:
        self._line(self.child.before + self.child.after + "\n")
        if self.confirm:
            self.child.sendline("y")
            return
        self.child.sendline("n")
        self._drain()
        raise JoinError(JoinKind.FAILED, f"{self.what}: Ganeti asked for a confirmation that was "
                        f"not part of this operation:\n{self.tail()}", output=self.text())

    def _drain(self) -> None:
        """Log what the command says after a refusal, briefly."""
        try:
            self.child.expect(pexpect.EOF, timeout=10)
            self._line(self.child.before)
        except pexpect.TIMEOUT:
            self._line(self.child.before)

    def text(self) -> str:
        return "\n".join(self.lines)

    def tail(self) -> str:
        return "\n".join(self.lines[-TAIL:])


def ssh_failure(output: str) -> tuple[JoinKind, str] | None:
    """(kind, message) when ssh's own words say why it got nowhere; None otherwise."""
    m = _HOST_KEY.search(output)
    if m:
        if m["type"]:
            return (JoinKind.HOST_KEY, f"no {m['type']} host key is pinned for {m['host']}: its "
                    "reported keys were not written to known_hosts")
        return (JoinKind.HOST_KEY, "the host's SSH key is not the one pinned for it (Host key "
                "verification failed): a reinstalled node reports its new key first")
    m = _DENIED.search(output)
    if m:
        who = m["who"] or "the host"
        methods = m["methods"] or m["methods2"]
        return (JoinKind.PASSWORD, f"{who} refused the SSH key (Permission denied ({methods})): "
                "the key is missing from its /root/.ssh/authorized_keys, and no password is "
                "ever typed")
    m = _UNREACHABLE.search(output)
    if m:
        if m["name"]:
            return (JoinKind.UNREACHABLE, f"cannot resolve {m['name']}: {m['rwhy'].strip()}")
        if m["closed"]:
            return (JoinKind.UNREACHABLE, f"{m['closed']} closed the SSH connection before login")
        return (JoinKind.UNREACHABLE, f"{m['host']} is unreachable over SSH: {m['why']}")
    return None


def tail(output: str, lines: int = TAIL) -> str:
    return "\n".join(output.splitlines()[-lines:])
