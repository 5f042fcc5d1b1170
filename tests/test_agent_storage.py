"""The storage commands of a dry run, as exact argv lists, for each disk layout a node may
have: blank, our own earlier install (cut before or after its OS), foreign data with and
without wipe, NVMe partition names, another disk holding the VG. The disk's state comes from
a fake of the read-only tools (tests/fake_node.py); the VM tests run the same actions on real
disks."""

from __future__ import annotations

import subprocess

import pytest

from installer.agent import diskprobe, disks, rules, storage
from installer.agent.diskprobe import partition_path
from installer.agent.disks import Disk
from installer.agent.install import Installer
from installer.agent.proc import Runner
from installer.build import render
from tests.conftest import load_example
from tests.fake_node import GPT, DiskState, FakeNode, GiB, marker, ours

TARGET = "/target"


@pytest.fixture(scope="module")
def plan():
    return render.render_plans(load_example())["node1"]


PLAN = render.render_plans(load_example())["node1"]


def laid_out(disk: str, guid: str = marker(PLAN)) -> list[list[str]]:
    """The bookworm example's layout made on a disk holding nothing of ours."""
    return [["sgdisk", "--clear", f"--disk-guid={guid}",
             "--new=1:0:+1024K", "--typecode=1:EF02", "--change-name=1:gi-bios-grub",
             "--new=2:0:+524288K", "--typecode=2:EF00", "--change-name=2:gi-esp",
             "--new=3:0:+2097152K", "--typecode=3:8200", "--change-name=3:gi-swap",
             "--new=4:0:+10485760K", "--typecode=4:8300", "--change-name=4:gi-root",
             "--new=5:0:0", "--typecode=5:8E00", "--change-name=5:gi-pv0", disk],
            ["partx", "--update", disk],
            ["udevadm", "settle"]]


def volume_group(disk: str) -> list[list[str]]:
    pv = partition_path(disk, 5)
    return [["pvcreate", "--force", "--force", "--yes", pv], ["vgcreate", "ganeti", pv]]


def file_systems(disk: str) -> list[list[str]]:
    p = lambda n: partition_path(disk, n)
    return [["mkfs.vfat", "-F", "32", "-n", "EFI", p(2)], ["mkswap", "--label", "swap", p(3)],
            ["mkfs.ext4", "-F", "-q", "-L", "root", p(4)]]


def mounts(disk: str) -> list[list[str]]:
    return [["mount", partition_path(disk, 4), f"{TARGET}/"],
            ["mount", partition_path(disk, 2), f"{TARGET}/boot/efi"]]


def everything(disk: str, guid: str = marker(PLAN)) -> list[list[str]]:
    return laid_out(disk, guid) + volume_group(disk) + file_systems(disk) + mounts(disk)


def teardown(disk: str, parts: int, vgs: list[str], *, drbd: bool = False,
             maps: list[str] = ()) -> list[list[str]]:
    return [["drbdsetup", "down", "all"]] * drbd + \
        [["vgchange", "--activate", "n", vg] for vg in vgs] + \
        [["dmsetup", "remove", "--retry", name] for name in maps] + \
        [["wipefs", "--all", "--force", partition_path(disk, n)] for n in range(1, parts + 1)] + \
        [["wipefs", "--all", "--force", disk], ["sgdisk", "--zap-all", disk]]


def foreign(devnode: str) -> DiskState:
    """An office PC's disk: NTFS, and an LVM volume group 'data' on its second partition."""
    return DiskState(devnode, parts=[(1, 100 * GiB, "Basic data partition"),
                                     (2, 400 * GiB, "")],
                     signatures={devnode: list(GPT), f"{devnode}1": ["ntfs"],
                                 f"{devnode}2": ["LVM2_member"]})


def sata(dev: str = "/dev/sda", gib: int = 500) -> Disk:
    return Disk(dev, gib * GiB, model="WDC", bus="ata")


def wiping(plan: dict) -> dict:
    return dict(plan, storage=dict(plan["storage"], actions=[
        dict(a, wipe=True) if a["type"] == "disk" else a for a in plan["storage"]["actions"]]))


