"""The cluster file: TOML in, a validated model out, or every problem at once.

Validation is complete before anything is written: `load()` either returns a `Cluster` or
raises `ConfigInvalid` listing each problem with its file, key and fix. Defaults are the
paper's values (VLAN 100 `br-man`, VLAN 200 `br-public`, 10 GiB OS, VG `ganeti`, DRBD
`minor_count=128 usermode_helper=/bin/true`).
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field

from installer.cluster import keys, sizes
from installer.cluster.errors import ConfigError, ConfigInvalid
from installer.cluster.mirror import host_mirror
from installer.cluster.releases import DEFAULT_RELEASE, RELEASES, Release
from installer.cluster.validate import Reader, check_unknown_keys


@dataclass(frozen=True)
class Node:
    name: str
    fqdn: str
    mac: str
    ip: str
    role: str              # "master", "candidate" or "regular"
    index: int


@dataclass(frozen=True)
class Management:
    vlan: int
    bridge: str
    network: ipaddress.IPv4Network
    gateway: str
    dns: tuple[str, ...]

    @property
    def netmask(self) -> str:
        return str(self.network.netmask)


@dataclass(frozen=True)
class Public:
    vlan: int
    bridge: str


@dataclass(frozen=True)
class Provisioning:
    nic: str                        # the node's trunk NIC, named stably by MAC
    interface: str                  # the serving host's interface on the untagged VLAN
    address: str                    # the serving host's address there (URLs point at it)
    network: ipaddress.IPv4Network
    dhcp: str                       # "server" or "proxy"
    range: tuple[str, str]
    http_port: int
    on_master: bool = True          # the master node takes `address` once it is installed
    management_address: str | None = None   # a separate serving host's address on VLAN 100

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"


@dataclass(frozen=True)
class Storage:
    root: int
    swap: int
    vg: str
    disk: dict                      # selector: {} (largest fixed disk) or serial/wwn/path
    wipe: bool


@dataclass(frozen=True)
class Drbd:
    minor_count: int
    usermode_helper: str


@dataclass(frozen=True)
class Apt:
    mirror: str
    security_mirror: str | None
    proxy: str | None


@dataclass(frozen=True)
class Cluster:
    file: str
    name: str
    domain: str
    ip: str
    release: Release
    master: str
    hypervisors: tuple[str, ...]
    management: Management
    public: Public
    provisioning: Provisioning
    storage: Storage
    drbd: Drbd
    apt: Apt
    ntp_servers: tuple[str, ...]
    authorized_keys: tuple[str, ...]
    root_password_hash: str | None
    install_method: str = "image"
    initramfs_modules: str = "most"     # initramfs-tools' MODULES: d-i's driver policy
    nodes: tuple[Node, ...] = field(default_factory=tuple)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.domain}"

    @property
    def hypervisor(self) -> str:
        return self.hypervisors[0]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def boot_report_url(self) -> str:
        """Where installed nodes report: the serving host on the management VLAN (nodes have
        no address on the untagged VLAN once installed)."""
        prov = self.provisioning
        address = self.node(self.master).ip if prov.on_master else prov.management_address
        return f"http://{address}:{prov.http_port}"


HYPERVISORS = ("kvm", "xen-pvm", "xen-hvm", "lxc", "fake")
ROLES = ("candidate", "regular")


def load(path: str, *, host_mirror_fn=host_mirror) -> Cluster:
    """Read and validate a cluster file; raise ConfigInvalid with every problem found."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigInvalid([ConfigError(path, "", "no such file",
                                         "give the path of a cluster file, e.g. examples/cluster.toml")])
    except tomllib.TOMLDecodeError as e:
        raise ConfigInvalid([ConfigError(path, "", f"not valid TOML ({e})",
                                         "fix the syntax at the line and column named")])
    return parse(data, path, host_mirror_fn=host_mirror_fn)


