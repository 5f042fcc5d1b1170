"""The PXE tree: golden entries for both examples, what each loader is told to boot, the
install/local switch `serve` uses, and (integration) the loaders copied from Debian packages."""

from __future__ import annotations

import os
import subprocess

import pytest

from installer import cli
from installer.agent import cmdline as agent_cmdline
from installer.build import pxe, render
from installer.build.plan import plan_url
from installer.cluster import layout
from installer.cluster.errors import InstallerError
from installer.master import handoff
from tests.conftest import load_example
from tests.golden import compare_tree

EXAMPLES = {"bookworm": "cluster.toml", "wheezy": "paper-wheezy.toml"}


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def entries(request, tmp_path_factory):
    cluster = load_example(EXAMPLES[request.param])
    out = tmp_path_factory.mktemp(f"pxe-{request.param}")
    written = pxe.render_entries(cluster, str(out))
    return request.param, cluster, out, written


@pytest.fixture
def tree(bookworm, tmp_path):
    """A fresh entry tree of the bookworm example, for tests that change it."""
    pxe.render_entries(bookworm, str(tmp_path))
    return bookworm, tmp_path


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_golden_entries(entries):
    name, _, out, written = entries
    compare_tree(str(out / "tftp"), f"{name}/pxe/tftp")
    assert sorted(written) == sorted(snapshot(out)), "render_entries must list what it wrote"


def test_a_fresh_render_installs_every_node(entries):
    _, cluster, out, _ = entries
    for node in cluster.nodes:
        assert handoff.boot_form(str(out), node.mac) == "install"
        for kind, rel in layout.active_paths(node.mac).items():
            assert (out / rel).read_text() == \
                (out / layout.entry_path(node.mac, "install", kind)).read_text()


def test_each_loader_finds_the_node_by_its_own_file_name(entries):
    _, cluster, out, _ = entries
    node = cluster.nodes[0]
    dashes = node.mac.replace(":", "-")        # 52:54:00:20:02:22 -> 52-54-00-20-02-22
    assert (out / f"tftp/ipxe/{dashes}.ipxe").is_file()           # ${netX/mac:hexhyp}
    assert (out / f"tftp/pxelinux.cfg/01-{dashes}").is_file()     # pxelinux: ARP type 01
    assert (out / f"tftp/grub/grub.cfg-01-{dashes}").is_file()    # grub_net_search_config_file
    base = cluster.provisioning.base_url
    boot = (out / "tftp/boot.ipxe").read_text()
    assert boot.startswith("#!ipxe\n")
    assert f"chain --replace --autofree {base}/tftp/ipxe/${{netX/mac:hexhyp}}.ipxe" in boot
    assert f"{base}/tftp/ipxe/default.ipxe" in boot


def test_install_entries_boot_the_netboot_image_with_the_plan(entries):
    _, cluster, out, _ = entries
    base = cluster.provisioning.base_url
    for node in cluster.nodes:
        ipxe = (out / layout.entry_path(node.mac, "install", "ipxe")).read_text()
        kernel = next(line for line in ipxe.splitlines() if line.startswith("kernel "))
        assert kernel.startswith(f"kernel {base}/netboot/vmlinuz initrd=initrd ")
        assert f"initrd --name initrd {base}/netboot/initrd\n" in ipxe
        # The agent reads its plan URL back from exactly this command line.
        args = kernel.split(" ", 3)[3]
        assert agent_cmdline.plan_url(args) == plan_url(cluster, node)
        assert {"console=tty0", "console=ttyS0,115200n8"} <= set(args.split())
        pxelinux = (out / layout.entry_path(node.mac, "install", "pxelinux")).read_text()
        assert f"  APPEND {args}\n" in pxelinux
        assert f"  KERNEL {base}/netboot/vmlinuz\n" in pxelinux
        grub = (out / layout.entry_path(node.mac, "install", "grub")).read_text()
        host = f"{cluster.provisioning.address}:{cluster.provisioning.http_port}"
        assert f"linux (http,{host})/netboot/vmlinuz {args}\n" in grub
        assert f"initrd (http,{host})/netboot/initrd\n" in grub


def test_local_and_unknown_entries_never_install(entries):
    _, cluster, out, _ = entries
    unknown = [out / p for p in pxe.DEFAULTS.values()]
    local = [out / layout.entry_path(n.mac, "local", k)
             for n in cluster.nodes for k in layout.KINDS]
    for path in unknown + local:
        text = path.read_text()
        assert "vmlinuz" not in text and "installer.plan" not in text, path
    assert all("not in the cluster file" in p.read_text() for p in unknown)
    assert "LOCALBOOT 0" in (out / pxe.DEFAULTS["pxelinux"]).read_text()
    assert "sanboot --no-describe --drive 0x80" in (out / pxe.DEFAULTS["ipxe"]).read_text()


def test_set_boot_flips_every_served_file(tree):
    cluster, out = tree
    node, other = cluster.nodes[0], cluster.nodes[1]
    before = snapshot(out)
    handoff.set_boot(str(out), node.mac, "local")
    assert handoff.boot_form(str(out), node.mac) == "local"
    after = snapshot(out)
    changed = {rel for rel in before if before[rel] != after[rel]}
    assert changed == set(layout.active_paths(node.mac).values())
    for kind, rel in layout.active_paths(node.mac).items():
        assert after[rel] == before[layout.entry_path(node.mac, "local", kind)]
    assert handoff.boot_form(str(out), other.mac) == "install"
    # MACs as an admin or a PXE log may spell them.
    handoff.set_boot(str(out), node.mac.upper().replace(":", "-"), "install")
    assert handoff.boot_form(str(out), node.mac.upper()) == "install"
    assert snapshot(out) == before