def dry_run(plan: dict, node: FakeNode, found: list[Disk], monkeypatch, *, wipe=False,
            drbd=False, maps=()):
    """(the disk chosen, the commands a dry run of identify and storage lists), with DRBD
    loaded or not and `maps` as device-mapper maps (not LVM's) holding the disk."""
    plan = wiping(plan) if wipe else plan
    monkeypatch.setattr(subprocess, "run", node.run)
    monkeypatch.setattr(diskprobe, "drbd_loaded", lambda: drbd)
    monkeypatch.setattr(diskprobe, "foreign_holders", lambda disk: list(maps))
    monkeypatch.setattr(disks, "boot_medium_disks", lambda: set())
    inst = Installer(plan, None, target=TARGET, dry_run=True, log=lambda line: None,
                     list_disks=lambda: found, macs=lambda: [plan["node"]["mac"]])
    inst.identify()
    inst.storage_stage()
    return inst.disk.devnode, inst.run.commands


def test_blank_disk_gets_the_whole_layout(plan, monkeypatch):
    node = FakeNode(DiskState("/dev/sda"))
    assert dry_run(plan, node, [sata()], monkeypatch) == ("/dev/sda", everything("/dev/sda"))


def test_nvme_partitions_are_named_with_p(plan, monkeypatch):
    node = FakeNode(DiskState("/dev/nvme0n1"), DiskState("/dev/sda"))
    found = [Disk("/dev/nvme0n1", 1000 * GiB, bus="nvme"), sata(gib=250)]
    disk, commands = dry_run(plan, node, found, monkeypatch)
    assert disk == "/dev/nvme0n1" and commands == everything("/dev/nvme0n1")
    assert ["mkfs.ext4", "-F", "-q", "-L", "root", "/dev/nvme0n1p4"] in commands


def test_a_usb_stick_beside_the_disk_is_not_touched(plan, monkeypatch):
    node = FakeNode(DiskState("/dev/sda"), foreign("/dev/sdb"))
    found = [sata(), Disk("/dev/sdb", 2000 * GiB, bus="usb", removable=True)]
    disk, commands = dry_run(plan, node, found, monkeypatch)
    assert disk == "/dev/sda" and commands == everything("/dev/sda")
    assert not any("/dev/sdb" in " ".join(argv) for argv in node.ran)   # not even read


def test_our_earlier_install_cut_before_its_os_keeps_table_and_vg(plan, monkeypatch):
    node = FakeNode(ours("/dev/sda", plan), vgs=[("ganeti", "/dev/sda5")])
    assert dry_run(plan, node, [sata()], monkeypatch) == \
        ("/dev/sda", file_systems("/dev/sda") + mounts("/dev/sda"))


def test_our_earlier_install_with_its_os_done_keeps_the_file_systems(plan, monkeypatch):
    node = FakeNode(ours("/dev/sda", plan, journal_done=["os"]), vgs=[("ganeti", "/dev/sda5")])
    assert dry_run(plan, node, [sata()], monkeypatch) == ("/dev/sda", mounts("/dev/sda"))


def test_an_earlier_install_for_this_cluster_is_torn_down_then_laid_out(plan, monkeypatch):
    """A reinstall: the disk GUID names this cluster but another plan (a new token)."""
    earlier = dict(plan, report=dict(plan["report"], token="the-last-install's"))
    node = FakeNode(ours("/dev/sda", earlier, journal_done=["os", "configure"]),
                    vgs=[("ganeti", "/dev/sda5")])
    assert dry_run(plan, node, [sata()], monkeypatch)[1] == \
        teardown("/dev/sda", 5, ["ganeti"]) + everything("/dev/sda")


def test_a_reinstall_stops_drbd_then_the_vg_then_other_maps(plan, monkeypatch):
    """Top down: DRBD sits on the VG's volumes, a dm-crypt or kpartx map on a partition."""
    earlier = dict(plan, report=dict(plan["report"], token="the-last-install's"))
    node = FakeNode(ours("/dev/sda", earlier), vgs=[("ganeti", "/dev/sda5")])
    commands = dry_run(plan, node, [sata()], monkeypatch, drbd=True, maps=["sda4_crypt"])[1]
    assert commands == teardown("/dev/sda", 5, ["ganeti"], drbd=True, maps=["sda4_crypt"]) + \
        everything("/dev/sda")


