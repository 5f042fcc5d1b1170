"""`status`, `reinstall` and `iso` as clients of the master's API: tables for people, JSON for
scripts."""

from __future__ import annotations

import json
import time

import requests
import urllib3

from installer.cluster.errors import InstallerError

COLUMNS = ("NODE", "MAC", "STATE", "STEP", "PROGRESS", "UPDATED", "MESSAGE")
MESSAGE_WIDTH = 60


class Unreachable(Exception):
    """Nothing answers at the master's URL (reinstall then writes the state directly)."""


def fetch(url: str, token: str | None = None) -> dict:
    """{"nodes": [...], "unknown": [...], "isos": [...]} from the API at base URL `url` (with
    the admin token, which a master asked from another address than loopback wants)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"nodes": _get(f"{url}/api/v1/nodes", headers),
            "unknown": _get(f"{url}/api/v1/unknown", headers), "isos": isos(url, headers)}


def _get(url: str, headers: dict):
    try:
        resp = requests.get(url, headers=headers, timeout=10)
    except requests.RequestException as e:
        raise InstallerError(f"cannot reach the master at {url} ({type(e).__name__}): is "
                             "ganeti-installer serve running? Name its address with --url "
                             "http://ADDRESS:PORT or --cluster FILE") from None
    if resp.status_code in (401, 403):
        raise InstallerError(f"{url} answered HTTP {resp.status_code}: {_reason(resp)}. "
                             "Give status the state directory: --state DIR (serve's "
                             "--state), or ask on the serving host: --url "
                             "http://127.0.0.1:PORT")
    if resp.status_code != 200:
        raise InstallerError(f"{url} answered HTTP {resp.status_code}: {_reason(resp)}")
    try:
        return resp.json()
    except ValueError:
        raise InstallerError(f"{url} did not answer JSON: is that ganeti-installer serve?") \
            from None


def _reason(resp: requests.Response) -> str:
    try:
        return resp.json()["error"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]


def table(status: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [COLUMNS]
    for n in status["nodes"]:
        progress = f"{n['index']}/{n['total']}" if n["total"] else "-"
        message = " ".join(n["message"].split())
        if len(message) > MESSAGE_WIDTH:
            message = message[:MESSAGE_WIDTH - 1] + "…"
        rows.append((n["name"], n["mac"], n["state"], n["step"] or "-", progress,
                     ago(now - n["updated"]), message))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines += iso_lines(status.get("isos", []), now)
    lines += refused_plans(status["nodes"], now)
    if status["unknown"]:
        lines += ["", "Machines not in the cluster file (add one under [[nodes]] with its "
                      "mac, run render and restart serve to install it):"]
        for u in status["unknown"]:
            lines.append(f"  {u['mac']}  asked {u['count']} time(s) for its {u['source']}, "
                         f"last {ago(now - u['last_seen'])}")
    return "\n".join(lines)


def refused_plans(nodes: list[dict], now: float) -> list[str]:
    """Plan fetches the master refused: a second machine asking for an armed node's plan
    (a stranger, or the node itself netbooting again with no plan on its disk)."""
    lines = []
    for n in nodes:
        fetch = n.get("plan") or {}
        if not fetch.get("refusals"):
            continue
        taken = (f"its plan went to {fetch['taken_by']} {ago(now - fetch['taken_at'])}"
                 if fetch["taken_at"] else f"it is {n['state']}")
        lines.append(f"  {n['name']}: {fetch['refusals']} plan fetch(es) refused, the last "
                     f"from {fetch['refused_by']} {ago(now - fetch['refused_at'])}; {taken}")
    if not lines:
        return []
    return ["", "Plans refused (a plan goes out once per install cycle; a node that lost its "
                "disk, or whose plan a stranger took: ganeti-installer reinstall FILE OUTDIR "
                "NODE):"] + lines


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def show(url: str, *, as_json: bool, watch: float | None, out=print,
         token: str | None = None) -> int:
    """Print once, or every `watch` seconds until interrupted (JSON: one object a line)."""
    while True:
        status = fetch(url, token)
        if as_json:
            out(json.dumps(status, indent=None if watch else 2))
        else:
            if watch:
                out("\033[H\033[2J" + f"{url}  (every {watch:g} s, Ctrl-C to stop)\n")
            out(table(status))
        if not watch:
            return 0
        time.sleep(watch)


def reinstall(url: str, name: str, admin_token: str) -> dict:
    """POST the reinstall; Unreachable if no connection was made, InstallerError with the
    API's reason for a refusal or with what broke off once the request was sent."""
    try:
        resp = requests.post(f"{url}/api/v1/nodes/{name}/reinstall", timeout=30,
                             headers={"Authorization": f"Bearer {admin_token}"})
    except requests.RequestException as e:
        if _not_connected(e):       # nothing sent: the caller may mark it in the state
            raise Unreachable(url) from None
        raise InstallerError(f"reinstall of {name} through {url} failed ({type(e).__name__})"
                             ": serve may have taken it; check ganeti-installer status") \
            from None
    if resp.status_code != 200:
        raise InstallerError(f"the master refused the reinstall of {name}: HTTP "
                             f"{resp.status_code} {_reason(resp)}")
    return resp.json()


