"""The install stick as a user checks it: its partition table, the files on its ESP (listed
with mtools), GRUB's entries per node, the boot sectors, the same image twice from the same
OUTDIR; the --device refusals; and the agent's side: the plan by MAC, the image from a file."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest
import tomli_w

from installer import cli
from installer.agent import imagefetch, planschema, rules, stick
from installer.build import render, stickdevice, usb
from installer.cluster.errors import InstallerError

from .conftest import example_data, example_path, load_example

MACS = {"node1": "52:54:00:20:02:22", "node2": "52:54:00:20:02:23"}


def fake_outdir(root: Path) -> Path:
    """An OUTDIR with small stand-ins for the netboot and OS images."""
    for rel, data in (("netboot/vmlinuz", b"kernel" * 1000), ("netboot/initrd", b"initrd" * 1000),
                      ("images/bookworm.ext4.zst", b"image" * 1000),
                      ("images/bookworm.ext4.zst.sha256", b"0" * 64 + b"  bookworm.ext4.zst\n")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def plans_with_tokens() -> dict[str, dict]:
    plans = render.render_plans(load_example())
    for name, plan in plans.items():
        plan["report"]["token"] = f"token-of-{name}"
    return plans


def mtools(tool: str, image: Path, *args: str) -> str:
    return subprocess.run([tool, "-i", f"{image}@@{usb.ESP_START * usb.SECTOR}", *args],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    work = tmp_path_factory.mktemp("stick")
    contents = usb.contents(str(fake_outdir(work / "out")), plans_with_tokens())
    image = work / "stick.img"
    return image, usb.build(contents, str(image)), contents


# -- the image (real sgdisk, mkfs.fat, mtools, grub-mkimage) ---------------------------------

@pytest.mark.integration
def test_partition_table_has_bios_boot_and_esp(made):
    image, _, _ = made
    table = subprocess.run(["sgdisk", "--print", str(image)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    rows = [line.split() for line in table if line.strip()[:1].isdigit()]
    assert rows[0][:4] == ["1", "2048", "4095", "1024.0"] and rows[0][5:7] == ["EF02", "BIOS"]
    assert rows[1][:2] == ["2", "4096"] and rows[1][5:] == ["EF00", rules.STICK_LABEL]


@pytest.mark.integration
def test_esp_holds_grub_netboot_image_and_plans(made):
    image, _, _ = made
    listing = set(mtools("mdir", image, "-/", "-b", "::/").split())
    for path in ("::/EFI/BOOT/BOOTX64.EFI", "::/boot/grub/grub.cfg", "::/netboot/vmlinuz",
                 "::/netboot/initrd", "::/images/bookworm.ext4.zst",
                 "::/images/bookworm.ext4.zst.sha256", "::/ganeti-installer/index.json",
                 "::/ganeti-installer/plans/node1.json", "::/ganeti-installer/plans/node3.json"):
        assert path in listing, sorted(listing)
    index = json.loads(mtools("mtype", image, "::/ganeti-installer/index.json"))
    assert index[MACS["node2"]] == "node2" and len(index) == 3


@pytest.mark.integration
def test_stick_plan_reads_the_image_from_the_stick_and_carries_the_token(made):
    image, _, _ = made
    plan = json.loads(mtools("mtype", image, "::/ganeti-installer/plans/node2.json"))
    assert planschema.check(plan) == []
    assert plan["install"]["image"]["path"] == \
        f"{rules.STICK_MOUNT}/images/bookworm.ext4.zst"
    assert plan["report"]["token"] == "token-of-node2"


def test_the_stick_carries_the_instance_images_and_its_plans_read_them_from_it(tmp_path):
    """No network during a stick install: the cluster file's instance images go on the
    stick, and each plan names the stick's copy (the URL stays, for a PXE install)."""
    out = fake_outdir(tmp_path / "out")
    (out / "instance-images").mkdir()
    (out / "instance-images/debian-12-x86_64.tar").write_bytes(b"tar" * 100)
    (out / "instance-images/debian-12-x86_64.tar.sha256").write_text("0" * 64 + "  x\n")
    plans = plans_with_tokens()
    for plan in plans.values():
        plan["instance_images"] = [{
            "url": "http://10.99.0.1:8080/instance-images/debian-12-x86_64.tar",
            "checksum_url": "http://10.99.0.1:8080/instance-images/debian-12-x86_64.tar.sha256",
            "path": "/var/cache/ganeti-instance-image/debian-12-x86_64.tar"}]
    contents = usb.contents(str(out), plans)
    assert contents.files["instance-images/debian-12-x86_64.tar"] == \
        str(out / "instance-images/debian-12-x86_64.tar")
    assert "instance-images/debian-12-x86_64.tar.sha256" in contents.files
    plan = json.loads(contents.files[f"{rules.STICK_DIR}/plans/node2.json"])
    assert planschema.check(plan) == []
    assert plan["instance_images"][0]["stick_path"] == \
        f"{rules.STICK_MOUNT}/instance-images/debian-12-x86_64.tar"
    os.truncate(out / "instance-images/debian-12-x86_64.tar", 1 << 32)     # sparse
    with pytest.raises(InstallerError, match=r"debian-12-x86_64.tar is 4 GiB or more, more "
                       r"than a file on the stick's FAT32 can hold: give that "
                       r"\[\[instance_image.images\]\] entry as qcow2 or a tarball"):
        usb.contents(str(out), plans)
    (out / "instance-images/debian-12-x86_64.tar").unlink()
    with pytest.raises(InstallerError, match="debian-12-x86_64.tar is missing: the stick "
                       "carries it"):
        usb.contents(str(out), plans)


