"""What an `usb --all` stick adds so that the first node it installs becomes the serving host.

An office that starts from nothing has no machine to run `serve` on. The master node's stick
plan then carries a `serving_host` section: the agent copies OUTDIR, serve's state, the cluster
file and this program from the stick onto the master's disk, and enables a unit that runs
`serve` at its first boot. The master's trunk NIC already takes the provisioning address
(network.provisioning.on_master), so the other PCs PXE-boot from it and it joins them.

    on the stick (ESP)                       on the master
    netboot/, images/, instance-images/      /var/lib/ganeti-installer/serve/out/...
    ganeti-installer/serve/out/              /var/lib/ganeti-installer/serve/out (the rest)
    ganeti-installer/serve/state/            /var/lib/ganeti-installer/serve/state (0700)
    ganeti-installer/serve/cluster.toml      /etc/ganeti-installer/cluster.toml
    ganeti-installer/serve/program/          /usr/local/lib/ganeti-installer-serve

The state is serve's own: the nodes' report tokens the stick plans carry, serve's SSH key
(in every plan's authorized_keys) and the admin token. The master's install reports wait in
its outbox and reach that state at its first boot, from the node itself.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile

from installer.agent import rules
from installer.build import dnsmasq
from installer.cluster import layout
from installer.cluster.config import Cluster
from installer.cluster.errors import InstallerError

STICK_SERVE = f"{rules.STICK_DIR}/serve"
HOME = "/var/lib/ganeti-installer/serve"
OUT, STATE = f"{HOME}/out", f"{HOME}/state"
CLUSTER_FILE = "/etc/ganeti-installer/cluster.toml"
PROGRAM = "/usr/local/lib/ganeti-installer-serve"
UNIT_NAME = "ganeti-installer-serve.service"
# On the stick already, for every node: copied from there, not carried twice.
SHARED = ("netboot", "images", layout.INSTANCE_IMAGES)
# Not state to carry: the build host's dnsmasq files, SQLite's side files (the snapshot has
# them), and the ISOs serve keeps (big, and named by paths of the build host: `iso add` them
# again on the master; the snapshot forgets them).
NOT_STATE = ("dnsmasq.leases", "dnsmasq.pid", "state.db", "state.db-wal", "state.db-shm",
             "isos")
PROGRAM_SKIP = ("__pycache__",)
UNIT = f"""[Unit]
Description=ganeti-installer serve: PXE, plans, reports and joins for the cluster's PCs
Documentation=man:ganeti-installer(1)
Wants=network-online.target
After=network-online.target ssh.service
ConditionPathExists={OUT}/{layout.MANIFEST}

[Service]
Type=exec
Environment=PYTHONPATH={PROGRAM} PYTHONUNBUFFERED=1
ExecStart=/usr/bin/python3 -m installer.cli serve {CLUSTER_FILE} {OUT} --state {STATE}
# Its addresses come up with the bridges: until then, the listen fails and is tried again.
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def check(cluster: Cluster, cluster_file: str, node: str | None) -> None:
    """InstallerError, naming the key, when the master cannot serve from its own disk."""
    if node and node != cluster.master:
        raise InstallerError(f"--all makes the master ({cluster.master}) the serving host: "
                             f"leave out --node {node}, or give --node {cluster.master}")
    if not cluster.provisioning.on_master:
        raise InstallerError(f"{cluster_file}: network.provisioning.on_master is false (a "
                             "separate machine serves): --all needs the master to serve; "
                             "set it true, or make the stick without --all")
    prov = cluster.provisioning
    if prov.interface != prov.nic:
        raise InstallerError(f"{cluster_file}: network.provisioning.interface = "
                             f"\"{prov.interface}\" is where serve listens, and with --all "
                             f"that is the master's trunk NIC, nic = \"{prov.nic}\": set "
                             f"interface = \"{prov.nic}\"")
    for index, image in enumerate(cluster.instance_image.images):
        if image.build is None:
            raise InstallerError(
                f"{cluster_file}: instance_image.images[{index}].file: serve on the master "
                "reads the cluster file without the files it names: give that image as "
                "build = \"<release>\", or make the stick without --all and add it to the "
                "master's cluster file once it runs")
    release = cluster.release
    if release.init != "systemd" or release.number < 12:
        raise InstallerError(f"{cluster_file}: cluster.release = \"{release.name}\": serve "
                             "needs Python 3.11 and systemd on the master (bookworm or "
                             "trixie); make the stick without --all and serve from another "
                             "machine")


