"""The PXE handoff: which entry each loader gets for a node's MAC, flipped by copying files.

`render` wrote both forms of every node's entry (installer.build.pxe); `serve` makes one of
them active, "install" while the node is armed and "local" once its install is done, with a
write-then-rename so a loader fetching the file sees the old or the new one, whole.
"""
from __future__ import annotations

import os
import shutil

from installer.agent import rules
from installer.cluster import files
from installer.cluster.errors import InstallerError
from installer.cluster.layout import FORMS, KINDS, active_paths, entry_path

MAC = rules.MAC_ANY


def _mac(mac: str) -> str:
    """A MAC as the tree names it, or a clear error (it becomes part of file paths)."""
    norm = str(mac).strip().lower()
    if not MAC.fullmatch(norm):
        raise InstallerError(f"'{mac}' is not a MAC address: write six colon-separated hex "
                             "bytes, e.g. 52:54:00:12:34:56")
    return norm.replace("-", ":")


def _entries(outdir: str, mac: str) -> dict[str, dict[str, str]]:
    """form -> kind -> absolute path of this MAC's rendered entries; error if it has none."""
    out = {form: {kind: os.path.join(outdir, entry_path(mac, form, kind)) for kind in KINDS}
           for form in FORMS}
    missing = [p for paths in out.values() for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise InstallerError(f"no PXE entry for {mac} in {outdir}: add the node to the cluster "
                             f"file and run ganeti-installer render (missing {missing[0]})")
    return out


def set_boot(outdir: str, mac: str, form: str) -> None:
    """Make `form` ("install" or "local") the entry every loader gets for this MAC."""
    mac = _mac(mac)
    if form not in FORMS:
        raise InstallerError(f"unknown boot form '{form}': use one of {', '.join(FORMS)}")
    sources = _entries(outdir, mac)[form]
    for kind, rel in active_paths(mac).items():
        with open(sources[kind], "rb") as f:
            files.write_atomically(os.path.join(outdir, rel), f.read())


def boot_form(outdir: str, mac: str) -> str:
    """The form every loader gets for this MAC now; an error if the three files disagree."""
    mac = _mac(mac)
    entries = _entries(outdir, mac)
    active = {kind: files.read_bytes(os.path.join(outdir, rel))
              for kind, rel in active_paths(mac).items()}
    for form in FORMS:
        if all(active[kind] == files.read_bytes(entries[form][kind]) for kind in KINDS):
            return form
    raise InstallerError(f"the PXE entries of {mac} in {outdir} are neither all 'install' nor "
                         f"all 'local': run set_boot again, or ganeti-installer render")


def forget(outdir: str, mac: str) -> list[str]:
    """Remove a MAC's entries, both forms and the active one (a node's old NIC, replaced):
    a machine booting with it again is unknown. Returns the paths removed (relative)."""
    mac = _mac(mac)
    gone = []
    for rel in active_paths(mac).values():
        if os.path.lexists(os.path.join(outdir, rel)):
            os.unlink(os.path.join(outdir, rel))
            gone.append(rel)
    forms = os.path.dirname(entry_path(mac, FORMS[0], KINDS[0]))
    if os.path.isdir(os.path.join(outdir, forms)):
        shutil.rmtree(os.path.join(outdir, forms))
        gone.append(forms)
    return gone