@pytest.mark.integration
def test_grub_has_an_entry_by_mac_and_one_per_node(made):
    image, _, contents = made
    cfg = mtools("mtype", image, "::/boot/grub/grub.cfg")
    fs = subprocess.run(["blkid", "--probe", f"--offset={usb.ESP_START * usb.SECTOR}",
                         "--match-tag", "UUID", "--output", "value", str(image)],
                        check=True, capture_output=True, text=True).stdout.strip()
    assert fs == usb.fs_uuid(contents.volume_id())
    plans = [line.split(f"{rules.PLAN_ARG}=")[1] for line in cfg.splitlines()
             if "linux /netboot/vmlinuz" in line]
    assert plans == [f"usb:{fs}", f"usb:{fs}:node1", f"usb:{fs}:node2", f"usb:{fs}:node3"]
    assert "systemd.mask=systemd-networkd.service" in cfg and "set default=0" in cfg
    (image.parent / "grub.cfg").write_text(cfg)
    subprocess.run(["grub-script-check", str(image.parent / "grub.cfg")], check=True)


@pytest.mark.integration
def test_bios_boot_sectors_point_at_core_img(made):
    image, _, _ = made
    with open(image, "rb") as f:
        mbr = f.read(512)
        f.seek(usb.BIOS_START * 512)
        core = f.read(512)
    assert mbr[510:] == b"\x55\xaa" and mbr[0x1C2] == 0xEE       # GPT's protective entry
    assert struct.unpack_from("<Q", mbr, usb.KERNEL_SECTOR)[0] == usb.BIOS_START
    start, count, segment = struct.unpack_from("<QHH", core, usb.BLOCKLIST)
    assert (start, segment) == (usb.BIOS_START + 1, usb.CORE_SEGMENT) and 0 < count < 2047


@pytest.mark.integration
def test_same_outdir_and_plans_give_the_same_image(made, tmp_path):
    image, digest, contents = made
    again = usb.build(contents, str(tmp_path / "again.img"))
    assert again == digest
    assert os.path.getsize(tmp_path / "again.img") == os.path.getsize(image)


def test_render_without_images_gets_a_clear_error(tmp_path):
    with pytest.raises(InstallerError, match="netboot/vmlinuz is missing: .*ganeti-installer "
                                             "build"):
        usb.contents(str(tmp_path), plans_with_tokens())


# -- --device ----------------------------------------------------------------------------------

def fake_sys(root: Path, name: str, *, removable: str = "0", usb_path: bool = False,
             sectors: int = 8 << 21) -> Path:
    """sysfs as the kernel shows a disk: /sys/block/<name> a link into /sys/devices."""
    bus = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6" if usb_path else "pci0000:00/ata1"
    dev = root / "devices" / bus / name
    (dev / f"{name}1" / "holders").mkdir(parents=True)
    (dev / "holders").mkdir()
    (dev / "removable").write_text(removable + "\n")
    (dev / "size").write_text(f"{sectors}\n")
    (root / "block").mkdir(exist_ok=True)
    (root / "block" / name).symlink_to(dev)
    return root