class Refused(InstallerError):
    """serve answered a 4xx: it changed nothing."""


def reload(url: str, admin_token: str) -> dict:
    """Ask serve to take its cluster file's new node MACs; Unreachable if no connection was
    made (nothing sent), Refused (nothing changed) or InstallerError with serve's reason or
    what broke off once the request was sent (serve may have taken it)."""
    try:
        resp = requests.post(f"{url}/api/v1/reload", timeout=60,
                             headers={"Authorization": f"Bearer {admin_token}"})
    except requests.RequestException as e:
        if _not_connected(e):
            raise Unreachable(url) from None
        raise InstallerError(f"the reload through {url} broke off after it was sent "
                             f"({type(e).__name__}): serve may have taken the new MAC; check "
                             "ganeti-installer status") from None
    if 400 <= resp.status_code < 500:
        raise Refused(f"serve refused the reload: HTTP {resp.status_code} {_reason(resp)}")
    if resp.status_code != 200:
        raise InstallerError(f"the reload through {url} failed: HTTP {resp.status_code} "
                             f"{_reason(resp)}")
    return resp.json()


def _not_connected(e: requests.RequestException) -> bool:
    """Whether the connection itself failed, so that nothing reached serve: a connect timeout
    or refusal (urllib3's NewConnectionError under requests' ConnectionError), not a
    connection that broke off after the request went out."""
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(e, requests.ConnectionError):
        return False
    todo: list[BaseException] = [e]
    seen: set[int] = set()
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, urllib3.exceptions.NewConnectionError):
            return True
        todo += [a for a in (getattr(x, "reason", None), x.__cause__, x.__context__, *x.args)
                 if isinstance(a, BaseException)]
    return False


# -- ISOs -------------------------------------------------------------------------------------

def isos(url: str, headers: dict | None = None) -> list:
    """The cluster's ISOs and their state per node ([] from a serve that has none)."""
    headers = headers or {}
    try:
        resp = requests.get(f"{url}/api/v1/isos", headers=headers, timeout=10)
    except requests.RequestException:
        return _get(f"{url}/api/v1/isos", headers)      # says why, as every other read
    if resp.status_code in (401, 403):     # not an empty list: the admin's token is missing
        return _get(f"{url}/api/v1/isos", headers)
    return resp.json() if resp.status_code == 200 else []


def iso_lines(items: list, now: float | None = None) -> list[str]:
    """One line per ISO and node: its state there and the last word on it."""
    now = time.time() if now is None else now
    if not items:
        return []
    rows = [("ISO", "NODE", "STATE", "UPDATED", "MESSAGE")]
    for iso in items:
        if not iso["nodes"]:
            rows.append((iso["name"], "-", "no node yet", "-", ""))
        for node, st in iso["nodes"].items():
            message = " ".join(st["message"].split())
            if len(message) > MESSAGE_WIDTH:
                message = message[:MESSAGE_WIDTH - 1] + "…"
            rows.append((iso["name"], node, st["state"], ago(now - st["updated"]), message))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [""] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                   for r in rows]


def iso_request(method: str, url: str, admin_token: str, body: dict | None = None) -> dict:
    """An admin ISO request; waits as long as the transfer takes. A refusal becomes
    InstallerError with serve's reason."""
    try:
        resp = requests.request(method, url, json=body, timeout=(10, None),
                                headers={"Authorization": f"Bearer {admin_token}"})
    except requests.RequestException as e:
        raise InstallerError(f"cannot reach serve at {url} ({type(e).__name__}): iso runs "
                             "through the running ganeti-installer serve; start it, or name "
                             "its address with --url http://ADDRESS:PORT") from None
    if resp.status_code != 200:
        raise InstallerError(f"serve refused: HTTP {resp.status_code}: {_reason(resp)}")
    return resp.json()