def test_another_clusters_install_is_refused(plan, monkeypatch):
    other = dict(plan, cluster=dict(plan["cluster"], name="cluster.other.org"))
    node = FakeNode(ours("/dev/sda", other), vgs=[("ganeti", "/dev/sda5")])
    with pytest.raises(storage.ForeignData, match=r"\(/dev/sda: gpt, gpt, PMBR; .*/dev/sda5: "
                                                  r"LVM2_member \(gi-pv0\); another cluster's "
                                                  r"install, or one older than the disk "
                                                  r"marker\); nothing was written"):
        dry_run(plan, node, [sata()], monkeypatch)
    assert not any(argv[0] in ("wipefs", "sgdisk", "vgchange") and "--all" in argv or
                   argv[0] in ("sgdisk", "vgchange") for argv in node.ran)


def test_our_install_with_another_vg_on_its_partition_is_refused(plan, monkeypatch):
    earlier = dict(plan, report=dict(plan["report"], token="the-last-install's"))
    node = FakeNode(ours("/dev/sda", earlier), vgs=[("backup", "/dev/sda5")])
    with pytest.raises(storage.ForeignData, match=r"; volume group backup\); nothing was "
                                                  r"written"):
        dry_run(plan, node, [sata()], monkeypatch)


def test_our_install_with_an_mdraid_member_on_a_partition_is_refused(plan, monkeypatch):
    earlier = dict(plan, report=dict(plan["report"], token="the-last-install's"))
    state = ours("/dev/sda", earlier)
    state.signatures["/dev/sda5"] = ["linux_raid_member"]
    node = FakeNode(state)
    with pytest.raises(storage.ForeignData, match=r"/dev/sda5: linux_raid_member \(gi-pv0\)\); "
                                                  r"nothing was written"):
        dry_run(plan, node, [sata()], monkeypatch)


def test_on_disk_tells_a_disks_partitions_from_another_disks():
    assert diskprobe.on_disk("/dev/sda5", "/dev/sda") and diskprobe.on_disk("/dev/sda", "/dev/sda")
    assert diskprobe.on_disk("/dev/nvme0n1p5", "/dev/nvme0n1")
    assert not diskprobe.on_disk("/dev/sdaa1", "/dev/sda")
    assert not diskprobe.on_disk("/dev/nvme0n10p1", "/dev/nvme0n1")
    # A disk whose name ends in a digit: its partitions have a p, a longer name is another
    # disk (a teardown there would deactivate another disk's VG).
    assert not diskprobe.on_disk("/dev/nvme0n12", "/dev/nvme0n1")
    assert not diskprobe.on_disk("/dev/loop10", "/dev/loop1")
    assert diskprobe.on_disk("/dev/loop1p2", "/dev/loop1")


def test_holders_that_are_not_lvms_are_named_from_sysfs(tmp_path):
    """/sys/class/block as the kernel lays it out: an LVM volume and a dm-crypt map on
    partitions of sda; a map on sdb is not sda's."""
    def holder(part: str, dm: str, name: str, uuid: str) -> None:
        disk = part.rstrip("0123456789")
        (tmp_path / disk / part / "holders").mkdir(parents=True, exist_ok=True)
        (tmp_path / disk / part / "holders" / dm).touch()
        (tmp_path / dm / "dm").mkdir(parents=True)
        (tmp_path / dm / "dm" / "name").write_text(name + "\n")
        (tmp_path / dm / "dm" / "uuid").write_text(uuid + "\n")
    holder("sda5", "dm-0", "ganeti-disk0", "LVM-abc")
    holder("sda4", "dm-1", "sda4_crypt", "CRYPT-LUKS2-abc")
    holder("sdb1", "dm-2", "other", "CRYPT-LUKS2-def")
    assert diskprobe.foreign_holders("/dev/sda", str(tmp_path)) == ["sda4_crypt"]
    assert diskprobe.foreign_holders("/dev/sdc", str(tmp_path)) == []


def test_our_partitions_of_other_sizes_are_laid_out_again(plan, monkeypatch):
    state = ours("/dev/sda", plan)
    state.parts[3] = (4, 20 * GiB, "gi-root")       # root was 20 GiB in an earlier plan
    node = FakeNode(state)
    assert dry_run(plan, node, [sata()], monkeypatch)[1] == everything("/dev/sda")