def proc(root: Path, mounts: str = "", swaps: str = "") -> Path:
    (root / "self").mkdir(parents=True)
    (root / "self" / "mounts").write_text(mounts)
    (root / "swaps").write_text("Filename Type Size Used Priority\n" + swaps)
    return root


@pytest.fixture
def sdb(monkeypatch):
    monkeypatch.setattr(stickdevice, "whole_disk", lambda device, sys_root: "sdb")


def test_a_fixed_disk_is_refused(tmp_path, sdb):
    sys_root = fake_sys(tmp_path / "sys", "sdb")
    with pytest.raises(InstallerError, match=r"/dev/sdb \(sdb\) is not removable and not on "
                                             r"the USB bus.*nothing was written"):
        stickdevice.check("/dev/sdb", 1 << 30, sys_root=str(sys_root),
                          proc_root=str(proc(tmp_path / "proc")))


@pytest.mark.parametrize("how", ["removable", "usb"])
def test_a_removable_or_usb_disk_is_taken(tmp_path, sdb, how):
    sys_root = fake_sys(tmp_path / "sys", "sdb", removable="1" if how == "removable" else "0",
                        usb_path=how == "usb")
    assert stickdevice.check("/dev/sdb", 1 << 30, sys_root=str(sys_root),
                             proc_root=str(proc(tmp_path / "proc"))) == "sdb"


def test_a_stick_with_a_mounted_partition_is_refused(tmp_path, sdb):
    sys_root = fake_sys(tmp_path / "sys", "sdb", removable="1")
    procfs = proc(tmp_path / "proc", mounts="/dev/sdb1 /media/usb vfat rw 0 0\n")
    with pytest.raises(InstallerError, match="/dev/sdb is in use: /dev/sdb1 is mounted on "
                                             "/media/usb; unmount it"):
        stickdevice.check("/dev/sdb", 1 << 30, sys_root=str(sys_root), proc_root=str(procfs))


def test_a_stick_too_small_is_refused(tmp_path, sdb):
    sys_root = fake_sys(tmp_path / "sys", "sdb", removable="1", sectors=2048)
    with pytest.raises(InstallerError, match="holds 1 MiB, the stick image needs 1024 MiB"):
        stickdevice.check("/dev/sdb", 1 << 30, sys_root=str(sys_root),
                          proc_root=str(proc(tmp_path / "proc")))


def test_a_regular_file_is_not_a_device(tmp_path):
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(InstallerError, match="is not a block device"):
        stickdevice.check(str(tmp_path / "x"), 1)


