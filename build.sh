#!/usr/bin/env bash
# Build everything a cluster needs: ./build.sh [cluster.toml] [outdir]
#   default cluster file: examples/cluster.toml (the paper's three nodes on Debian 12)
#   default outdir:       out/<cluster file name without .toml>
# Installs what is missing first (Debian packages, a Python venv in .venv), then validates
# the cluster file, builds the netboot and OS images (cached by their inputs) and renders
# plans, the PXE tree and the dnsmasq configuration.
#   ./build.sh --deps-only   installs the dependencies and stops (test.sh uses it)
set -euo pipefail
cd "$(dirname "$0")"
top=$PWD

# Debian packages: image building (diskimage-builder's needs), boot loaders for the PXE
# tree, dnsmasq, uftp (serve's ISO multicast), QEMU, VDE (the VM tests' VLAN switch) and
# apt-cacher-ng (their package cache) for the VM tests, xorriso for the ISO the cluster test
# boots, and the tools the tests check files with; ipmitool for `ganeti-installer power`,
# OpenIPMI's simulated BMC (ipmi_sim) for its test, mkntfs for the disk-safety VM test's
# office disk; Debian's own python3-aiohttp, -jinja2, -pexpect and -requests, which a master
# installed from an `usb --all` stick runs serve with (tests/test_serve_debian.py).
APT_PACKAGES=(
  python3 python3-venv python3-pip git sudo debootstrap qemu-utils qemu-system-x86 kpartx
  squashfs-tools cpio zstd xz-utils gdisk dosfstools e2fsprogs curl ca-certificates
  ipxe pxelinux syslinux-common grub-efi-amd64-bin grub-pc-bin grub-common mtools
  dnsmasq-base iproute2 ifupdown bridge-utils vlan debconf busybox openssh-server uftp
  openssh-client procps vde2 iputils-ping apt-cacher-ng ipxe-qemu xorriso
  ovmf ipmitool openipmi ntfs-3g
  python3-aiohttp python3-jinja2 python3-pexpect python3-requests
)

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "build.sh: run as root (image building and package installs need it): sudo $0 $*" >&2
    exit 1
  fi
}

install_debs() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

install_venv() {
  local stamp=.venv/.installed
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating the Python virtual environment .venv"
    python3 -m venv .venv
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing ganeti-installer and its Python dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e ".[build,test]"
    echo "$want" > "$stamp"
  fi
}

need_root "$@"
install_debs
install_venv
if [ "${1:-}" = "--deps-only" ]; then
  exit 0
fi

cluster=${1:-examples/cluster.toml}
name=$(basename "$cluster" .toml)
outdir=${2:-out/$name}
export PATH="$top/.venv/bin:$PATH"
echo "==> validating $cluster"
ganeti-installer validate "$cluster"
echo "==> building into $outdir"
ganeti-installer build "$cluster" "$outdir"
