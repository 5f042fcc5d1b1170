"""The agent's HTTP calls to the master's API: fetching the plan, reporting progress (the OS
image is streamed by osinstall). Both wait for the master through retry.Waiter's rules.

Reports are retried with the same jittered backoff while the master is unreachable, a few
times only: the install goes on without the master. A report that cannot be delivered goes
to an outbox (in RAM, and on the target once it is mounted) and is resent before the next
one; the final report is kept on the node until the master takes it.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Callable, List, Optional, Tuple

import requests

from installer.agent import retry

OUTBOX = "var/lib/ganeti-installer/outbox.json"


class ClientError(Exception):
    pass


def _headers(token: Optional[str]) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def fetch_plan(url: str, *, waiter: Optional[retry.Waiter] = None
               ) -> Tuple[dict, Optional[str]]:
    """The plan at `url` and the answer's Date header (the master's clock).

    A PC powered on before `serve` runs keeps asking (retry.Waiter) and starts once it gets
    its plan; a master that says no (unknown MAC, not armed) is asked again once a minute.
    ClientError when the wait is over or the answer is no plan at all."""
    waiter = waiter or retry.default

    def ask() -> requests.Response:
        resp = requests.get(url, timeout=10)
        if resp.status_code != 200:
            raise retry.HTTPStatus(url, resp.status_code, resp.text)
        return resp

    try:
        resp = waiter.run("the plan", ask)
    except retry.GaveUp as e:
        raise ClientError(str(e)) from e
    except retry.HTTPStatus as e:       # a 400 and the like: asking again would not help
        raise ClientError(f"the master refused the plan: {e}") from e
    except requests.RequestException as e:
        raise ClientError(f"cannot fetch the plan {url}: {e}") from e
    try:
        return resp.json(), resp.headers.get("Date")
    except ValueError:
        raise ClientError(f"the plan at {url} is not JSON") from None


class Reporter:
    """Posts events to the plan's report URL; never raises for a network failure."""

    def __init__(self, url: str, token: Optional[str] = None, *, attempts: int = 3,
                 log: Callable[[str], None] = print, sleep=time.sleep):
        self.url = url.rstrip("/") + "/events"
        self.token, self.attempts, self.log, self.sleep = token, attempts, log, sleep
        self.outbox: List[dict] = []
        self.target: Optional[str] = None
        self.stage: Optional[str] = None    # the last stage started: where a wait belongs
        self.notes: List[str] = []          # waits before the install started, said with it

    def attach(self, target: str) -> None:
        """Keep the outbox on the target from now on; pick up what an earlier run left."""
        self.target = target
        kept = _read(os.path.join(target, OUTBOX))
        self.outbox = kept + [e for e in self.outbox if e not in kept]
        self._save()

    def event(self, step: str, status: str, message: str = "", index: int = 0,
              total: int = 0, final: bool = False, **extra) -> bool:
        if (step, status) == ("install", "started") and self.notes:
            message = "; ".join([message] + self.notes) if message else "; ".join(self.notes)
            self.notes = []
        if status == "started":
            self.stage = step
        event = {"step": step, "status": status, "message": message, "index": index,
                 "total": total, "time": time.time(), "final": final}
        event.update(extra)
        self.log(f"[{index}/{total}] {step}: {status}{' - ' + message if message else ''}")
        self.outbox.append(event)
        self._save()
        return self.flush(attempts=self.attempts * (10 if final else 1))

    def waited(self, what: str, seconds: float) -> None:
        """Tell the master how long this node waited for it (retry.Waiter's on_wait), as a
        report of the stage it happened in: `status` shows it once the master is back. A
        wait before the install started (for the plan) rides on the 'install started'
        report: the master takes no report before it."""
        note = f"waited for the master {retry.span(seconds)} ({what})"
        if self.stage is None:
            self.notes.append(note)
        else:
            self.event(f"{self.stage}/wait", "running", note)

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
                self.sleep(retry.backoff(attempt, random.random()))
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