@pytest.mark.integration
def test_a_loop_device_is_refused_and_nothing_is_written(tmp_path, capsys):
    """A real block device that is not a stick: refused before the state directory, the
    image or the device is touched."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(b"\xab" * (1 << 20))
    loop = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                          capture_output=True, text=True).stdout.strip()
    try:
        outdir = fake_outdir(tmp_path / "out")
        render.write_plans(render.render_plans(load_example()), str(outdir))
        code = cli.main(["usb", example_path("cluster.toml"), str(outdir), "--device", loop,
                         "--output", str(tmp_path / "stick.img"),
                         "--state", str(tmp_path / "state")])
        assert code == 1
        assert f"--device {loop} ({os.path.basename(loop)}) is not removable" in \
            capsys.readouterr().err
        assert not (tmp_path / "stick.img").exists() and not (tmp_path / "state").exists()
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)
    assert backing.read_bytes() == b"\xab" * (1 << 20)


@pytest.mark.integration
def test_a_cluster_with_instance_images_gets_them_on_its_stick(tmp_path, capsys):
    """The stick carries the images its nodes would fetch from serve: nothing is fetched
    during a stick install."""
    image = tmp_path / "tiny.raw"
    image.write_bytes(b"\0" * 4096)
    data = example_data()
    data["instance_image"] = {"images": [{"name": "tiny", "format": "raw",
                                          "file": str(image)}]}
    path = tmp_path / "cluster.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    out = fake_outdir(tmp_path / "out")
    assert cli.main(["render", str(path), str(out)]) == 0
    assert cli.main(["usb", str(path), str(out), "--output", str(tmp_path / "stick.img"),
                     "--state", str(tmp_path / "state")]) == 0, capsys.readouterr().err
    listing = set(mtools("mdir", tmp_path / "stick.img", "-/", "-b", "::/").split())
    assert "::/instance-images/tiny-x86_64.raw" in listing, sorted(listing)
    plan = json.loads(mtools("mtype", tmp_path / "stick.img",
                             "::/ganeti-installer/plans/node2.json"))
    assert plan["instance_images"][0]["stick_path"] == \
        f"{rules.STICK_MOUNT}/instance-images/tiny-x86_64.raw"


# -- --all: the master becomes the serving host ------------------------------------------------

@pytest.fixture(scope="module")
def all_stick(tmp_path_factory):
    work = tmp_path_factory.mktemp("all")
    out = fake_outdir(work / "out")
    render.write_plans(render.render_plans(load_example()), str(out))
    (out / "tftp").mkdir()
    (out / "tftp" / "boot.ipxe").write_text("#!ipxe\n")
    (work / "state" / "isos").mkdir(parents=True)      # an ISO serve kept: not carried
    (work / "state" / "isos" / "big.iso").write_bytes(b"iso")
    image = work / "stick.img"
    assert cli.main(["usb", example_path("cluster.toml"), str(out), "--output", str(image),
                     "--state", str(work / "state"), "--all"]) == 0
    return image, work


@pytest.mark.integration
def test_an_all_stick_carries_outdir_state_cluster_file_and_program(all_stick):
    image, _ = all_stick
    listing = set(mtools("mdir", image, "-/", "-b", "::/").split())
    serve = "::/ganeti-installer/serve"
    for path in (f"{serve}/out/plans/node3.json", f"{serve}/out/tftp/boot.ipxe",
                 f"{serve}/state/state.db", f"{serve}/state/ssh/id_ed25519",
                 f"{serve}/cluster.toml",
                 f"{serve}/program/installer/cli.py",
                 f"{serve}/program/installer/master/serve.py",
                 f"{serve}/program/installer/build/templates/node/interfaces.j2"):
        assert path in listing, path
    # The netboot and OS images are on the stick once, where every node reads them.
    assert not any(p.startswith((f"{serve}/out/netboot", f"{serve}/out/images")) for p in listing)
    assert not any("__pycache__" in p or "/state/isos" in p for p in listing)
    conf = mtools("mtype", image, f"{serve}/out/dnsmasq/dnsmasq.conf")
    assert "tftp-root=/var/lib/ganeti-installer/serve/out/tftp" in conf, conf


@pytest.mark.integration
def test_only_the_master_plan_makes_a_serving_host(all_stick):
    image, _ = all_stick
    master = json.loads(mtools("mtype", image, "::/ganeti-installer/plans/node1.json"))
    other = json.loads(mtools("mtype", image, "::/ganeti-installer/plans/node2.json"))
    assert planschema.check(master) == [] and "serving_host" not in other
    copies = {c["to"]: c for c in master["serving_host"]["copies"]}
    assert copies["/var/lib/ganeti-installer/serve/state"]["private"]
    assert copies["/var/lib/ganeti-installer/serve/out/netboot"]["from"] == \
        f"{rules.STICK_MOUNT}/netboot"
    assert list(copies)[0] == "/var/lib/ganeti-installer/serve/out"   # before what goes in it
    unit = next(f for f in master["files"]
                if f["path"] == "/etc/systemd/system/ganeti-installer-serve.service")
    assert "ExecStart=/usr/bin/python3 -m installer.cli serve /etc/ganeti-installer/cluster.toml" \
        in unit["content"]


@pytest.mark.integration
def test_the_carried_state_holds_the_tokens_of_the_stick_plans(all_stick, tmp_path):
    """serve on the master takes the reports of the nodes installed from this stick."""
    image, _ = all_stick
    subprocess.run(["mcopy", "-i", f"{image}@@{usb.ESP_START * usb.SECTOR}",
                    "::/ganeti-installer/serve/state/state.db", str(tmp_path / "state.db")],
                   check=True)
    db = sqlite3.connect(tmp_path / "state.db")
    tokens = dict(db.execute("SELECT name, token FROM nodes"))
    db.close()
    for name in ("node1", "node2", "node3"):
        plan = json.loads(mtools("mtype", image, f"::/ganeti-installer/plans/{name}.json"))
        assert tokens[name] == plan["report"]["token"], name


@pytest.mark.parametrize("change, extra, said", [
    (lambda d: d["network"]["provisioning"].update(on_master=False,
                                                    management_address="192.168.20.2"),
     [], "network.provisioning.on_master is false"),
    (lambda d: d["cluster"].update(release="bullseye"), [], "needs Python 3.11"),
    (lambda d: None, ["--node", "node2"], "leave out --node node2"),
    (lambda d: d["network"]["provisioning"].update(interface="enp3s0"), [],
     'with --all that is the master\'s trunk NIC, nic = "eth0": set interface = "eth0"'),
    (lambda d: d.update(instance_image={"images": [{"name": "tiny", "format": "raw",
                                                    "file": "tiny.raw"}]}), [],
     "instance_image.images[0].file: serve on the master reads the cluster file without"),
])
def test_all_refuses_a_master_that_cannot_serve(tmp_path, capsys, change, extra, said):
    data = example_data()
    change(data)
    path = tmp_path / "cluster.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    (tmp_path / "tiny.raw").write_bytes(b"\0" * 4096)
    assert cli.main(["usb", str(path), str(tmp_path / "out"), "--output",
                     str(tmp_path / "stick.img"), "--state", str(tmp_path / "state"),
                     "--all", *extra]) == 1
    assert said in capsys.readouterr().err
    assert not (tmp_path / "stick.img").exists() and not (tmp_path / "state").exists()


def test_usb_needs_somewhere_to_put_the_stick(tmp_path, capsys):
    assert cli.main(["usb", example_path("cluster.toml"), str(tmp_path)]) == 1
    assert "give --output stick.img" in capsys.readouterr().err


# -- the agent's side --------------------------------------------------------------------------

def stick_root(tmp_path: Path) -> Path:
    folder = tmp_path / rules.STICK_DIR
    (folder / "plans").mkdir(parents=True)
    (folder / "index.json").write_text(json.dumps({mac: n for n, mac in MACS.items()}))
    for name in MACS:
        (folder / "plans" / f"{name}.json").write_text(json.dumps({"node": {"name": name}}))
    return tmp_path


def test_agent_takes_the_plan_of_its_mac(tmp_path):
    plan = stick.load_plan("usb:1a2b-3c4d", ["aa:bb:cc:dd:ee:ff", MACS["node2"]],
                           root=str(stick_root(tmp_path)), log=lambda line: None)
    assert plan["node"]["name"] == "node2"


def test_agent_takes_the_node_the_menu_named(tmp_path):
    plan = stick.load_plan("usb:1A2B-3C4D:node1", [], root=str(stick_root(tmp_path)),
                           log=lambda line: None)
    assert plan["node"]["name"] == "node1"


def test_agent_without_a_known_mac_says_what_to_do(tmp_path):
    with pytest.raises(stick.StickError, match="none of this PC's MACs.*choose the node in "
                                               "the stick's boot menu"):
        stick.load_plan("usb:1A2B-3C4D", ["aa:bb:cc:dd:ee:ff"], root=str(stick_root(tmp_path)))


def test_agent_waits_for_the_stick_then_names_it(monkeypatch):
    lines: list[str] = []
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(stick.time, "monotonic", lambda: next(clock))
    with pytest.raises(stick.StickError, match="no install stick with the file system "
                                               "1A2B-3C4D after 30 s"):
        stick.find("1A2B-3C4D", wait=30, log=lines.append, partitions=lambda u: [],
                   sleep=lambda s: None)
    assert lines == ["waiting for the install stick (FAT volume 1A2B-3C4D)"]


@pytest.mark.integration
def test_image_from_a_file_is_written_with_its_progress(tmp_path):
    raw = os.urandom(1 << 20) * 3
    (tmp_path / "raw").write_bytes(raw)
    subprocess.run(["zstd", "-q", str(tmp_path / "raw"), "-o", str(tmp_path / "img.zst")],
                   check=True)
    (tmp_path / "device").write_bytes(b"")
    lines: list[str] = []
    imagefetch.LocalImage(str(tmp_path / "img.zst"), str(tmp_path / "device"),
                          log=lines.append).run()
    assert (tmp_path / "device").read_bytes() == raw
    assert lines[-1].startswith("os image: 100% written") and len(lines) <= 10


def test_write_copies_the_image_whole_with_its_progress(tmp_path):
    image, device = tmp_path / "stick.img", tmp_path / "device"
    image.write_bytes(os.urandom(9 << 20))
    device.write_bytes(b"")
    lines: list[str] = []
    stickdevice.write(str(image), str(device), log=lines.append)
    assert device.read_bytes() == image.read_bytes()
    assert lines[-1] == f"{device}: 100% written"


def test_offline_reports_stay_in_the_outbox_and_nothing_is_sent(tmp_path, monkeypatch):
    """The stick's install: every report waits on the target, none goes to the network."""
    from installer.agent import client

    def no_network(*args, **kwargs):
        raise AssertionError("a report was sent during an offline install")

    monkeypatch.setattr(client.requests, "post", no_network)
    reporter = client.Reporter("http://10.99.0.1:8080/api/v1/nodes/node1", "tok", attempts=0,
                               log=lambda line: None)
    reporter.attach(str(tmp_path))
    reporter.event("install", "started")
    reporter.event("install", "installed", final=True)
    kept = json.loads((tmp_path / client.OUTBOX).read_text())
    assert [e["status"] for e in kept["events"]] == ["started", "installed"]
    assert kept["token"] == "tok"


