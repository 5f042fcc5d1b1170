"""UEFI BootOrder after the install (issue 16): network boot first, this disk's entry right
after it, from `efibootmgr -v` as firmware prints it. The outputs below follow OVMF's (the
VM tests' firmware) and an office PC's, whose installed OS went ahead of PXE; the commands
are those a dry run lists, which a real run makes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from installer.agent import efiboot
from installer.agent.proc import Runner
from tests.fake_node import DiskState, FakeNode, GiB, partuuid

DISK = "/dev/sda"
ESP = partuuid(DISK, 2)
CREATE = ["efibootmgr", "--create", "--bootnum", "0005", "--disk", DISK, "--part", "2",
          "--label", "Debian (ganeti-installer)", "--loader", r"\EFI\BOOT\BOOTX64.EFI"]

FIXTURES = Path(__file__).parent / "fixtures" / "efibootmgr"
# OVMF, first boot of a blank VM: its own entries, PXE behind the disk.
OVMF = (FIXTURES / "ovmf-blank-vm.txt").read_text()
# An office PC after an earlier install: the OS's entry (this disk's ESP, its GUID in upper
# case) ahead of the NIC, and the firmware's own entry for the disk.
OFFICE = (FIXTURES / "office-pc-os-first.txt").read_text().replace(
    "@ESP_UPPER@", ESP.upper()).replace("@ESP@", ESP)


def commands(efi: str, monkeypatch) -> list[list[str]]:
    node = FakeNode(DiskState(DISK, parts=[(1, 1 << 20, "gi-bios-grub"),
                                           (2, 512 << 20, "gi-esp"), (3, 40 * GiB, "gi-pv0")]))
    node.efi = efi
    monkeypatch.setattr(subprocess, "run", node.run)
    run = Runner(dry_run=True)
    efiboot.keep_network_first(run, DISK)
    return run.commands


def test_ovmf_gets_an_entry_for_the_disk_right_after_the_pxe_it_booted(monkeypatch):
    """BootCurrent (0002, PXEv4) first, the disk next: a local-boot exit does not wait for
    PXEv6's DHCP before the disk; PXEv6 stays ahead of the rest."""
    assert commands(OVMF, monkeypatch) == [
        CREATE, ["efibootmgr", "--bootorder", "0002,0005,0003,0000,0001,0004"]]


@pytest.mark.parametrize("current", ["", "BootCurrent: 0003\n"], ids=["none", "not-in-order"])
def test_no_lasting_network_bootcurrent_puts_every_network_entry_first(current, monkeypatch):
    """No BootCurrent line, or a network BootCurrent that BootOrder does not hold (a one-time
    boot from a firmware menu): no entry is known to stay, so all network entries go first."""
    efi = OVMF.replace("BootCurrent: 0002\n", current).replace(
        "BootOrder: 0000,0001,0002,0003,0004", "BootOrder: 0000,0001,0002,0004")
    assert commands(efi, monkeypatch) == [
        CREATE, ["efibootmgr", "--bootorder", "0002,0003,0005,0000,0001,0004"]]


def test_a_rebuild_drops_our_entry_for_the_esp_it_replaced(monkeypatch):
    """The disk was laid out again: its new ESP has a new partition GUID, and the entry the
    first install made (0005, for the old GUID) goes before the new one is made in its
    place; the firmware's own entries stay."""
    rebuilt = OVMF + (
        "Boot0005* Debian (ganeti-installer)\tHD(2,GPT,0ld-e5p-9u1d,0x1000,0x100000)"
        "/File(\\EFI\\BOOT\\BOOTX64.EFI)\n")
    rebuilt = rebuilt.replace("BootOrder: 0000,0001,0002,0003,0004",
                              "BootOrder: 0002,0005,0003,0000,0001,0004")
    assert commands(rebuilt, monkeypatch) == [
        ["efibootmgr", "--bootnum", "0005", "--delete-bootnum"],
        CREATE, ["efibootmgr", "--bootorder", "0002,0005,0003,0000,0001,0004"]]


def test_an_install_from_a_stick_puts_every_network_entry_first(monkeypatch):
    """BootCurrent is the USB stick: no network entry is known to work, so all go first."""
    stick = OVMF.replace("BootCurrent: 0002", "BootCurrent: 0006") + (
        "Boot0006* UEFI QEMU USB HARDDRIVE stick0\tPciRoot(0x0)/Pci(0x4,0x0)/USB(0,0)\n")
    assert commands(stick, monkeypatch) == [
        CREATE, ["efibootmgr", "--bootorder", "0002,0003,0005,0000,0001,0004"]]


