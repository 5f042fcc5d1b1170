"""A PXE ROM's side of DHCP, for the tests: DISCOVER, and after a proxy-DHCP offer the boot
server REQUEST to port 4011 that names the file to boot.

Run it inside the client's network namespace (it binds port 68 on IFACE):
    dhcp_probe.py IFACE MAC ARCH --ip ADDRESS [--ipxe]
ADDRESS is the one the LAN's own DHCP server gave IFACE (used after a proxy offer). It
prints {"offer": {...}, "boot": {...} | null} as JSON; "file" is the boot file name.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

MAGIC = b"\x63\x82\x53\x63"


def packet(kind: int, xid: bytes, mac: str, arch: int, ipxe: bool, ciaddr: str = "0.0.0.0",
           extra: tuple = ()) -> bytes:
    """A BOOTP request carrying what a PXE ROM sends: vendor class, arch, NDI, UUID."""
    head = struct.pack("!BBBB4sHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                       socket.inet_aton(ciaddr), bytes(4), bytes(4), bytes(4),
                       bytes.fromhex(mac.replace(":", "")), b"", b"")
    opts = [(53, bytes([kind])), (60, f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()),
            (93, struct.pack("!H", arch)), (94, b"\x01\x02\x01"),
            (97, b"\x00" + bytes(range(16))), (55, bytes([1, 3, 43, 60, 66, 67]))]
    if ipxe:
        opts.append((175, b"\x15\x01\x01"))     # iPXE's feature list: its mere presence counts
    opts += list(extra)
    return head + MAGIC + b"".join(bytes([c, len(v)]) + v for c, v in opts) + b"\xff"


def options(data: bytes, start: int = 240) -> dict[int, bytes]:
    out, i = {}, start
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        out[data[i]] = data[i + 2:i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return out


def parse(data: bytes) -> dict:
    opts = options(data)
    boot_file = opts.get(67, b"").rstrip(b"\0").decode() or \
        data[108:236].split(b"\0")[0].decode()
    return {"yiaddr": socket.inet_ntoa(data[16:20]), "siaddr": socket.inet_ntoa(data[20:24]),
            "server": socket.inet_ntoa(opts.get(54, bytes(4))), "file": boot_file,
            "vendor": opts.get(60, b"").decode(errors="replace"),
            "menu_item": _menu_item(opts.get(43, b""))}


def _menu_item(vendor: bytes) -> int | None:
    """The first boot item type of a PXE menu (option 43, sub-option 9), if any."""
    menu = options(vendor + b"\xff", 0).get(9)
    return struct.unpack("!H", menu[:2])[0] if menu else None


def exchange(sock: socket.socket, payload: bytes, to: tuple, xid: bytes) -> dict | None:
    sock.sendto(payload, to)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        sock.settimeout(max(0.1, end - time.monotonic()))
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return None
        if data[0] == 2 and data[4:8] == xid:
            return parse(data)
    return None


def main(argv: list[str]) -> int:
    ifname, mac, arch, ipxe = argv[0], argv[1], int(argv[2]), "--ipxe" in argv
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.bind(("", 68))
    xid = os.urandom(4)
    offer = exchange(sock, packet(1, xid, mac, arch, ipxe), ("255.255.255.255", 67), xid)
    boot = None
    if offer and offer["yiaddr"] == "0.0.0.0":
        # Proxy DHCP: ask the boot server (port 4011) from the address the LAN gave us.
        local = argv[argv.index("--ip") + 1]
        item = offer["menu_item"]
        extra = ((43, b"\x47\x04" + struct.pack("!HH", item, 0) + b"\xff"),) if item else ()
        boot = exchange(sock, packet(3, xid, mac, arch, ipxe, local, extra),
                        (offer["server"], 4011), xid)
    print(json.dumps({"offer": offer, "boot": boot}))
    return 0 if offer else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