def test_the_master_copies_its_serving_host_from_the_stick(tmp_path):
    """OUTDIR, the state (private), the program, serve's unit enabled; a resumed install
    copies again over what an earlier attempt left."""
    from installer.agent import servinghost as agent_side
    from installer.agent.proc import Runner
    from installer.build import servinghost
    mount = tmp_path / "stick"
    for rel in ("netboot/vmlinuz", "images/bookworm.ext4.zst",
                "ganeti-installer/serve/out/plans/node2.json",
                "ganeti-installer/serve/state/ssh/id_ed25519",
                "ganeti-installer/serve/cluster.toml",
                "ganeti-installer/serve/program/installer/cli.py"):
        (mount / rel).parent.mkdir(parents=True, exist_ok=True)
        (mount / rel).write_text(rel)
    plan = servinghost.master_plan(plans_with_tokens()["node1"])
    for copy in plan["serving_host"]["copies"]:
        copy["from"] = copy["from"].replace(rules.STICK_MOUNT, str(mount))
    root = tmp_path / "target"
    out = root / "var/lib/ganeti-installer/serve/out"
    for attempt in range(2):    # the second: a resumed install, cut mid-copy the first time
        if attempt:
            (out.parent / "out.part" / "plans").mkdir(parents=True)
            (out.parent / "out.part" / "plans" / "half.json").write_text("{")
        agent_side.install(plan, str(root), Runner(), log=lambda line: None)
        assert (out / "netboot/vmlinuz").read_text() == "netboot/vmlinuz"
        assert (out / "plans/node2.json").exists() and (out / "images/bookworm.ext4.zst").exists()
    state = root / "var/lib/ganeti-installer/serve/state"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "ssh/id_ed25519").stat().st_mode & 0o777) == "0o600"
    # The plans and the cluster file hold the root password hash.
    assert oct((out / "plans/node2.json").stat().st_mode & 0o777) == "0o600"
    assert oct((out / "netboot/vmlinuz").stat().st_mode & 0o777) == "0o644"
    assert (root / "usr/local/lib/ganeti-installer-serve/installer/cli.py").exists()
    cluster_file = root / "etc/ganeti-installer/cluster.toml"
    assert cluster_file.read_text() == "ganeti-installer/serve/cluster.toml"
    assert oct(cluster_file.stat().st_mode & 0o777) == "0o600"
    link = root / "etc/systemd/system/multi-user.target.wants/ganeti-installer-serve.service"
    assert os.readlink(link) == "/etc/systemd/system/ganeti-installer-serve.service"
    assert not list(root.rglob("*.part")) and not list(root.rglob("half.json"))