def test_an_os_entry_ahead_of_the_nic_goes_behind_it(monkeypatch):
    """The entry that boots this ESP (matched by its partition GUID, in any case) follows
    the NIC; the firmware's whole-disk entry for the same ESP stays after it."""
    assert commands(OFFICE, monkeypatch) == [["efibootmgr", "--bootorder", "0000,0003,0001"]]


def test_an_order_already_right_changes_nothing(monkeypatch):
    right = OFFICE.replace("BootOrder: 0003,0000,0001", "BootOrder: 0000,0003,0001")
    assert commands(right, monkeypatch) == []


def test_an_inactive_network_entry_is_activated(monkeypatch):
    inactive = OFFICE.replace("Boot0000* Onboard", "Boot0000  Onboard")
    assert commands(inactive, monkeypatch) == [
        ["efibootmgr", "--bootnum", "0000", "--active"],
        ["efibootmgr", "--bootorder", "0000,0003,0001"]]


def test_a_network_entry_left_out_of_bootorder_is_put_first(monkeypatch):
    left_out = OFFICE.replace("BootOrder: 0003,0000,0001", "BootOrder: 0003,0001")
    assert commands(left_out, monkeypatch) == [["efibootmgr", "--bootorder", "0000,0003,0001"]]


def test_no_network_boot_changes_nothing_and_says_what_to_enable(monkeypatch):
    said = []
    node = FakeNode(DiskState(DISK, parts=[(2, 512 << 20, "gi-esp")]))
    node.efi = "BootCurrent: 0001\nBootOrder: 0001\nBoot0001* UEFI: WDC\tHD(2,GPT,x,0x1,0x2)\n"
    monkeypatch.setattr(subprocess, "run", node.run)
    run = Runner(dry_run=True, log=said.append)
    efiboot.keep_network_first(run, DISK)
    assert run.commands == []
    assert said == ["UEFI: no network boot entry in BootOrder; enable network (PXE) boot in "
                    "the firmware setup, or the master cannot reinstall this node"]


@pytest.mark.parametrize("line, network", [
    ("Boot0002* UEFI PXEv4 (MAC:525400200222)\tPciRoot(0x0)/Pci(0x3,0x0)/MAC(525400200222,1)",
     True),
    ("Boot0007* UEFI HTTPv4 (MAC:525400200222)\tPciRoot(0x0)/Pci(0x3,0x0)/MAC(5254,1)/URI()",
     True),
    ("Boot0008* IBA GE Slot 00C8 v1553\tBBS(128,IBA GE Slot 00C8 v1553,0x0)", True),
    ("Boot0009* Network Card\tBBS(Network,,0x0)", True),
    ("Boot0001* UEFI QEMU HARDDISK QM00001 \tPciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0)", False),
    ("Boot0004* EFI Internal Shell\tFvVol(7cb8)/FvFile(7c04)", False),
    ("Boot000A* Windows Boot Manager\tHD(1,GPT,a1b2,0x800,0x32000)/File(\\EFI\\Microsoft)",
     False),
    # no tab between label and device path: the path is still looked at
    ("Boot000B* Realtek PXE B02 D00 PciRoot(0x0)/Pci(0x1c,0x0)/MAC(001a2b3c4d5e,0)", True),
])
def test_network_entries_are_told_by_label_or_device_path(line, network):
    _, entries = efiboot.parse("BootOrder: 0001\n" + line + "\n")
    assert [e.network for e in entries.values()] == [network]


def test_free_number_is_the_first_unused():
    _, entries = efiboot.parse(OVMF)
    assert efiboot.free_number(entries) == "0005"
    assert efiboot.free_number({}) == "0000"


def test_no_entries_at_all_changes_nothing_and_says_why(monkeypatch):
    said = []
    node = FakeNode(DiskState(DISK, parts=[(2, 512 << 20, "gi-esp")]))
    node.efi = "EFI variables are not supported on this system.\n"
    monkeypatch.setattr(subprocess, "run", node.run)
    run = Runner(dry_run=True, log=said.append)
    efiboot.keep_network_first(run, DISK)
    assert run.commands == []
    assert said == ["UEFI: efibootmgr lists no boot entries (EFI variables are not supported "
                    "on this system.); BootOrder left as it is"]