def test_foreign_data_is_refused_and_nothing_would_be_run(plan, monkeypatch):
    node = FakeNode(foreign("/dev/sda"), vgs=[("data", "/dev/sda2")])
    with pytest.raises(storage.ForeignData) as e:
        dry_run(plan, node, [sata()], monkeypatch)
    assert str(e.value) == (
        "refusing to install on /dev/sda (500.0 GiB, WDC, ata): it holds data ganeti-installer "
        "did not create (/dev/sda: gpt, gpt, PMBR; /dev/sda1: ntfs (Basic data partition); "
        "/dev/sda2: LVM2_member (no name); volume group data); nothing was written. Set "
        "storage.wipe = true in "
        "the cluster file (or `rebuild` the node) to overwrite it")


def test_foreign_data_with_wipe_is_torn_down_first(plan, monkeypatch):
    node = FakeNode(foreign("/dev/sda"), vgs=[("data", "/dev/sda2")])
    assert dry_run(plan, node, [sata()], monkeypatch, wipe=True)[1] == \
        teardown("/dev/sda", 2, ["data"]) + everything("/dev/sda", marker(wiping(plan)))


def test_a_vg_of_the_same_name_on_another_disk_is_refused(plan, monkeypatch):
    node = FakeNode(DiskState("/dev/sda"), vgs=[("ganeti", "/dev/sdb1")])
    with pytest.raises(storage.StorageError, match=r"a volume group 'ganeti' already exists on "
                                                   r"another disk \(/dev/sdb1\); remove it or "
                                                   r"name another storage.vg"):
        dry_run(plan, node, [sata()], monkeypatch)


def test_first_boot_claims_the_largest_free_block(plan, monkeypatch):
    node = FakeNode(DiskState("/dev/sda", parts=[(1, 10 * GiB, "")]),
                    free=(20973568, 104857600))     # 50 GiB after debian-installer's 10
    monkeypatch.setattr(subprocess, "run", node.run)
    run = storage.Runner(dry_run=True)
    st = storage.Storage(plan, sata(), run, "/")
    st.claim_free(lambda name: None, rules.MIN_VG_BYTES)
    assert run.commands == [
        ["sfdisk", "--append", "--no-reread", "--no-tell-kernel", "/dev/sda"],
        ["partx", "--add", "--nr", "0", "/dev/sda"], ["udevadm", "settle"],
        ["pvcreate", "--force", "--force", "--yes", "/dev/sda?"],
        ["vgcreate", "ganeti", "/dev/sda?"]]


def test_first_boot_refuses_free_space_under_the_vg_minimum(plan, monkeypatch):
    node = FakeNode(DiskState("/dev/sda", parts=[(1, 10 * GiB, "")]), free=(20973568, 2048))
    monkeypatch.setattr(subprocess, "run", node.run)
    run = storage.Runner(dry_run=True)
    st = storage.Storage(plan, sata(), run, "/")
    with pytest.raises(storage.StorageError, match=r"has 0.0 GiB free after the installed "
                                                   r"system; volume group 'ganeti' needs at "
                                                   r"least 20.0 GiB; nothing was written"):
        st.claim_free(lambda name: None, rules.MIN_VG_BYTES)
    assert run.commands == []


@pytest.mark.integration
def test_the_fake_reads_our_earlier_install_as_the_real_tools_do(plan, tmp_path, monkeypatch):
    """The fake's partx and wipefs answers against the real tools on a loop device whose
    GPT the real sgdisk wrote with the layout's own command."""
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "40G", str(image)], check=True)
    subprocess.run(laid_out(str(image))[0], check=True, stdout=subprocess.DEVNULL)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    try:
        real = read_disk(dev)
    finally:
        subprocess.run(["losetup", "--detach", dev])
    with monkeypatch.context() as m:
        m.setattr(subprocess, "run", FakeNode(ours(dev, plan)).run)
        fake = read_disk(dev)
    assert fake == real and real[2] == "ours"


class NoLvm(Runner):
    """The real tools, but LVM's view empty: the build host has no device-mapper, and a
    loop device holds no active VG."""

    def read(self, argv, **kw):
        return "" if argv[0] == "pvs" else super().read(argv, **kw)


