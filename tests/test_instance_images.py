"""The cluster file's [instance_image] section: the variants and images it declares become
the image OS definition's settings files in every plan, render copies the images into
OUTDIR with their sha256, and every mistake names the file, the key and the fix."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
import tomli_w

from installer import cli
from installer.build import render
from installer.cluster import config
from tests.conftest import example_data, fixed_mirror
from tests.test_cluster_input import _error

QCOW2 = b"QFI\xfb" + b"\0" * 508


def files(tmp_path) -> None:
    (tmp_path / "disk.raw").write_bytes(b"\x01" * 4096)
    (tmp_path / "disk.qcow2").write_bytes(QCOW2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("etc/os-release")
        info.size = 8
        t.addfile(info, io.BytesIO(b"ID=test\n"))
    (tmp_path / "root.tar.gz").write_bytes(buf.getvalue())


def section(**variant) -> dict:
    return {"variants": [{"name": "default", "image": "debian"},
                         {"name": "cd", "cdinstall": True, "nomount": True},
                         {"name": "tiny", **variant} if variant else {"name": "tiny",
                                                                      "image": "tiny"}],
            "images": [{"name": "debian", "format": "tarball", "file": "root.tar.gz"},
                       {"name": "tiny", "arch": "i386", "format": "qcow2",
                        "file": "disk.qcow2"},
                       {"name": "plain", "format": "raw", "file": "disk.raw"}]}


def load(tmp_path, data: dict) -> config.Cluster:
    path = tmp_path / "cluster.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return config.load(str(path), host_mirror_fn=fixed_mirror)


def node_file(plan: dict, path: str) -> str:
    return next(f["content"] for f in plan["files"] if f["path"] == path)


def test_without_the_section_every_node_gets_the_papers_variants():
    data = example_data()
    plans = render.render_plans(config.parse(data, "x.toml", host_mirror_fn=fixed_mirror))
    for plan in plans.values():
        assert node_file(plan, "/etc/ganeti/instance-image/variants.list") == "default\ncd\n"
        assert node_file(plan, "/usr/share/ganeti/os/image/variants.list") == "default\ncd\n"
        cd = node_file(plan, "/etc/ganeti/instance-image/variants/cd.conf")
        assert cd.splitlines()[1:] == ['CDINSTALL="yes"', 'NOMOUNT="yes"']   # the paper's
        modes = {f["path"]: f["mode"] for f in plan["files"]}
        for script in ("create", "export", "import", "rename", "verify"):
            assert modes[f"/usr/share/ganeti/os/image/{script}"] == "0755"
        assert node_file(plan, "/usr/share/ganeti/os/image/ganeti_api_version") == "20\n"
        assert plan["instance_images"] == []


def test_the_paper_wheezy_nodes_get_no_image_os_their_python_is_too_old():
    from tests.conftest import load_example
    plans = render.render_plans(load_example("paper-wheezy.toml"))
    for plan in plans.values():
        assert not [f for f in plan["files"] if "ganeti" in f["path"] and "os" in f["path"]]
        assert "instance_images" not in plan


@pytest.mark.integration        # render builds the PXE tree with grub-mkimage
def test_declared_variants_and_images_reach_every_plan_and_outdir(tmp_path, capsys):
    files(tmp_path)
    data = example_data()
    data["instance_image"] = section()
    cluster = load(tmp_path, data)
    plan = render.render_plans(cluster)["node2"]
    assert node_file(plan, "/etc/ganeti/instance-image/variants.list") == "default\ncd\ntiny\n"
    assert node_file(plan, "/etc/ganeti/instance-image/variants/default.conf").splitlines()[1:] \
        == ['IMAGE_NAME="debian"', 'IMAGE_TYPE="tarball"', 'ARCH="x86_64"']
    assert node_file(plan, "/etc/ganeti/instance-image/variants/tiny.conf").splitlines()[1:] \
        == ['IMAGE_NAME="tiny"', 'IMAGE_TYPE="qcow2"', 'ARCH="i386"']
    base = "http://10.99.0.1:8080/instance-images"
    assert plan["instance_images"][1] == {
        "url": f"{base}/tiny-i386.qcow2", "checksum_url": f"{base}/tiny-i386.qcow2.sha256",
        "path": "/var/cache/ganeti-instance-image/tiny-i386.qcow2"}
    out = tmp_path / "out"
    assert cli.main(["render", str(tmp_path / "cluster.toml"), str(out)]) == 0, \
        capsys.readouterr().err
    copied = out / "instance-images" / "debian-x86_64.tar"
    assert copied.read_bytes() == (tmp_path / "root.tar.gz").read_bytes()
    assert (out / "instance-images/debian-x86_64.tar.sha256").read_text() == \
        f"{hashlib.sha256(copied.read_bytes()).hexdigest()}  debian-x86_64.tar\n"
    assert sorted(p.name for p in (out / "instance-images").iterdir()) == [
        "debian-x86_64.tar", "debian-x86_64.tar.sha256", "plain-x86_64.raw",
        "plain-x86_64.raw.sha256", "tiny-i386.qcow2", "tiny-i386.qcow2.sha256"]
    del data["instance_image"]
    (tmp_path / "cluster.toml").write_bytes(tomli_w.dumps(data).encode())
    assert cli.main(["render", str(tmp_path / "cluster.toml"), str(out)]) == 0
    assert not (out / "instance-images").exists()        # no image left behind


@pytest.mark.parametrize("change, key, words, fix", [
    ({"image": "nope"}, "variants[2].image",
     "names no image of instance_image.images (declared: debian, tiny, plain)",
     "add an [[instance_image.images]] table with that name"),
    ({"image": "tiny", "cdinstall": True}, "variants[2].cdinstall",
     "a variant that installs from a CD writes no image", "remove cdinstall"),
    ({"image": "debian", "nomount": True}, "variants[2].nomount",
     "a tarball image is unpacked into a mounted file system", "remove nomount"),
    ({"name": "cd"}, "variants[2].name", "variant cd is declared twice",
     "give every variant its own name"),
    ({"name": "c+d"}, "variants[2].name", "'c+d' is not a variant name",
     "Ganeti shows it as image+<name>"),
    ({"cdinstall": "yes"}, "variants[2].cdinstall", "expected true or false",
     "without quotes"),
])
def test_a_bad_variant_names_its_key_and_fix(tmp_path, capsys, change, key, words, fix):
    files(tmp_path)
    _error(tmp_path, capsys, {"instance_image": section(**change)},
           f"instance_image.{key}", words, fix)


@pytest.mark.parametrize("image, key, words, fix", [
    ({"file": "missing.raw"}, "file", "'missing.raw' is not a file (looked for",
     "relative to the cluster file or absolute"),
    ({"file": "disk.raw", "format": "qcow2"}, "file", "is not a qcow2 image",
     "set format to what it is"),
    ({"file": "disk.qcow2", "format": "tarball"}, "file", "is not a tar archive",
     "set format to what it is"),
    ({"file": "cluster.toml", "format": "raw"}, "file", "not whole 512-byte sectors",
     "convert it"),
    ({"format": "vmdk"}, "format", "'vmdk' is not one of raw, qcow2, tarball",
     "use one of those"),
    ({"arch": "x86/64"}, "arch", "is not an architecture name", 'arch = "x86_64"'),
    ({"name": "plain"}, "name", "image plain is declared twice", "its own name"),
])
def test_a_bad_image_names_its_key_and_fix(tmp_path, capsys, image, key, words, fix):
    files(tmp_path)
    data = section()
    data["images"].append({"name": "extra", "format": "raw", "file": "disk.raw", **image})
    _error(tmp_path, capsys, {"instance_image": data}, f"instance_image.images[3].{key}",
           words, fix)


def test_an_empty_variant_list_is_refused(tmp_path, capsys):
    _error(tmp_path, capsys, {"instance_image": {"variants": []}}, "instance_image.variants",
           "lists no variant", "leave the key out for the paper's default and cd")


@pytest.mark.parametrize("image, key, words, fix", [
    ({"build": "sid"}, "build", "'sid' is not a release `build` can make an image of (it "
     "builds bullseye, bookworm, trixie)", "name one of those, or give an image `file`"),
    ({"build": "wheezy"}, "build", "'wheezy' is not a release `build` can make", "`file`"),
    ({"build": "bookworm", "file": "disk.raw"}, "file",
     "an image is either built or taken from a file", "remove file, or build"),
    ({"build": "bookworm", "format": "qcow2"}, "format",
     "a built image is a root file system tarball, not 'qcow2'", "leave format out"),
    ({"build": "bookworm", "arch": "i386"}, "arch", "`build` makes x86_64 images only",
     "give an image `file` of that architecture"),
])
def test_a_bad_built_image_names_its_key_and_fix(tmp_path, capsys, image, key, words, fix):
    files(tmp_path)
    data = section()
    data["images"].append({"name": "built", **image})
    _error(tmp_path, capsys, {"instance_image": data}, f"instance_image.images[3].{key}",
           words, fix)


@pytest.mark.integration        # render runs grub-mkimage for the PXE tree
def test_a_built_image_is_placed_by_build_and_kept_by_render(tmp_path, capsys):
    """`build = "<release>"`: a tarball variant whose file `build` makes (its placing is
    tested here with a stand-in file; tests/test_instance_image_vm.py builds the real one)."""
    files(tmp_path)
    data = example_data()
    data["instance_image"] = {"images": [{"name": "debian-12", "build": "bookworm"}],
                              "variants": [{"name": "default", "image": "debian-12"}]}
    cluster = load(tmp_path, data)
    (image,) = cluster.instance_image.images
    assert (image.build, image.format, image.file) == ("bookworm", "tarball", None)
    plan = render.render_plans(cluster)["node1"]
    assert node_file(plan, "/etc/ganeti/instance-image/variants/default.conf").splitlines()[1:] \
        == ['IMAGE_NAME="debian-12"', 'IMAGE_TYPE="tarball"', 'ARCH="x86_64"']
    assert plan["instance_images"][0]["path"] == \
        "/var/cache/ganeti-instance-image/debian-12-x86_64.tar"
    out = tmp_path / "out"
    assert cli.main(["render", str(tmp_path / "cluster.toml"), str(out)]) == 0
    assert not (out / "instance-images").exists()       # not built yet: nothing to place
    assert "warning: instance image debian-12 is made by `build` (build = \"bookworm\"), " \
        f"which has not run into {out}: run ganeti-installer build" in capsys.readouterr().err
    render.render(cluster, str(out), built={"debian-12": str(tmp_path / "root.tar.gz")})
    placed = out / "instance-images" / "debian-12-x86_64.tar"
    assert placed.read_bytes() == (tmp_path / "root.tar.gz").read_bytes()
    assert cli.main(["render", str(tmp_path / "cluster.toml"), str(out)]) == 0, \
        capsys.readouterr().err
    assert placed.read_bytes() == (tmp_path / "root.tar.gz").read_bytes()   # kept
    assert (out / "instance-images/debian-12-x86_64.tar.sha256").read_text().endswith(
        "  debian-12-x86_64.tar\n")
