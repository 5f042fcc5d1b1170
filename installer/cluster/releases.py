"""Debian release profiles: everything that differs between the releases we install.

A profile is data only; templates and the image builder read it. Adding a release is adding
one entry here (and a preseed family if its debconf keys differ).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Release:
    name: str
    number: int
    init: str                      # "systemd" or "sysvinit"
    drbd_utils: str                # drbd8-utils on wheezy, drbd-utils later
    ntp_package: str
    ntp_conf: str                  # where the NTP daemon reads its servers
    kvm_package: str               # the package providing /usr/bin/kvm
    ganeti_package: str            # apt syntax; wheezy takes ganeti from backports
    archived: bool = False         # only on an archive mirror (no security, no updates)
    backports: bool = False        # add <suite>-backports to the apt sources
    preseed_family: str = "modern"
    extra_packages: tuple[str, ...] = field(default_factory=tuple)

    @property
    def security_suite(self) -> str:
        return f"{self.name}-security"

    def node_packages(self, hypervisor: str) -> list[str]:
        """Packages every node of this release needs (the paper's sections 2.5-2.9)."""
        pkgs = [
            self.ganeti_package, self.drbd_utils, "lvm2", "vlan", "bridge-utils",
            "ifupdown", self.ntp_package, "openssh-server", "linux-image-amd64",
            "grub-pc", "grub-efi-amd64-bin", "iproute2", "iputils-ping", "kmod", "udev",
            "ca-certificates",
            "ndisc6",   # a Recommends of ganeti; installs skip Recommends
        ]
        if hypervisor == "kvm":
            # Minimal installs skip Recommends: name the hypervisor or verify fails.
            pkgs.append(self.kvm_package)
        pkgs.extend(self.extra_packages)
        return pkgs


# What a systemd release's node needs beyond Ganeti: its init, fdisk, and the agent's own
# modules for first-boot mode (requests, pyudev).
SYSTEMD_EXTRA = ("systemd-sysv", "python3-cffi-backend", "fdisk", "python3-requests",
                 "python3-pyudev",
                 # The cluster's services: Debian's debootstrap OS definition beside our
                 # `image` one (qemu-img for its qcow2 images), uftp to receive ISOs by
                 # multicast, efibootmgr to keep network boot first on UEFI PCs.
                 "ganeti-instance-debootstrap", "qemu-utils", "uftp", "efibootmgr",
                 # What `serve` needs beyond Python and Ganeti, so that the master installed
                 # from an `usb --all` stick serves the others (dnsmasq-base: the program,
                 # without a service of its own on every node).
                 "python3-aiohttp", "python3-jinja2", "python3-pexpect", "dnsmasq-base")

RELEASES: dict[str, Release] = {
    "wheezy": Release(
        name="wheezy", number=7, init="sysvinit", drbd_utils="drbd8-utils",
        ntp_package="ntp", ntp_conf="/etc/ntp.conf", kvm_package="qemu-kvm",
        ganeti_package="ganeti/wheezy-backports", archived=True, backports=True,
        preseed_family="wheezy",
    ),
    "bullseye": Release(
        name="bullseye", number=11, init="systemd", drbd_utils="drbd-utils",
        ntp_package="ntp", ntp_conf="/etc/ntp.conf", kvm_package="qemu-system-x86",
        ganeti_package="ganeti",
        extra_packages=SYSTEMD_EXTRA,
    ),
    "bookworm": Release(
        name="bookworm", number=12, init="systemd", drbd_utils="drbd-utils",
        ntp_package="ntpsec", ntp_conf="/etc/ntpsec/ntp.conf", kvm_package="qemu-system-x86",
        ganeti_package="ganeti",
        extra_packages=SYSTEMD_EXTRA,
    ),
    "trixie": Release(
        name="trixie", number=13, init="systemd", drbd_utils="drbd-utils",
        ntp_package="ntpsec", ntp_conf="/etc/ntpsec/ntp.conf", kvm_package="qemu-system-x86",
        ganeti_package="ganeti",
        extra_packages=SYSTEMD_EXTRA,
    ),
}

DEFAULT_RELEASE = "bookworm"
