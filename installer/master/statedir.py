"""The state directory of `serve`: what it keeps between runs, none of it served over HTTP.

    state.db            nodes, steps, events, unknown MACs (installer.master.state), with
                        its schema version: a newer release migrates it when it opens it
    admin.token         the bearer token of admin requests (`reinstall`, and `status` from
                        another address than loopback), mode 0600
    ssh/id_ed25519      the serving host's SSH key pair: plans put its public half in
                        root's authorized_keys on every node, the join logs in with it
    dnsmasq.leases      dnsmasq's DHCP leases

Default: beside OUTDIR, named after the cluster (out/cluster → out/cluster-state), so a new
`render` (which replaces OUTDIR's trees) never touches it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError

KEY = os.path.join("ssh", "id_ed25519")


def default(cluster: Cluster, outdir: str) -> str:
    parent = os.path.dirname(os.path.abspath(outdir))
    return os.path.join(parent, f"{cluster.name}-state")


def prepare(state_dir: str) -> None:
    """Create the directory, private to root (it holds tokens and a private key)."""
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as e:
        raise InstallerError(f"cannot create the state directory {state_dir}: "
                             f"{e.strerror}; choose another with --state DIR") from None


def admin_token(state_dir: str, *, create: bool = True) -> str:
    """The admin token, made by serve on its first start; clients read it (create=False)."""
    path = os.path.join(state_dir, "admin.token")
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        if not create:
            raise InstallerError(f"no {path}: start ganeti-installer serve once with this "
                                 "--state directory, or name the right one with --state") from None
    except OSError as e:
        raise InstallerError(f"cannot read {path}: {e.strerror}; run this as root") from None
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token


def serve_key(state_dir: str, comment: str) -> str:
    """The public half of the serving host's ed25519 key, made with ssh-keygen once."""
    path = os.path.join(state_dir, KEY)
    if not os.path.isfile(path + ".pub"):
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise InstallerError("ssh-keygen is missing: install the Debian package "
                                 "openssh-client (apt-get install openssh-client)")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        for stale in (path, path + ".pub"):     # half a pair from an interrupted run
            if os.path.exists(stale):
                os.unlink(stale)
        done = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment,
                               "-f", path], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise InstallerError(f"ssh-keygen could not make {path}: {done.stderr.strip()}")
    with open(path + ".pub", encoding="ascii") as f:
        return f.read().strip()


def key_path(state_dir: str) -> str:
    """The private key, for the join (installer/join.py)."""
    return os.path.join(state_dir, KEY)
