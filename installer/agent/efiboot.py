"""UEFI boot order: network first, the install disk right after it.

UEFI firmware puts a newly installed OS ahead of network boot, and then a node never asks
the master again: a `reinstall` or a rebuild silently boots the old system. So after GRUB
is in place the agent reads `efibootmgr -v`, and sets BootOrder to the network entry the
install booted from (BootCurrent), then the entry that boots this disk's ESP, then the other
network entries (PXE, HTTP boot), then the rest: a local-boot exit from the first goes
straight to the disk, not through every other NIC entry's DHCP timeout (OVMF alone lists
four). An install that did not boot from the network (a USB stick) puts all network entries
first, in their order. The master then decides at every boot: its local-boot PXE entry
exits, and the firmware goes on to the disk. With no entry for the ESP (GRUB goes to the
removable path, EFI/BOOT/BOOTX64.EFI, without one) the agent makes one, numbered by itself
so that a dry run lists the same BootOrder a real run sets (on a disk laid out again, a dry
run, which writes no partition table, still sees the old ESP and lists neither the new
entry nor the removal of the old one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from installer.agent import rules
from installer.agent.proc import Runner

LOADER = r"\EFI\BOOT\BOOTX64.EFI"
LABEL = "Debian (ganeti-installer)"
# How firmware names network boot: OVMF "UEFI PXEv4 (MAC:...)", "UEFI HTTPv4", vendors
# "IBA GE Slot 00C8 v1553", "Onboard NIC (IPV4)", "Network Card"; and the device path's
# MAC()/IPv4()/IPv6()/URI() nodes, whatever the label says.
NETWORK = re.compile(r"PXE|HTTPv[46]|\bNetwork\b|\bNIC\b|\bIBA\b|\bIPv[46]\b|\bMAC\(|URI\(",
                     re.I)
ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?) ?(.*)$")
CURRENT = re.compile(r"^BootCurrent: *([0-9A-Fa-f]{4})\s*$", re.M)


@dataclass(frozen=True)
class Entry:
    number: str             # four hex digits, as efibootmgr prints them
    active: bool
    label: str
    path: str               # the device path (`efibootmgr -v`), "" when not shown

    @property
    def network(self) -> bool:
        return bool(NETWORK.search(self.label) or NETWORK.search(self.path))

    def boots(self, partuuid: str) -> bool:
        """Whether the entry boots the partition with this GPT partition GUID."""
        return bool(partuuid) and partuuid.lower() in self.path.lower()


def parse(text: str) -> Tuple[List[str], Dict[str, Entry]]:
    """(BootOrder, entries by number) from `efibootmgr -v`'s output."""
    order: List[str] = []
    entries: Dict[str, Entry] = {}
    for line in text.splitlines():
        if line.startswith("BootOrder:"):
            order = [n.upper() for n in line.split(":", 1)[1].strip().split(",") if n]
            continue
        m = ENTRY.match(line)
        if m:
            number, star, rest = m.group(1).upper(), m.group(2), m.group(3)
            label, tab, path = rest.partition("\t")
            # No tab (another efibootmgr's layout): match the device path in the whole line.
            entries[number] = Entry(number, star == "*", label.strip(),
                                    path.strip() if tab else rest)
    return order, entries


def boot_current(text: str) -> Optional[str]:
    """The entry this boot came from (`BootCurrent:`), if efibootmgr printed one."""
    m = CURRENT.search(text)
    return m.group(1).upper() if m else None


def wanted(order: List[str], entries: Dict[str, Entry], disk_entry: str,
           current: Optional[str] = None) -> List[str]:
    """The network entry we booted from, the disk's entry, the other network entries, the
    rest; with no network BootCurrent in BootOrder, all network entries (in their order)
    before the disk."""
    network = network_entries(order, entries)
    rest = [n for n in order if n not in network and n != disk_entry]
    # Only a BootCurrent that BootOrder holds: a one-time boot (a firmware menu's pick) may
    # have no lasting place, and a firmware that drops it would then boot the disk first.
    if current in network and current in order:
        return [current] + [disk_entry] + [n for n in network if n != current] + rest
    return network + [disk_entry] + rest


def network_entries(order: List[str], entries: Dict[str, Entry]) -> List[str]:
    """The network entries in BootOrder's order, then any BootOrder left out."""
    listed = [n for n in order if n in entries and entries[n].network]
    return listed + [n for n, e in entries.items() if e.network and n not in order]


def free_number(entries: Dict[str, Entry]) -> str:
    """The first Boot#### number no entry has (as efibootmgr itself would pick)."""
    return next(f"{i:04X}" for i in range(0x10000) if f"{i:04X}" not in entries)


def esp_partition(run: Runner, disk: str) -> Optional[Tuple[int, str]]:
    """(number, GPT partition GUID) of the disk's ESP, the partition named gi-esp."""
    out = run.read(["partx", "--raw", "--noheadings", "--output", "NR,UUID,NAME", disk],
                   check=False)
    for line in out.splitlines():
        fields = line.split(" ", 2) + ["", ""]
        if fields[2].strip() == rules.GPT_NAME_PREFIX + rules.ESP:
            return int(fields[0]), fields[1].lower()
    return None


def keep_network_first(run: Runner, disk: str) -> None:
    """BootOrder: network, this disk, the rest; an entry for the disk's ESP if none, and
    none left of ours for an ESP that is gone."""
    out = run.read(["efibootmgr", "-v"], check=False)
    order, entries = parse(out)
    if not entries:     # efivarfs not there, or efibootmgr failed: nothing to go by
        run.log(f"UEFI: efibootmgr lists no boot entries ({out.strip()[-200:] or 'no output'})"
                "; BootOrder left as it is")
        return
    network = network_entries(order, entries)
    if not network:
        # Nothing to put first: the firmware has no network boot enabled. Say so; the
        # admin sets it once in the firmware setup (README, "UEFI PCs").
        run.log("UEFI: no network boot entry in BootOrder; enable network (PXE) boot in the "
            "firmware setup, or the master cannot reinstall this node")
        return
    esp = esp_partition(run, disk)
    if esp is None:
        return
    number, partuuid = esp
    # Our entries for an ESP that is gone (an earlier install's, before this one's new
    # partition table): each rebuild would leave one more in the firmware's NVRAM.
    for n in [n for n, e in entries.items() if e.label == LABEL and not e.boots(partuuid)]:
        run.change(["efibootmgr", "--bootnum", n, "--delete-bootnum"])
        del entries[n]
        order = [o for o in order if o != n]
    disk_entry = next((n for n in order if n in entries and entries[n].boots(partuuid)),
                      None) or next((n for n, e in entries.items() if e.boots(partuuid)), None)
    if disk_entry is None:
        disk_entry = free_number(entries)
        run.change(["efibootmgr", "--create", "--bootnum", disk_entry, "--disk", disk,
                    "--part", str(number), "--label", LABEL, "--loader", LOADER])
    new = wanted(order, entries, disk_entry, boot_current(out))
    for n in network:
        if not entries[n].active:   # an inactive entry is skipped by the firmware
            run.change(["efibootmgr", "--bootnum", n, "--active"])
    if new != order:
        run.change(["efibootmgr", "--bootorder", ",".join(new)])