@pytest.mark.integration
def test_the_disk_marker_is_read_back_from_a_real_gpt(plan, tmp_path):
    """An earlier install's disk, as sgdisk writes it: blkid reads its GUID back without a
    mount, and owner() tells this cluster's earlier install from this install and from
    another cluster's."""
    earlier = dict(plan, report=dict(plan["report"], token="the-last-install's"))
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "40G", str(image)], check=True)
    subprocess.run(laid_out(str(image), marker(earlier))[0], check=True,
                   stdout=subprocess.DEVNULL)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    other = dict(plan, cluster=dict(plan["cluster"], name="cluster.other.org"))
    try:
        assert diskprobe.disk_guid(Runner(), dev) == marker(earlier)
        assert diskprobe.owner(NoLvm(), dev, marker(earlier), "ganeti") == "ours"
        assert diskprobe.owner(NoLvm(), dev, marker(plan), "ganeti") == "earlier"
        assert diskprobe.owner(NoLvm(), dev, marker(other), "ganeti").endswith(
            "another cluster's install, or one older than the disk marker")
    finally:
        subprocess.run(["losetup", "--detach", dev])


def read_disk(dev: str) -> tuple:
    """partx's partitions (the last one's size aside: the fake does not know the disk's),
    wipefs's signatures, and whose the disk is."""
    layout = [dict(p, size=None) if p["number"] == 5 else p
              for p in diskprobe.layout(Runner(), dev)]
    return layout, diskprobe.signatures(Runner(), dev), \
        diskprobe.owner(Runner(), dev, marker(PLAN), "ganeti")


# -- the action types: schema, references, dispatch ------------------------------------------

def test_each_type_has_the_fields_of_its_schema_entry():
    from dataclasses import fields

    from installer.agent import planschema
    defs = planschema.load_schema()["$defs"]
    assert set(storage.ACTIONS) == {"disk", "partition", "lvm_volgroup", "format", "mount"}
    for name, cls in storage.ACTIONS.items():
        assert {f.name for f in fields(cls)} == set(defs[name]["properties"]) - {"type"}, name


def test_the_plan_parses_into_its_types_in_order(plan):
    actions = storage.parse(plan["storage"]["actions"])
    assert [(type(a).__name__, a.id) for a in actions] == [
        ("DiskAction", rules.DISK_ID), ("Partition", rules.BIOS_GRUB), ("Partition", rules.ESP),
        ("Partition", rules.SWAP), ("Partition", rules.ROOT), ("Partition", rules.PV),
        ("LvmVolgroup", rules.vg_id("ganeti")), ("Format", rules.format_id(rules.ESP)),
        ("Format", rules.format_id(rules.SWAP)), ("Format", rules.format_id(rules.ROOT)),
        ("Mount", rules.mount_id(rules.ROOT)), ("Mount", rules.mount_id(rules.ESP))]


@pytest.mark.parametrize("index, field, value, error", [
    (10, "device", "root",
     ("plan.storage.actions[10].device: 'root' is a partition action; a mount names a "
      "format there")),
    (7, "volume", "vg-ganeti",
     ("plan.storage.actions[7].volume: 'vg-ganeti' is a lvm_volgroup action; a format "
      "names a partition there")),
    (6, "devices", ["pv0", "fmt-root"],
     "plan.storage.actions[6]: refers to 'fmt-root', which no earlier action defines"),
    (2, "id", "bios-grub", "plan.storage.actions[2]: id 'bios-grub' is used twice"),
])
def test_references_name_earlier_actions_of_the_right_type(plan, index, field, value, error):
    actions = [dict(a) for a in plan["storage"]["actions"]]
    assert storage.problems(actions) == []
    actions[index][field] = value
    assert error in storage.problems(actions)


def test_an_action_missing_a_field_is_an_error_naming_it(plan):
    actions = [dict(a) for a in plan["storage"]["actions"]]
    del actions[7]["fstype"]
    with pytest.raises(storage.StorageError, match=r"storage action 'fmt-esp' \(format\) has "
                                                   r"no fstype: the plan does not match"):
        storage.parse(actions)
