"""dnsmasq as the child of `serve`: DHCP (or proxy DHCP) and TFTP on the provisioning LAN.

It runs in the foreground with the configuration `render` chose (OUTDIR/dnsmasq/mode), logs
to a pipe serve reads, and counts as up once it names its TFTP root (every socket is bound
by then). dnsmasq exits at once on a bad start: its message becomes an error that names the
cause and the fix, and nothing is left running. A dnsmasq left by a serve killed with SIGKILL
(it would go on answering with the old configuration beside the new one) is stopped first.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from collections.abc import Callable

from installer.cluster import files, layout
from installer.cluster.errors import InstallerError

READY = "TFTP root is"
START_TIMEOUT = 15.0
# A DHCP or PXE request in dnsmasq's log (log-dhcp): "DHCPDISCOVER(eth0) 52:54:00:..".
REQUEST = re.compile(r"\b(?:DHCP[A-Z]+|PXE)\([^)]*\)\s+(?:[0-9.]+\s+)?"
                     r"([0-9a-f]{2}(?::[0-9a-f]{2}){5})\b")


class Dnsmasq:
    def __init__(self, outdir: str, state_dir: str, interface: str, *,
                 cluster_file: str = "the cluster file",
                 on_line: Callable[[str], None] = print):
        self.conf = layout.active_dnsmasq_config(outdir)
        self.state_dir, self.interface, self.cluster_file = state_dir, interface, cluster_file
        self.on_line = on_line
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._restarting = asyncio.Lock()
        self.loaded: bytes | None = None      # the configuration it started with

    def argv(self) -> list[str]:
        binary = shutil.which("dnsmasq")
        if binary is None:
            raise InstallerError("dnsmasq is missing: install the Debian package dnsmasq-base "
                                 "(apt-get install dnsmasq-base), or run serve with --no-dhcp "
                                 "and let another DHCP/TFTP server boot the nodes")
        return [binary, "--keep-in-foreground", f"--conf-file={self.conf}", "--log-facility=-",
                f"--dhcp-leasefile={os.path.join(self.state_dir, 'dnsmasq.leases')}",
                f"--pid-file={self.pid_file}"]

    @property
    def pid_file(self) -> str:
        return os.path.join(self.state_dir, "dnsmasq.pid")

    async def start(self) -> None:
        """Start dnsmasq and wait until it serves; InstallerError (nothing running) if not."""
        await self._stop_leftover()
        self.loaded = files.read_bytes(self.conf)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        seen: list[str] = []
        try:
            await asyncio.wait_for(self._until_ready(seen), START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise InstallerError(f"dnsmasq did not come up in {START_TIMEOUT:.0f} s: "
                                 f"{' | '.join(seen[-5:]) or 'no output'}") from None
        except InstallerError:
            await self.stop()
            raise
        self._reader = asyncio.create_task(self._follow())

    async def _stop_leftover(self) -> None:
        """A serve killed with SIGKILL leaves its dnsmasq holding the DHCP and TFTP ports:
        stop it, but only a dnsmasq started for this state directory (its --pid-file)."""
        pid = leftover_pid(self.pid_file)
        if pid is None:
            return
        self.on_line(f"stopping dnsmasq (pid {pid}) left running by an earlier serve")
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                await asyncio.sleep(0.1)
                os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
        except ProcessLookupError:
            pass

    def _pipe(self) -> asyncio.StreamReader:
        assert self.proc is not None and self.proc.stdout is not None, "dnsmasq not started"
        return self.proc.stdout

    async def _until_ready(self, seen: list[str]) -> None:
        while True:
            line = await self._pipe().readline()
            if not line:
                code = await self.wait()
                raise InstallerError(self.explain(seen, code))
            text = line.decode(errors="replace").strip()
            if text:
                seen.append(text)
                self.on_line(text)
            if READY in text:
                return

    async def _follow(self) -> None:
        while line := await self._pipe().readline():
            self.on_line(line.decode(errors="replace").rstrip())

    def explain(self, lines: list[str], code: int) -> str:
        """dnsmasq's last words as the cause and the fix."""
        said = next((ln for ln in reversed(lines) if ln.startswith("dnsmasq")), "") or \
            (lines[-1] if lines else f"exit status {code}")
        if "unknown interface" in said or "No such device" in said:
            return (f"dnsmasq cannot start: there is no interface '{self.interface}' on this "
                    f"host ({said}): set network.provisioning.interface in "
                    f"{self.cluster_file} to the interface on the nodes' LAN (ip link lists "
                    "them) and run ganeti-installer render, or run serve with --no-dhcp")
        if "Address already in use" in said:
            return (f"dnsmasq cannot start: another DHCP or TFTP server holds its port on "
                    f"{self.interface} ({said}): stop it (ss -ulpn shows which, on ports "
                    "67, 69 and 4011), or run serve with --no-dhcp to keep that server")
        if "Permission denied" in said or "Operation not permitted" in said:
            return f"dnsmasq cannot start ({said}): run serve as root"
        if "TFTP directory" in said or "cannot access directory" in said:
            return (f"dnsmasq cannot read the TFTP root ({said}): keep OUTDIR where every "
                    "parent directory is world-searchable (chmod o+x), and run render")
        return f"dnsmasq exited with status {code}: {said}; the configuration is {self.conf}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait(self) -> int:
        assert self.proc is not None, "dnsmasq not started"
        return await self.proc.wait()

    def stale(self) -> bool:
        """Whether its configuration changed since it started (render wrote a new MAC)."""
        return files.read_bytes(self.conf) != self.loaded

    async def restart(self) -> None:
        """Stop and start again: dnsmasq reads its dhcp-host lines (one per node MAC) only
        at start. exited() does not take this for dnsmasq dying; a start that fails is."""
        async with self._restarting:
            await self.stop()
            await self.start()

    async def exited(self) -> int:
        """Until dnsmasq exits on its own (not for a restart): its exit status."""
        while True:
            proc = self.proc
            assert proc is not None, "dnsmasq not started"
            code = await proc.wait()
            async with self._restarting:
                if self.proc is proc:
                    return code

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; waits until it is gone."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            except ProcessLookupError:
                pass
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def leftover_pid(pid_file: str) -> int | None:
    """The pid in PID_FILE if that process is a dnsmasq writing PID_FILE, else None."""
    try:
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    ours = os.path.basename(argv[0]) == "dnsmasq" and f"--pid-file={pid_file}" in argv
    return pid if ours else None