def stick_files(cluster: Cluster, cluster_file: str, outdir: str, state_dir: str | None,
                work: str) -> dict[str, str | bytes]:
    """The stick's files of the serving host (beside the netboot and OS images it has);
    state_dir None leaves serve's state out (a few KiB: enough to size the stick)."""
    files: dict[str, str | bytes] = {}
    for rel in _tree(outdir, skip_top=SHARED):
        files[f"{STICK_SERVE}/out/{rel}"] = os.path.join(outdir, rel)
    # dnsmasq's configurations name their TFTP root: the master's OUTDIR, not this one.
    stage = os.path.join(work, "dnsmasq-stage")
    for rel in dnsmasq.render_dnsmasq(cluster, stage, final_outdir=OUT):
        files[f"{STICK_SERVE}/out/{rel}"] = os.path.join(stage, rel)
    if state_dir is not None:
        for rel in _tree(state_dir, skip_top=NOT_STATE):
            files[f"{STICK_SERVE}/state/{rel}"] = os.path.join(state_dir, rel)
        files[f"{STICK_SERVE}/state/state.db"] = snapshot(state_dir, work)
    with open(cluster_file, "rb") as f:
        files[f"{STICK_SERVE}/cluster.toml"] = f.read()
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for rel in _tree(package, skip_any=PROGRAM_SKIP):
        files[f"{STICK_SERVE}/program/installer/{rel}"] = os.path.join(package, rel)
    return files


def _tree(top: str, *, skip_top: tuple[str, ...] = (),
          skip_any: tuple[str, ...] = ()) -> list[str]:
    """Regular files under `top` (links followed: the package's data links), relative."""
    found = []
    for here, dirs, names in os.walk(top, followlinks=True):
        rel_here = os.path.relpath(here, top)
        dirs[:] = sorted(d for d in dirs if d not in skip_any
                         and not (rel_here == "." and d in skip_top))
        for name in sorted(names):
            rel = os.path.normpath(os.path.join(rel_here, name))
            if (rel_here == "." and name in skip_top) or name.endswith(".pyc") \
                    or not os.path.isfile(os.path.join(here, name)):
                continue
            found.append(rel)
    return found


def snapshot(state_dir: str, work: str) -> str:
    """A consistent copy of serve's state database (SQLite's backup, WAL included)."""
    fd, path = tempfile.mkstemp(prefix="state-", suffix=".db", dir=work)
    os.close(fd)
    try:
        source = sqlite3.connect(f"file:{os.path.join(state_dir, 'state.db')}?mode=ro",
                                 uri=True)
        try:
            target = sqlite3.connect(path)
            try:
                source.backup(target)
                _forget_isos(target)
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as e:
        raise InstallerError(f"cannot copy serve's state database in {state_dir}: {e}; stop "
                             "a serve that holds it, or give another --state") from None
    return path


def _forget_isos(db: sqlite3.Connection) -> None:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    with db:
        for table in ("iso_nodes", "isos"):
            if table in tables:
                db.execute(f"DELETE FROM {table}")


def master_plan(plan: dict) -> dict:
    """The master's stick plan with its serving-host section and serve's unit."""
    mount = rules.STICK_MOUNT
    shared = ["netboot"] + (["images"] if plan["install"].get("image") else []) \
        + ([layout.INSTANCE_IMAGES] if plan.get("instance_images") else [])
    # OUTDIR first: a copy replaces its place whole, and the shared trees go inside it.
    copies = [{"from": f"{mount}/{STICK_SERVE}/out", "to": OUT, "private": False}]
    copies += [{"from": f"{mount}/{top}", "to": f"{OUT}/{top}", "private": False}
               for top in shared]
    copies += [
        # The plans and the cluster file hold the root password hash: root's only.
        {"from": f"{mount}/{STICK_SERVE}/out/{layout.PLANS}", "to": f"{OUT}/{layout.PLANS}",
         "private": True},
        {"from": f"{mount}/{STICK_SERVE}/state", "to": STATE, "private": True},
        {"from": f"{mount}/{STICK_SERVE}/cluster.toml", "to": CLUSTER_FILE, "private": True},
        {"from": f"{mount}/{STICK_SERVE}/program", "to": PROGRAM, "private": False},
    ]
    plan = dict(plan)
    plan["serving_host"] = {"copies": copies, "unit": UNIT_NAME}
    plan["files"] = list(plan["files"]) + [
        {"path": f"/etc/systemd/system/{UNIT_NAME}", "mode": "0644", "content": UNIT}]
    return plan