def parse(data: dict, path: str, *, host_mirror_fn=host_mirror) -> Cluster:
    errors: list[ConfigError] = []
    check_unknown_keys(data, keys.SCHEMA, path, "", errors)
    r = Reader(data, path, errors)
    release = _release(r)
    management = _management(r)
    public = _public(r, management)
    provisioning = _provisioning(r)
    nodes = _nodes(r, management, provisioning)
    cluster_name = r.hostname("cluster.name", default="cluster")
    domain = r.domain("cluster.domain")
    cluster_ip = _cluster_ip(r, management, nodes)
    master = r.string("cluster.master", default=nodes[0][0] if nodes else None)
    names = [n[0] for n in nodes if n[0]]
    if master is not None and names and len(names) == len(nodes) and master not in names:
        r.error("cluster.master", f"'{master}' is not among the nodes ({', '.join(names)})",
                "name one of the [[nodes]] entries as the master")
    _serving_host(r, provisioning, management, nodes)
    hypervisors = _hypervisors(r)
    storage = _storage(r)
    drbd = Drbd(r.integer("drbd.minor_count", default=128, low=1, high=255,
                          fix="DRBD 8 accepts 1 to 255 minors; the paper uses 128"),
                r.abspath("drbd.usermode_helper", default="/bin/true"))
    apt = _apt(r, release, host_mirror_fn)
    ntp = tuple(r.string_list("ntp.servers", default=[
        "0.debian.pool.ntp.org", "1.debian.pool.ntp.org", "2.debian.pool.ntp.org"]))
    authorized = tuple(r.ssh_keys("ssh.authorized_keys"))
    password = r.password_hash("root.password_hash")
    # wheezy is debootstrapped on the node by default: no image builder still targets it.
    method = r.choice("install.method", ("image", "debootstrap"),
                      default="debootstrap" if release.archived else "image")
    # d-i's base-installer/initramfs-tools/driver-policy: every driver, or this PC's only.
    modules = r.choice("install.initramfs_modules", ("most", "dep"), default="most")
    if errors:
        raise ConfigInvalid(errors)
    built = tuple(
        Node(name=n, fqdn=f"{n}.{domain}", mac=mac, ip=ip,
             role="master" if n == master else role, index=i)
        for i, (n, mac, ip, role) in enumerate(nodes))
    return Cluster(
        file=path, name=cluster_name, domain=domain, ip=cluster_ip, release=release,
        master=master, hypervisors=hypervisors, management=management, public=public,
        provisioning=provisioning, storage=storage, drbd=drbd, apt=apt, ntp_servers=ntp,
        authorized_keys=authorized, root_password_hash=password, install_method=method,
        initramfs_modules=modules, nodes=built)


def _serving_host(r: Reader, prov: Provisioning, management: Management | None,
                  nodes: list[tuple]) -> None:
    """A separate serving host needs an address on the management VLAN: installed nodes
    report there, and the join reaches them from there."""
    key = "network.provisioning.management_address"
    if prov.on_master:
        if prov.management_address:
            r.error(key, "is only for a separate serving host (on_master = false); the "
                    "master serves at its own management address", f"remove {key}")
        return
    if not prov.management_address:
        r.error(key, "a serving host that is not the master (on_master = false) needs its "
                "address on the management VLAN", f'write {key} = "192.168.20.250"')
    elif management is not None:
        r.host_in(key, prov.management_address, management.network)
        taken = {n[2]: n[0] for n in nodes}
        if prov.management_address in taken:
            r.error(key, f"{prov.management_address} is {taken[prov.management_address]}'s "
                    "address", "give the serving host an address of its own")


def _release(r: Reader) -> Release:
    name = r.string("cluster.release", default=DEFAULT_RELEASE)
    if name not in RELEASES:
        r.error("cluster.release", f"unknown release '{name}'",
                f"use one of {', '.join(RELEASES)}" + r.did_you_mean(name, RELEASES))
        return RELEASES[DEFAULT_RELEASE]
    return RELEASES[name]


def _management(r: Reader) -> Management:
    network = r.network("network.management.cidr", default="192.168.20.0/24")
    gateway = r.address("network.management.gateway", default="192.168.20.1")
    if network and gateway and ipaddress.IPv4Address(gateway) not in network:
        r.error("network.management.gateway", f"{gateway} is outside {network}",
                "the gateway must be an address of the management network")
    dns = r.address_list("network.management.dns", default=[gateway] if gateway else [])
    return Management(
        vlan=r.vlan("network.management.vlan", default=100),
        bridge=r.ifname("network.management.bridge", default="br-man"),
        network=network or ipaddress.IPv4Network("192.168.20.0/24"),
        gateway=gateway or "", dns=tuple(dns))


def _public(r: Reader, management: Management) -> Public:
    vlan = r.vlan("network.public.vlan", default=200)
    if vlan == management.vlan:
        r.error("network.public.vlan", f"VLAN {vlan} is also the management VLAN",
                "give the public network its own VLAN (the paper uses 100 and 200)")
    bridge = r.ifname("network.public.bridge", default="br-public")
    if bridge == management.bridge:
        r.error("network.public.bridge", f"bridge '{bridge}' is also the management bridge",
                "give each network its own bridge (the paper uses br-man and br-public)")
    return Public(vlan=vlan, bridge=bridge)


