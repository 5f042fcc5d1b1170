"""Every HTTP call the agent makes: fetching the plan and the OS image, reporting progress.

Reports are retried with jittered backoff while the master is unreachable. A report that
cannot be delivered goes to an outbox (in RAM, and on the target once it is mounted) and is
resent before the next one; the final report is kept on the node until the master takes it.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Callable, List, Optional, Tuple

import requests

OUTBOX = "var/lib/ganeti-installer/outbox.json"


class ClientError(Exception):
    pass


def _headers(token: Optional[str]) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def fetch_plan(url: str, *, attempts: int = 30,
               sleep=time.sleep) -> Tuple[dict, Optional[str]]:
    """The plan at `url` and the answer's Date header (the master's clock), retried while the
    master is unreachable; ClientError otherwise."""
    last = ""
    for attempt in range(attempts):
        try:
            resp = requests.get(url, timeout=10)
            if resp.status_code == 200:
                try:
                    return resp.json(), resp.headers.get("Date")
                except ValueError:
                    raise ClientError(f"the plan at {url} is not JSON")
            if 400 <= resp.status_code < 500:
                raise ClientError(f"the master refused the plan at {url}: HTTP "
                                  f"{resp.status_code} {resp.text[:200]}")
            last = f"HTTP {resp.status_code}"
        except requests.RequestException as e:
            last = str(e)
        sleep(min(30, 2 ** attempt) * random.uniform(0.5, 1.0))
    raise ClientError(f"could not fetch the plan from {url} after {attempts} attempts: {last}")


class Reporter:
    """Posts events to the plan's report URL; never raises for a network failure."""

    def __init__(self, url: str, token: Optional[str] = None, *, attempts: int = 3,
                 log: Callable[[str], None] = print, sleep=time.sleep):
        self.url = url.rstrip("/") + "/events"
        self.token, self.attempts, self.log, self.sleep = token, attempts, log, sleep
        self.outbox: List[dict] = []
        self.target: Optional[str] = None

    def attach(self, target: str) -> None:
        """Keep the outbox on the target from now on; pick up what an earlier run left."""
        self.target = target
        kept = _read(os.path.join(target, OUTBOX))
        self.outbox = kept + [e for e in self.outbox if e not in kept]
        self._save()

    def event(self, step: str, status: str, message: str = "", index: int = 0,
              total: int = 0, final: bool = False, **extra) -> bool:
        event = {"step": step, "status": status, "message": message, "index": index,
                 "total": total, "time": time.time(), "final": final}
        event.update(extra)
        self.log(f"[{index}/{total}] {step}: {status}{' - ' + message if message else ''}")
        self.outbox.append(event)
        self._save()
        return self.flush(attempts=self.attempts * (10 if final else 1))

    def flush(self, attempts: int = 1) -> bool:
        """Send the outbox in order; True when it is empty."""
        while self.outbox:
            if not self._post(self.outbox[0], attempts):
                return False
            self.outbox.pop(0)
            self._save()
        return True

    def _post(self, event: dict, attempts: int) -> bool:
        for attempt in range(attempts):
            try:
                resp = requests.post(self.url, json=event, headers=_headers(self.token),
                                     timeout=10)
                if resp.status_code < 300:
                    return True
                if 400 <= resp.status_code < 500 and resp.status_code != 409:
                    self.log(f"report refused by the master: HTTP {resp.status_code} "
                             f"{resp.text[:200]}")
                    return True  # a refused report is not retried forever
            except requests.RequestException:
                pass
            if attempt + 1 < attempts:
                self.sleep(min(30, 2 ** attempt) * random.uniform(0.5, 1.0))
        return False

    def _save(self) -> None:
        if not self.target:
            return
        path = os.path.join(self.target, OUTBOX)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"url": self.url, "token": self.token, "events": self.outbox}, f)
        os.replace(path + ".tmp", path)


def _read(path: str) -> List[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("events", [])
    except (OSError, ValueError):
        return []
