"""Instance images from the real `serve` into the node's image directory
(installer/agent/instancefetch.py): checked by sha256, resumed from a part file, fetched once."""

from __future__ import annotations

import hashlib
import os

import pytest

from installer.agent import instancefetch, retry
from installer.agent.imagefetch import InstallError
from installer.agent.proc import Runner
from installer.build import render
from installer.cluster.instance_images import InstanceImage, InstanceImages, Variant
from tests.serving import Server, render_outdir

pytestmark = pytest.mark.allow_subprocess     # serve makes its SSH key with ssh-keygen

IMAGE = os.urandom(3 * 1024 * 1024 + 77)


@pytest.fixture
def served(tmp_path):
    src = tmp_path / "tiny.raw"
    src.write_bytes(IMAGE)
    out = tmp_path / "out"
    cluster = render_outdir(str(out))
    image = InstanceImage("tiny", "x86_64", "raw", str(src))
    cluster = cluster.__class__(**{**cluster.__dict__, "instance_image": InstanceImages(
        (Variant("default", image),), (image,))})
    render.write_instance_images(cluster, str(out))
    with Server(cluster, str(out), str(tmp_path / "state")) as server:
        url = f"{server.url}/instance-images/tiny-x86_64.raw"
        plan = {"instance_images": [{"url": url, "checksum_url": url + ".sha256",
                                     "path": "/var/cache/ganeti-instance-image/"
                                             "tiny-x86_64.raw"}]}
        yield plan, out, tmp_path / "root"


def waiter() -> retry.Waiter:
    return retry.Waiter(1, log=lambda line: None, sleep=lambda s: None)


def test_an_image_lands_in_the_image_directory_with_its_checksum(served):
    plan, _, root = served
    assert instancefetch.fetch_all(plan, str(root), Runner(), waiter()) == \
        ["/var/cache/ganeti-instance-image/tiny-x86_64.raw"]
    dest = root / "var/cache/ganeti-instance-image/tiny-x86_64.raw"
    assert dest.read_bytes() == IMAGE
    assert (root / "var/cache/ganeti-instance-image/tiny-x86_64.raw.sha256").read_text() == \
        f"{hashlib.sha256(IMAGE).hexdigest()}  tiny-x86_64.raw\n"
    assert instancefetch.fetch_all(plan, str(root), Runner(), waiter()) == []  # not again


def test_a_part_left_by_a_cut_is_resumed_not_fetched_again(served):
    plan, _, root = served
    part = root / "var/cache/ganeti-instance-image/tiny-x86_64.raw.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(IMAGE[:1000000])
    instancefetch.fetch_all(plan, str(root), Runner(), waiter())
    assert (root / "var/cache/ganeti-instance-image/tiny-x86_64.raw").read_bytes() == IMAGE
    assert not part.exists()


def test_a_resumed_part_is_checked_whole(served):
    """A part whose bytes went bad on the node: the range fetch appends the rest, so the
    checksum of the whole catches it (and proves the part was resumed, not fetched anew)."""
    plan, _, root = served
    part = root / "var/cache/ganeti-instance-image/tiny-x86_64.raw.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000000)
    with pytest.raises(InstallError, match="its checksum file says"):
        instancefetch.fetch_all(plan, str(root), Runner(), waiter())
    assert not part.exists()


def test_an_image_that_does_not_match_its_checksum_is_not_kept(served):
    plan, out, root = served
    (out / "instance-images/tiny-x86_64.raw.sha256").write_text("0" * 64 + "  x\n")
    with pytest.raises(InstallError, match=r"tiny-x86_64.raw has sha256 [0-9a-f]{64}, its "
                       r"checksum file says 0{64}: render again on the build host"):
        instancefetch.fetch_all(plan, str(root), Runner(), waiter())
    assert not list((root / "var/cache/ganeti-instance-image").iterdir())


def test_a_dry_run_lists_the_image_and_writes_nothing(served):
    plan, _, root = served
    run = Runner(dry_run=True)
    instancefetch.fetch_all(plan, str(root), run, waiter())
    assert run.files.written == [str(root / "var/cache/ganeti-instance-image/tiny-x86_64.raw")]
    assert not root.exists()


def _stick_plan(tmp_path, data: bytes, checksum: str) -> dict:
    """An image on the mounted stick (usb.stick_plan's stick_path); its URL leads nowhere."""
    stick = tmp_path / "stick" / "instance-images"
    stick.mkdir(parents=True)
    (stick / "tiny-x86_64.raw").write_bytes(data)
    (stick / "tiny-x86_64.raw.sha256").write_text(f"{checksum}  tiny-x86_64.raw\n")
    url = "http://192.0.2.1:8080/instance-images/tiny-x86_64.raw"   # TEST-NET: unreachable
    return {"instance_images": [{"url": url, "checksum_url": url + ".sha256",
                                 "path": "/var/cache/ganeti-instance-image/tiny-x86_64.raw",
                                 "stick_path": str(stick / "tiny-x86_64.raw")}]}


def test_an_install_from_a_stick_copies_the_image_from_it(tmp_path):
    plan = _stick_plan(tmp_path, IMAGE, hashlib.sha256(IMAGE).hexdigest())
    root = tmp_path / "root"
    assert instancefetch.fetch_all(plan, str(root), Runner(), waiter()) == \
        ["/var/cache/ganeti-instance-image/tiny-x86_64.raw"]
    assert (root / "var/cache/ganeti-instance-image/tiny-x86_64.raw").read_bytes() == IMAGE
    assert (root / "var/cache/ganeti-instance-image/tiny-x86_64.raw.sha256").read_text() == \
        f"{hashlib.sha256(IMAGE).hexdigest()}  tiny-x86_64.raw\n"


def test_a_corrupt_image_on_the_stick_is_not_kept(tmp_path):
    plan = _stick_plan(tmp_path, IMAGE, "0" * 64)
    root = tmp_path / "root"
    with pytest.raises(InstallError, match=r"stick/instance-images/tiny-x86_64.raw has sha256 "
                       r"[0-9a-f]{64}, its checksum file says 0{64}: make the stick again"):
        instancefetch.fetch_all(plan, str(root), Runner(), waiter())
    assert not list((root / "var/cache/ganeti-instance-image").iterdir())
