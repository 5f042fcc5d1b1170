"""A stand-in for the master's HTTP side in VM tests, on loopback only.

It serves a build's OUTDIR (plans, images) and records the agent's reports. QEMU's user
network maps 10.0.2.2 in the guest to the host's loopback, so plans are served with the
cluster's provisioning URL rewritten to point here. The real master (`serve`) has its own tests.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

GUEST_HOST = "10.0.2.2"


class StandinMaster:
    def __init__(self, outdir: Path, base_url: str):
        self.outdir, self.base_url = Path(outdir), base_url
        self.reports: list[tuple[str, dict]] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://{GUEST_HOST}:{self.server.server_address[1]}"

    def plan(self, name: str) -> dict:
        text = (self.outdir / "plans" / f"{name}.json").read_text()
        return json.loads(text.replace(self.base_url, self.url))

    def events(self, node: str) -> list[tuple[str, str]]:
        return [(r["step"], r["status"]) for path, r in self.reports
                if path == f"/api/v1/nodes/{node}/events"]

    def __enter__(self) -> "StandinMaster":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        master = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == "plans" and parts[1].endswith(".json"):
                    return self._send(json.dumps(master.plan(parts[1][:-5])).encode())
                path = (master.outdir / self.path.lstrip("/")).resolve()
                if master.outdir.resolve() not in path.parents or not path.is_file():
                    return self.send_error(404)
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                master.reports.append((self.path, json.loads(body or b"{}")))
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
