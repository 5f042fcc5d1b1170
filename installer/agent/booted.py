"""At every boot of an installed node: tell the master the node is up, with its SSH host keys.

The install leaves the agent's own modules under LIB, the master's report URL and this node's
token in REPORT_CONF, and a systemd unit that runs `python3 -m installer.agent.booted`. The
master pins the reported keys and joins the node when this report arrives. Reports the install
could not deliver (the master was down at its end) are in the outbox and go first: the final
report is never lost. The unit restarts this while the master is unreachable.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, Optional

from installer.agent import ship
from installer.agent.client import Reporter

LIB = "usr/local/lib/ganeti-installer"
REPORT_CONF = "var/lib/ganeti-installer/report.json"
UNIT_NAME = "ganeti-installer-booted.service"
UNIT = f"""[Unit]
Description=ganeti-installer: tell the master this node is up (it then joins the cluster)
Wants=network-online.target
After=network-online.target ssh.service
ConditionPathExists=/{REPORT_CONF}

[Service]
Type=exec
Environment=PYTHONPATH=/{LIB} PYTHONUNBUFFERED=1
ExecStart=/usr/bin/python3 -m installer.agent.booted
Restart=on-failure
RestartSec=30

[Install]
WantedBy=multi-user.target
"""
HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


def read_host_keys(root: str) -> Dict[str, str]:
    """The node's SSH host public keys as {type: 'algorithm base64'}."""
    keys = {}
    for kind in HOST_KEY_TYPES:
        try:
            with open(os.path.join(root, f"etc/ssh/ssh_host_{kind}_key.pub"),
                      encoding="utf-8") as f:
                keys[kind] = " ".join(f.read().split()[:2])
        except OSError:
            continue
    return keys


def install(root: str, url: str, token: Optional[str]) -> None:
    """Put the agent's modules, the report settings and the enabled unit on the new system."""
    ship.copy_to(os.path.join(root, LIB))
    conf = os.path.join(root, REPORT_CONF)
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    fd = os.open(conf + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:     # the token is a secret
        json.dump({"url": url, "token": token}, f)
    os.replace(conf + ".tmp", conf)
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    with open(os.path.join(root, "etc/systemd/system", UNIT_NAME), "w", encoding="utf-8") as f:
        f.write(UNIT)
    link = os.path.join(wants, UNIT_NAME)
    if not os.path.lexists(link):
        os.symlink(f"/etc/systemd/system/{UNIT_NAME}", link)


def report(root: str = "/", **kw) -> bool:
    """Send what the install left undelivered, then "booted"; True once the master has both."""
    with open(os.path.join(root, REPORT_CONF), encoding="utf-8") as f:
        conf = json.load(f)
    reporter = Reporter(conf["url"], conf.get("token"), **kw)
    reporter.attach(root)
    # An earlier boot's undelivered "booted" is stale: this one replaces it.
    reporter.outbox = [e for e in reporter.outbox if e.get("step") != "boot"]
    return reporter.event("boot", "booted", f"{_hostname()} is up on its own disk",
                          final=True, host_keys=read_host_keys(root))


def _hostname() -> str:
    return os.uname().nodename


def main() -> int:
    try:
        return 0 if report(attempts=5) else 1
    except (OSError, ValueError, KeyError) as e:
        print(f"ganeti-installer: cannot report this boot: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