def _provisioning(r: Reader) -> Provisioning:
    p = "network.provisioning"
    network = r.network(f"{p}.cidr", default="10.99.0.0/24")
    address = r.address(f"{p}.address", default="10.99.0.1")
    net = network or ipaddress.IPv4Network("10.99.0.0/24")
    if network and address:
        r.host_in(f"{p}.address", address, network)
    hosts = list(net.hosts())
    default_range = [str(hosts[len(hosts) // 2]), str(hosts[-1])] if len(hosts) > 2 else ["", ""]
    rng = r.address_list(f"{p}.range", default=default_range)
    if len(rng) != 2:
        r.error(f"{p}.range", f"expected two addresses, got {len(rng)}",
                'write range = ["first", "last"] inside the provisioning network')
        rng = default_range
    elif network:
        for a in rng:
            r.host_in(f"{p}.range", a, network)
        if address and ipaddress.IPv4Address(rng[0]) <= ipaddress.IPv4Address(address) \
                <= ipaddress.IPv4Address(rng[1]):
            r.error(f"{p}.range", f"the DHCP range {rng[0]}-{rng[1]} holds the server's "
                    f"own address {address}", "move the range or network.provisioning.address")
    nic = r.ifname(f"{p}.nic", default="eth0")
    mode = r.choice(f"{p}.dhcp", ("server", "proxy"), default="server")
    return Provisioning(
        nic=nic, interface=r.ifname(f"{p}.interface", default="eth0"),
        address=address or "10.99.0.1", network=net, dhcp=mode, range=(rng[0], rng[1]),
        http_port=r.integer(f"{p}.http_port", default=8080, low=1, high=65535,
                            fix="use a TCP port number"),
        on_master=r.boolean(f"{p}.on_master", default=True),
        management_address=r.address(f"{p}.management_address", default=None))


def _nodes(r: Reader, management: Management, prov: Provisioning) -> list[tuple]:
    raw = r.table_list("nodes")
    if not raw:
        r.error("nodes", "the cluster has no nodes", "add at least one [[nodes]] table "
                "with name, mac and ip")
    out = []
    seen: dict[str, dict[str, str]] = {"name": {}, "mac": {}, "ip": {}}
    for i, _ in enumerate(raw):
        k = f"nodes[{i}]"
        name = r.hostname(f"{k}.name")
        mac = r.mac(f"{k}.mac")
        ip = r.address(f"{k}.ip")
        role = r.choice(f"{k}.role", ROLES, default="candidate")
        if ip:
            r.host_in(f"{k}.ip", ip, management.network, gateway=management.gateway)
        for what, value in (("name", name), ("mac", mac), ("ip", ip)):
            if value is None:
                continue
            if value in seen[what]:
                r.error(f"{k}.{what}", f"{what} {value} is also {seen[what][value]}'s",
                        f"give every node its own {what}")
            else:
                seen[what][value] = f"{k}" + (f" ({name})" if name else "")
        out.append((name, mac, ip, role))
    if len(management.bridge) and len(f"{prov.nic}.{management.vlan}") > 15:
        r.error("network.provisioning.nic", f"'{prov.nic}.{management.vlan}' is longer than "
                "15 characters, the kernel's limit for interface names", "use a shorter NIC name")
    return out


def _cluster_ip(r: Reader, management: Management, nodes: list[tuple]) -> str:
    ip = r.address("cluster.ip")
    if ip is None:
        return ""
    r.host_in("cluster.ip", ip, management.network, gateway=management.gateway)
    for i, node in enumerate(nodes):
        if node[2] == ip:
            r.error("cluster.ip", f"{ip} is also nodes[{i}].ip ({node[0]})",
                    "the cluster address floats between master candidates: give it a free "
                    "address of the management network")
    return ip


def _hypervisors(r: Reader) -> tuple[str, ...]:
    hvs = r.string_list("cluster.hypervisors", default=["kvm"])
    for hv in hvs:
        if hv not in HYPERVISORS:
            r.error("cluster.hypervisors", f"unknown hypervisor '{hv}'",
                    f"use one of {', '.join(HYPERVISORS)}" + r.did_you_mean(hv, HYPERVISORS))
    if not hvs:
        r.error("cluster.hypervisors", "no hypervisor enabled", 'write hypervisors = ["kvm"]')
    return tuple(hvs) or ("kvm",)


def _storage(r: Reader) -> Storage:
    root = r.size("storage.root", default="10GiB", low=2 * sizes.GiB)
    swap = r.size("storage.swap", default="2GiB", low=0)
    selector = r.table("storage.disk")
    allowed = ("serial", "wwn", "path")
    if len(selector) > 1:
        r.error("storage.disk", f"names {len(selector)} selectors ({', '.join(selector)})",
                "choose the install disk by one of serial, wwn or path")
    for key, value in selector.items():
        if key in allowed and (not isinstance(value, str) or not value):
            r.error(f"storage.disk.{key}", "must be a non-empty string",
                    "copy the value from `udevadm info` of the disk")
    return Storage(root=root, swap=swap, vg=r.vgname("storage.vg", default="ganeti"),
                   disk=dict(selector), wipe=r.boolean("storage.wipe", default=False))


def _apt(r: Reader, release: Release, host_mirror_fn) -> Apt:
    mirror = r.url("apt.mirror")
    security = r.url("apt.security_mirror")
    proxy = r.url("apt.proxy")
    if mirror is None and release.archived:
        r.error("apt.mirror", f"{release.name} is only on Debian's archive mirror, which this "
                "host's apt sources do not name",
                "set apt.mirror to the URL of your Debian archive mirror (its /debian path)")
    if mirror is None and not release.archived:
        host = host_mirror_fn()
        mirror = host.debian
        security = security or host.security
        if mirror is None:
            r.error("apt.mirror", "not set, and this host's apt sources name no Debian mirror",
                    "set apt.mirror to a Debian mirror URL")
    if release.archived:
        security = None
    return Apt(mirror=mirror or "", security_mirror=security, proxy=proxy)