def test_set_boot_replaces_files_whole(tree):
    """A loader that opened the old entry reads it whole; nothing half-written is left."""
    cluster, out = tree
    node = cluster.nodes[0]
    active = out / layout.active_paths(node.mac)["ipxe"]
    with open(active, encoding="utf-8") as old:
        handoff.set_boot(str(out), node.mac, "local")
        assert "vmlinuz" in old.read()
    assert "vmlinuz" not in active.read_text()
    assert not [p for p in out.rglob(".*")], "temporary files left behind"
    assert oct(active.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("mac, form, message", [
    ("52:54:00:20:02", "local", "is not a MAC address"),
    ("52:54:00:20:02:zz", "local", "is not a MAC address"),
    ("../../../etc/passwd", "local", "is not a MAC address"),
    ("52:54:00:20-02:22", "local", "is not a MAC address"),
    ("", "local", "is not a MAC address"),
    ("52:54:00:99:99:99", "local", "no PXE entry for 52:54:00:99:99:99"),
    ("52:54:00:20:02:22", "reinstall", "unknown boot form 'reinstall'"),
    ("52:54:00:20:02:22", "unknown", "unknown boot form 'unknown'"),
])
def test_set_boot_refuses_bad_input_and_changes_nothing(tree, mac, form, message):
    _, out = tree
    before = snapshot(out)
    with pytest.raises(InstallerError, match=message):
        handoff.set_boot(str(out), mac, form)
    assert snapshot(out) == before


def test_boot_form_reports_a_half_flipped_node(tree):
    cluster, out = tree
    node = cluster.nodes[0]
    local = (out / layout.entry_path(node.mac, "local", "grub")).read_bytes()
    (out / layout.active_paths(node.mac)["grub"]).write_bytes(local)
    with pytest.raises(InstallerError, match="neither all 'install' nor all 'local'"):
        handoff.boot_form(str(out), node.mac)
    with pytest.raises(InstallerError, match="is not a MAC address"):
        handoff.boot_form(str(out), "node1")


def test_a_missing_loader_names_its_debian_package(tmp_path, monkeypatch):
    missing = pxe.Loader("pxelinux.0", str(tmp_path / "nowhere/pxelinux.0"), "pxelinux")
    monkeypatch.setattr(pxe, "LOADERS", (missing,))
    with pytest.raises(InstallerError, match=r"install the Debian package pxelinux"):
        pxe.copy_loaders(str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    optional = pxe.Loader("lpxelinux.0", str(tmp_path / "nowhere/l"), "pxelinux", optional=True)
    monkeypatch.setattr(pxe, "LOADERS", (optional,))
    assert pxe.copy_loaders(str(tmp_path / "out")) == []


def test_a_missing_grub_names_its_debian_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(pxe.shutil, "which", lambda name: None)
    with pytest.raises(InstallerError, match=r"grub-mkimage is missing: install the Debian "
                                             r"packages grub-efi-amd64-bin and grub-common"):
        pxe.build_grub(str(tmp_path))


@pytest.mark.integration
def test_loaders_come_from_the_debian_packages(bookworm, tmp_path):
    written = pxe.render_pxe(bookworm, str(tmp_path))
    tftp = tmp_path / "tftp"
    for loader in pxe.LOADERS:
        path = tftp / loader.name
        if loader.optional and not os.path.exists(loader.source):
            continue
        assert f"tftp/{loader.name}" in written
        assert path.stat().st_size > 0
        with open(loader.source, "rb") as f:
            assert path.read_bytes() == f.read(), loader.name
    grub = (tftp / pxe.GRUB_IMAGE).read_bytes()
    assert len(grub) > 100_000 and grub[:2] == b"MZ", "not a UEFI (PE) image"
    assert b"(tftp)/grub" in grub                       # its prefix, where grub.cfg-01-* live
    versions = dict(line.split(" ", 1) for line in (tftp / "VERSIONS").read_text().splitlines()
                    if not line.startswith("#"))
    for package in ("ipxe", "pxelinux", "syslinux-common", "grub-efi-amd64-bin"):
        dpkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                              capture_output=True, text=True, check=True).stdout
        assert versions[package] == dpkg


@pytest.mark.integration
def test_cli_render_writes_the_whole_tree(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["render", os.path.join(os.path.dirname(__file__), "..", "examples",
                                            "cluster.toml"), str(out)]) == 0
    for rel in ("tftp/undionly.kpxe", "tftp/ipxe.efi", "tftp/pxelinux.0", "tftp/ldlinux.c32",
                f"tftp/{pxe.GRUB_IMAGE}", "tftp/boot.ipxe", "tftp/VERSIONS",
                "tftp/ipxe/default.ipxe", "tftp/pxelinux.cfg/default", "tftp/grub/grub.cfg",
                "dnsmasq/dnsmasq.conf", "dnsmasq/dnsmasq-proxy.conf", "plans/node1.json"):
        assert (out / rel).is_file(), rel
    # Nothing may point at the stage directory render() wrote into before the rename.
    for path in out.rglob("*"):
        if path.is_file():
            assert b".render-" not in path.read_bytes(), path
    assert f"tftp-root={out}/tftp\n" in (out / "dnsmasq/dnsmasq.conf").read_text()
    # A second render replaces the tree: every node is back to `install`.
    handoff.set_boot(str(out), "52:54:00:20:02:22", "local")
    render.render(load_example(), str(out))
    assert handoff.boot_form(str(out), "52:54:00:20:02:22") == "install"
