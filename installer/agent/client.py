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


def fetch_plan(url: str, *, waiter: Optional[retry.Waiter] = None,
               kept: Optional[Callable[[], Optional[dict]]] = None
               ) -> Tuple[dict, Optional[str]]:
    """The plan at `url` and the answer's Date header (the master's clock; None for a kept
    plan).

    A PC powered on before `serve` runs keeps asking (retry.Waiter) and starts once it gets
    its plan. A master that says no (unknown MAC, not armed) is asked again once a minute,
    for as long as it takes: a `reinstall` on the master then starts the install with no
    keystroke. When the no is a 409 (the plan of this install cycle went out already),
    kept() is asked once for the plan this node saved on its disk (savedplan.find): a node
    resuming after a power cut goes on with it. ClientError when the master stays away
    past the wait limit or the answer is no plan at all."""
    waiter = waiter or retry.default
    looked: List[Optional[dict]] = []      # kept()'s answer, once asked

    def ask() -> Tuple[dict, Optional[str]]:
        resp = requests.get(url, timeout=10)
        if resp.status_code == 409 and kept is not None:
            if not looked:
                looked.append(kept())
            if looked[0] is not None:
                return looked[0], None
        if resp.status_code != 200:
            raise retry.HTTPStatus(url, resp.status_code, _reason(resp))
        try:
            return resp.json(), resp.headers.get("Date")
        except ValueError:
            raise ClientError(f"the plan at {url} is not JSON") from None

    while True:
        try:
            return waiter.run("the plan", ask)
        except retry.GaveUp as e:
            if retry.classify(e.last) != retry.REASK:
                raise ClientError(str(e)) from e
        except retry.HTTPStatus as e:   # a 400 and the like: asking again would not help
            raise ClientError(f"the master refused the plan: {e}") from e
        except requests.RequestException as e:
            raise ClientError(f"cannot fetch the plan {url}: {e}") from e


def fetch_secrets(url: str, token: Optional[str], *,
                  waiter: Optional[retry.Waiter] = None) -> dict:
    """The node's secrets (the root password hash) from the master, with its token: they
    are not in the plan, which any machine on the LAN may have fetched first."""
    waiter = waiter or retry.default

    def ask() -> dict:
        resp = requests.get(url, headers=_headers(token), timeout=10)
        if resp.status_code != 200:
            raise retry.HTTPStatus(url, resp.status_code, _reason(resp))
        return resp.json()

    try:
        answer = waiter.run("the root password hash", ask)
    except (retry.GaveUp, retry.HTTPStatus, requests.RequestException, ValueError) as e:
        raise ClientError(f"cannot fetch the node's secrets from {url}: {e}") from e
    if not isinstance(answer, dict):
        raise ClientError(f"{url} did not answer a JSON object")
    return answer


def _reason(resp: requests.Response) -> str:
    """The master's JSON error when it gave one, else the body."""
    try:
        return str(resp.json()["error"])
    except (ValueError, KeyError, TypeError):
        return resp.text


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
