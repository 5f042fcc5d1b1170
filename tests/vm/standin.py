"""A stand-in for the master's HTTP side in VM tests, on loopback or in a test's namespace.

It serves a build's OUTDIR (plans, images) and records the agent's reports. Two places:
- on the host's loopback, for guests on QEMU's user network (which maps 10.0.2.2 in the guest
  to the host's loopback): plans are served with the provisioning URL rewritten to point here;
- in a namespace host of the test switch (tests/vm/switch.py), at the cluster's own
  provisioning address and port, as a child process (`python -m tests.vm.standin`) that
  appends each report to a JSON-lines file.
The real master (`serve`) has its own tests.

On loopback it can also go away as a killed `serve` would (`outage`): at a chosen request,
or after so many bytes of a file, it stops listening and cuts every open connection, then
comes back on the same port some seconds later. Files are served with ranges and an ETag,
as `serve` serves them.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

GUEST_HOST = "10.0.2.2"
PIECE = 1 << 16


@dataclass
class Outage:
    """The master goes away when a GET's path ends with `path` (after `after_bytes` of its
    answer, or before answering), and is back `seconds` later. Each happens once."""
    path: str
    seconds: float
    after_bytes: int | None = None
    down: float | None = None       # monotonic times, once it happened
    up: float | None = None
    sent: int = 0                   # bytes of the answer sent when it went away


class StandinMaster:
    def __init__(self, outdir: Path, base_url: str, host=None, reports: Path | None = None,
                 port: int = 0):
        self.outdir, self.base_url, self.host = Path(outdir), base_url, host
        self._reports: list[tuple[str, dict]] = []
        self.reports_file = reports
        self.proc: subprocess.Popen | None = None
        self.server: http.server.ThreadingHTTPServer | None = None
        self.outages: list[Outage] = []
        self.served: list[tuple[str, str | None, int]] = []    # (path, Range, bytes sent)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        if host is None and reports is None:      # in this process, on loopback
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler())
            self.port = self.server.server_address[1]
            self.url = f"http://{GUEST_HOST}:{self.port}"
        else:
            self.url = base_url.rstrip("/")

    def plan(self, name: str) -> dict:
        text = (self.outdir / "plans" / f"{name}.json").read_text()
        return json.loads(text.replace(self.base_url, self.url))

    def node_by_mac(self, dashed: str) -> str | None:
        """The node whose plan has this MAC (as serve's /api/v1/plans/<dashed-mac>)."""
        mac = dashed.lower().replace("-", ":")
        for path in sorted((self.outdir / "plans").glob("*.json")):
            if json.loads(path.read_text())["node"]["mac"] == mac:
                return path.stem
        return None

    @property
    def reports(self) -> list[tuple[str, dict]]:
        if self.reports_file is None:
            return list(self._reports)
        if not self.reports_file.exists():
            return []
        return [tuple(json.loads(line)) for line in
                self.reports_file.read_text().splitlines() if line.strip()]

    def events(self, node: str) -> list[tuple[str, str]]:
        return [(r["step"], r["status"]) for path, r in self.reports
                if path == f"/api/v1/nodes/{node}/events"]

    def wait_for(self, node: str, event: tuple[str, str], timeout: float = 60,
                 since: int = 0) -> bool:
        """Wait for a report (among those after the first `since`); False on timeout."""
        deadline = time.monotonic() + timeout
        while event not in self.events(node)[since:]:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def __enter__(self) -> StandinMaster:
        if self.server is not None:
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            return self
        where = urlsplit(self.url)
        repo = Path(__file__).resolve().parents[2]
        self.proc = self.host.spawn(
            [sys.executable, "-m", "tests.vm.standin", str(self.outdir), "--listen",
             f"{where.hostname}:{where.port}", "--reports", str(self.reports_file),
             "--all-addresses"],
            cwd=repo, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the stand-in master did not start in {self.host.netns}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        else:
            if self._timer is not None:
                self._timer.cancel()
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
                self.server = None

    # -- going away, as a killed `serve` does (in this process only) --------------------------

    def outage(self, path: str, seconds: float, after_bytes: int | None = None) -> Outage:
        out = Outage(path, seconds, after_bytes)
        self.outages.append(out)
        return out

    def _due(self, path: str, sent: int) -> Outage | None:
        with self._lock:
            for out in self.outages:
                if out.down is None and path.endswith(out.path) and \
                        sent >= (out.after_bytes or 0):
                    out.down, out.sent = time.monotonic(), sent
                    return out
        return None

    def _go_away(self, out: Outage) -> None:
        """Stop listening, cut every connection (this one too), listen again later."""
        server, self.server = self.server, None
        server.shutdown()
        server.server_close()
        with self._lock:
            for conn in list(self._open):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._timer = threading.Timer(out.seconds, self._come_back, args=(out,))
        self._timer.start()

    def _come_back(self, out: Outage) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        out.up = time.monotonic()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # A held report is not answered while `hold` names it: the agent waits on its POST, so a
    # test can cut the power at an exact point of the install.
    def hold(self, step: str, status: str) -> None:
        self._hold_file().write_text(f"{step} {status}\n")

    def release(self) -> None:
        self._hold_file().unlink(missing_ok=True)

    def _hold_file(self) -> Path:
        assert self.reports_file is not None, "hold needs the stand-in in a namespace"
        return self.reports_file.with_suffix(".hold")

    def _held(self, report: dict, timeout: float = 600) -> None:
        if self.reports_file is None:
            return
        deadline = time.monotonic() + timeout
        wanted = f"{report.get('step')} {report.get('status')}"
        while time.monotonic() < deadline:
            try:
                held = self._hold_file().read_text().splitlines()
            except OSError:
                return
            if wanted not in held:
                return
            time.sleep(0.2)

    def _record(self, path: str, report: dict) -> None:
        if self.reports_file is None:
            self._reports.append((path, report))
            return
        with open(self.reports_file, "a", encoding="utf-8") as f:
            f.write(json.dumps([path, report]) + "\n")

    def _handler(self):
        master = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == "plans" and parts[1].endswith(".json"):
                    return self._send(json.dumps(master.plan(parts[1][:-5])).encode())
                if parts[:3] == ["api", "v1", "plans"] and len(parts) == 4:
                    name = master.node_by_mac(parts[3])
                    if name is None:
                        return self.send_error(404)
                    return self._send(json.dumps(master.plan(name)).encode())
                path = (master.outdir / self.path.lstrip("/")).resolve()
                if master.outdir.resolve() not in path.parents or not path.is_file():
                    return self.send_error(404)
                self._send_file(path)

            def _send_file(self, path: Path):
                """The file, or its tail for `Range: bytes=N-`, with an ETag as serve's."""
                st = path.stat()
                wanted = self.headers.get("Range")
                match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
                start = int(match.group(1)) if match and int(match.group(1)) < st.st_size else 0
                out = master._due(self.path, 0)
                if out is not None:
                    return master._go_away(out)
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{st.st_size - 1}/{st.st_size}")
                self.send_header("ETag", f'"{st.st_mtime_ns:x}-{st.st_size:x}"')
                self.send_header("Content-Length", str(st.st_size - start))
                self.end_headers()
                sent = 0
                with open(path, "rb") as f:
                    f.seek(start)
                    while piece := f.read(PIECE):
                        try:
                            self.wfile.write(piece)
                        except OSError:
                            break
                        sent += len(piece)
                        out = master._due(self.path, sent)
                        if out is not None:
                            master._go_away(out)
                            break
                master.served.append((self.path, wanted, sent))

            def setup(self):
                super().setup()
                with master._lock:
                    master._open.add(self.connection)

            def finish(self):
                with master._lock:
                    master._open.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                report = json.loads(body or b"{}")
                master._record(self.path, report)
                master._held(report)
                self._send(b"{}")

            def _send(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler


def main() -> None:
    """Serve OUTDIR at --listen (inside a test's namespace), reports to --reports."""
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--listen", required=True)
    p.add_argument("--reports", required=True)
    p.add_argument("--all-addresses", action="store_true",
                   help="listen on every address of the namespace (installed nodes report "
                        "over VLAN 100), not only --listen's")
    args = p.parse_args()
    address, port = args.listen.rsplit(":", 1)
    base = f"http://{address}:{port}"
    master = StandinMaster(Path(args.outdir), base, reports=Path(args.reports))
    bind = "0.0.0.0" if args.all_addresses else address
    server = http.server.ThreadingHTTPServer((bind, int(port)), master._handler())
    print("ready", flush=True)
    os.environ.pop("http_proxy", None)
    server.serve_forever()


if __name__ == "__main__":
    main()
