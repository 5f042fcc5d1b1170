"""The cluster file: TOML in, a validated model out, or every problem at once.

Validation is complete before anything is written: `load()` either returns a `Cluster` or
raises `ConfigInvalid` listing each problem with its file, key and fix. Defaults are the
paper's values (VLAN 100 `br-man`, VLAN 200 `br-public`, 10 GiB OS, VG `ganeti`, DRBD
`minor_count=128 usermode_helper=/bin/true`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace

from installer.cluster import instance_images, sizes, source
from installer.cluster.errors import ConfigError, ConfigInvalid, quote
from installer.cluster.instance_images import InstanceImages
from installer.cluster.mirror import host_mirror
from installer.cluster.releases import DEFAULT_RELEASE, RELEASES, Release
from installer.cluster.validate import HOST, PATH, Reader, check_shape


@dataclass(frozen=True)
class Power:
    """How `ganeti-installer power` switches a node: a Wake-on-LAN packet, a person at the
    PC, or its BMC over IPMI (the password stays in its file; only the path is kept)."""
    method: str                         # "wol", "manual" or "ipmi"
    address: str | None = None          # the BMC's address or host name
    port: int = 623
    user: str | None = None
    password_file: str | None = None


WOL = Power("wol")


@dataclass(frozen=True)
class Node:
    """A node as the cluster file names it. While the file is checked, a field may be None
    (invalid, already reported) and role None (not written); a Cluster holds whole nodes."""
    name: str
    fqdn: str
    mac: str
    ip: str
    role: str              # "master", "candidate" or "regular"
    index: int
    power: Power = WOL


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
    # Ganeti's kvm parameters: the paper's, then [hypervisor.kvm]'s (name, value) pairs.
    kvm_params: tuple[tuple[str, str], ...] = ()
    instance_image: InstanceImages = instance_images.PAPER     # the image OS's variants

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
MAX_FQDN = 253              # DNS's limit, and the plan schema's
# Ports a master node or its LAN already uses: below 1024 only HTTP's own 80 is free for
# us; 1811/1814/1815 are ganeti-noded, -confd and -mond, 5080 the RAPI, 11000-14999 the
# DRBD ports Ganeti hands out.
TAKEN_PORTS = {1811: "ganeti-noded", 1814: "ganeti-confd", 1815: "ganeti-mond",
               5080: "Ganeti's RAPI"}
DRBD_PORTS = range(11000, 15000)


def load(path: str, *, host_mirror_fn=host_mirror) -> Cluster:
    """Read and validate a cluster file; raise ConfigInvalid with every problem found."""
    return parse(source.read(path), path, host_mirror_fn=host_mirror_fn)


def parse(data: dict, path: str, *, host_mirror_fn=host_mirror) -> Cluster:
    errors: list[ConfigError] = []
    data, refused = check_shape(data, path, errors)
    r = Reader(data, path, errors, refused)
    release = _release(r)
    management = _management(r)
    public = _public(r, management)
    provisioning = _provisioning(r, management)
    nodes = _nodes(r, management, provisioning)
    cluster_name = r.hostname("cluster.name", default="cluster")
    domain = r.domain("cluster.domain")
    cluster_ip = _cluster_ip(r, management, nodes)
    master = _master(r, nodes)
    _names(r, nodes, cluster_name, domain)
    _serving_host(r, provisioning, management, nodes, cluster_ip)
    hypervisors = _hypervisors(r)
    kvm_params = _kvm_params(r, hypervisors)
    storage = _storage(r)
    drbd = Drbd(r.integer("drbd.minor_count", default=128, low=1, high=255,
                          fix="DRBD 8 accepts 1 to 255 minors; the paper uses 128"),
                r.abspath("drbd.usermode_helper", default="/bin/true"))
    apt = _apt(r, release, host_mirror_fn)
    ntp = _ntp(r)
    authorized = tuple(r.ssh_keys("ssh.authorized_keys"))
    password = r.password_hash("root.password_hash")
    # wheezy is debootstrapped on the node by default: no image builder still targets it.
    method = r.choice("install.method", ("image", "debootstrap"),
                      default="debootstrap" if release.archived else "image")
    # d-i's base-installer/initramfs-tools/driver-policy: every driver, or this PC's only.
    modules = r.choice("install.initramfs_modules", ("most", "dep"), default="most")
    instance_image = instance_images.read(r)
    if errors:
        raise ConfigInvalid(errors)
    assert master is not None       # no errors: there are nodes, and the master is one
    built = tuple(replace(n, fqdn=f"{n.name}.{domain}",
                          role="master" if n.name == master else n.role or "candidate")
                  for n in nodes)
    return Cluster(
        file=path, name=cluster_name, domain=domain, ip=cluster_ip, release=release,
        master=master, hypervisors=hypervisors, management=management, public=public,
        provisioning=provisioning, storage=storage, drbd=drbd, apt=apt, ntp_servers=ntp,
        authorized_keys=authorized, root_password_hash=password, install_method=method,
        initramfs_modules=modules, nodes=built, kvm_params=kvm_params,
        instance_image=instance_image)


def _master(r: Reader, nodes: list[Node]) -> str | None:
    """The master: one of the nodes, and not one the file says must never be master."""
    names = [n.name for n in nodes if n.name]
    master = r.hostname("cluster.master", default=nodes[0].name if nodes else None)
    if master is None or not names or len(names) != len(nodes):
        return master
    if master not in names:
        r.error("cluster.master", f"{quote(master)} is not among the nodes "
                f"({', '.join(names)})", "name one of the [[nodes]] entries as the master")
    for n in nodes:
        if n.name == master and n.role == "regular":
            r.error(f"nodes[{n.index}].role", f"{master} is cluster.master, but role "
                    "\"regular\" says it must never be master",
                    "remove the role of the master, or name another node in cluster.master")
    return master


def _names(r: Reader, nodes: list[Node], cluster_name, domain) -> None:
    """Names DNS and Ganeti can tell apart: no node named like the cluster, FQDNs that fit."""
    if cluster_name and domain and len(f"{cluster_name}.{domain}") > MAX_FQDN:
        r.error("cluster.domain", f"the cluster's FQDN {cluster_name}.{domain[:20]}… is "
                f"longer than {MAX_FQDN} characters", "use a shorter domain or name")
    for n in nodes:
        if n.name is None:
            continue
        if n.name == cluster_name:
            r.error(f"nodes[{n.index}].name", f"{n.name} is also cluster.name (the cluster's "
                    "name is an address of its own that moves between nodes)",
                    "give the node and the cluster different names")
        if domain and len(f"{n.name}.{domain}") > MAX_FQDN:
            r.error(f"nodes[{n.index}].name", f"the FQDN {n.name}.{domain[:20]}… is longer "
                    f"than {MAX_FQDN} characters", "use a shorter node name or domain")


def _serving_host(r: Reader, prov: Provisioning, management: Management,
                  nodes: list[Node], cluster_ip: str) -> None:
    """A separate serving host needs an address on the management VLAN: installed nodes
    report there, and the join reaches them from there."""
    key = "network.provisioning.management_address"
    if prov.on_master is None:      # not true or false: reported already
        return
    if prov.on_master:
        if prov.management_address:
            r.error(key, "is only for a separate serving host (on_master = false): the "
                    "master serves at its own management address", f"remove {key}")
        return
    if not prov.management_address:
        if not r.was_refused(key):
            r.error(key, "a serving host that is not the master (on_master = false) needs "
                    "its address on the management VLAN", f'write {key} = "192.168.20.250"')
        return
    if not r.host_in(key, prov.management_address, management.network,
                     gateway=management.gateway):
        return
    taken = {n.ip: n.name for n in nodes}
    if prov.management_address in taken:
        r.error(key, f"{prov.management_address} is {taken[prov.management_address]}'s "
                "address", "give the serving host an address of its own")
    if prov.management_address == cluster_ip:
        r.error(key, f"{cluster_ip} is also cluster.ip, which the master takes",
                "give the serving host an address of its own")


def _release(r: Reader) -> Release:
    name = r.string("cluster.release", default=DEFAULT_RELEASE)
    if name is not None and name not in RELEASES:
        r.error("cluster.release", f"unknown release {quote(name)}",
                f"use one of {', '.join(RELEASES)}" + r.did_you_mean(name, RELEASES))
    return RELEASES.get(name, RELEASES[DEFAULT_RELEASE])


def _management(r: Reader) -> Management:
    p = "network.management"
    network = r.network(f"{p}.cidr", default="192.168.20.0/24")
    gateway = r.address(f"{p}.gateway", default="192.168.20.1")
    if network and gateway and not r.host_in(f"{p}.gateway", gateway, network):
        gateway = None
    dns = r.address_list(f"{p}.dns", default=[gateway] if gateway else [])
    _dns(r, f"{p}.dns", dns)
    return Management(
        vlan=r.vlan(f"{p}.vlan", default=100),
        bridge=r.bridge(f"{p}.bridge", default="br-man"),
        network=network or ipaddress.IPv4Network("192.168.20.0/24"),
        gateway=gateway or "", dns=tuple(dns))


def _dns(r: Reader, key: str, servers: list[str]) -> None:
    if not servers and r.raw(key) == []:
        r.error(key, "names no DNS server", 'name at least one, e.g. dns = ["192.168.20.1"]')
    for i, server in enumerate(servers):
        a = ipaddress.IPv4Address(server)
        if a.is_unspecified or a.is_multicast or a == ipaddress.IPv4Address("255.255.255.255") \
                or a.is_loopback or a.is_reserved:
            r.error(f"{key}[{i}]", f"{server} is not a DNS server's address",
                    "give the address of a DNS server the nodes can reach")


def _public(r: Reader, management: Management) -> Public:
    vlan = r.vlan("network.public.vlan", default=200)
    if vlan is not None and vlan == management.vlan:
        r.error("network.public.vlan", f"VLAN {vlan} is also the management VLAN",
                "give the public network its own VLAN (the paper uses 100 and 200)")
    bridge = r.bridge("network.public.bridge", default="br-public")
    if bridge is not None and bridge == management.bridge:
        r.error("network.public.bridge", f"bridge {quote(bridge)} is also the management "
                "bridge", "give each network its own bridge (the paper uses br-man and "
                "br-public)")
    return Public(vlan=vlan, bridge=bridge)


def default_range(net: ipaddress.IPv4Network) -> list[str]:
    """The upper half of the network's host addresses, by arithmetic (a /8 has 16M)."""
    return [str(net[net.num_addresses // 2]), str(net[-2])]


def _provisioning(r: Reader, management: Management) -> Provisioning:
    p = "network.provisioning"
    network = r.network(f"{p}.cidr", default="10.99.0.0/24")
    address = r.address(f"{p}.address", default="10.99.0.1")
    if network and address and not r.host_in(f"{p}.address", address, network):
        address = None
    if network and network.overlaps(management.network) and \
            not r.failed("network.management.cidr"):
        same = "is" if network == management.network else "overlaps"
        r.error(f"{p}.cidr", f"{network} {same} the management network {management.network}",
                "the PCs PXE-boot on the untagged VLAN: give it a network of its own, "
                "e.g. 10.99.0.0/24")
    rng = _range(r, f"{p}.range", network, address)
    http_port = r.integer(f"{p}.http_port", default=8080, low=1, high=65535,
                          fix="use a TCP port number")
    _http_port(r, f"{p}.http_port", http_port)
    return Provisioning(
        nic=r.ifname(f"{p}.nic", default="eth0"),
        interface=r.ifname(f"{p}.interface", default="eth0"),
        address=address or "10.99.0.1", network=network or ipaddress.IPv4Network("10.99.0.0/24"),
        dhcp=r.choice(f"{p}.dhcp", ("server", "proxy"), default="server"),
        range=rng, http_port=http_port,
        on_master=r.boolean(f"{p}.on_master", default=True),
        management_address=r.address(f"{p}.management_address", default=None))


def _range(r: Reader, key: str, network, address) -> tuple[str, str]:
    """The DHCP range: two host addresses of the network, in order, without the server's."""
    if network is None and not r.present(key):
        return "", ""           # no default without a network; its own error says why
    default = default_range(network) if network else ["", ""]
    rng = r.address_list(key, default=default)
    if len(rng) != 2:
        if not r.was_refused(key):
            r.error(key, f"expected two addresses, got {len(rng)}",
                    'write range = ["first", "last"] inside the provisioning network')
        return default[0], default[1]
    if network is None:
        return rng[0], rng[1]
    if not all([r.host_in(f"{key}[{i}]", a, network) for i, a in enumerate(rng)]):
        return rng[0], rng[1]
    first, last = (ipaddress.IPv4Address(a) for a in rng)
    if first > last:
        r.error(key, f"the range runs backwards ({rng[0]} after {rng[1]})",
                f'write range = ["{rng[1]}", "{rng[0]}"]')
    elif address and first <= ipaddress.IPv4Address(address) <= last:
        free = [a for a in (network[1], network[-2]) if not first <= a <= last]
        hint = f" (e.g. address = \"{free[0]}\")" if free else ""
        r.error(key, f"the DHCP range {rng[0]}-{rng[1]} holds the server's own address "
                f"{address}", f"move the range or network.provisioning.address{hint}")
    return rng[0], rng[1]


def _http_port(r: Reader, key: str, port: int | None) -> None:
    if port is None:
        return
    if port < 1024 and port != 80:
        r.error(key, f"port {port} is a well-known service's port (below 1024, and not "
                "HTTP's 80)", "use 80 or a port from 1024 up, e.g. 8080")
    elif port in TAKEN_PORTS or port in DRBD_PORTS:
        user = TAKEN_PORTS.get(port, "the DRBD ports Ganeti hands out (11000-14999)")
        r.error(key, f"port {port} is taken on the master by {user}", "use e.g. 8080")


def _nodes(r: Reader, management: Management, prov: Provisioning) -> list[Node]:
    raw = r.table_list("nodes")
    if not raw and not r.was_refused("nodes"):
        r.error("nodes", "the cluster has no nodes", "add at least one [[nodes]] table "
                "with name, mac and ip")
    out = []
    seen: dict[str, dict[str, str]] = {"name": {}, "mac": {}, "ip": {}}
    for i, _ in enumerate(raw):
        k = f"nodes[{i}]"
        node = Node(name=r.hostname(f"{k}.name"), fqdn="", mac=r.mac(f"{k}.mac"),
                    ip=r.address(f"{k}.ip"), role=r.choice(f"{k}.role", ROLES, default=None),
                    index=i, power=_power(r, f"{k}.power"))
        if node.ip and not r.failed("network.management.cidr"):
            r.host_in(f"{k}.ip", node.ip, management.network, gateway=management.gateway)
            if node.ip == prov.address:
                r.error(f"{k}.ip", f"{node.ip} is also network.provisioning.address",
                        "give the node a management address of its own")
        for what in ("name", "mac", "ip"):
            value = getattr(node, what)
            if value is None:
                continue
            if value in seen[what]:
                r.error(f"{k}.{what}", f"{what} {value} is also {seen[what][value]}'s",
                        f"give every node its own {what}")
            else:
                seen[what][value] = k + (f" ({node.name})" if node.name else "")
        out.append(node)
    _shared_bmcs(r, out)
    if management.vlan and prov.nic and len(f"{prov.nic}.{management.vlan}") > 15:
        r.error("network.provisioning.nic", f"{quote(prov.nic + '.' + str(management.vlan))} "
                "is longer than 15 characters, the kernel's limit for interface names",
                "use a shorter NIC name")
    return out


# -- power: how `ganeti-installer power` reaches each PC -----------------------------------

POWER_METHODS = ("wol", "manual")       # as a string; IPMI is a table (it needs a BMC)
IPMI_USER = re.compile(r"[A-Za-z0-9_.@-]{1,16}")    # IPMI 2.0: at most 16 bytes
IPMI_EXAMPLE = ('power = { ipmi = "192.168.20.122", user = "ADMIN", '
                'password_file = "/etc/ganeti-installer/bmc-node1" }')


def _power(r: Reader, key: str) -> Power:
    value = r.raw(key)
    if isinstance(value, dict):
        return _ipmi(r, key)
    if value == "ipmi":
        r.error(key, "IPMI needs the BMC's address, user and password file",
                f"write {IPMI_EXAMPLE}")
        return WOL
    return Power(r.choice(key, POWER_METHODS, default="wol") or "wol")


def _ipmi(r: Reader, key: str) -> Power:
    address = r.string(f"{key}.ipmi", what="the BMC's address")
    if address is not None and not HOST.fullmatch(address):
        r.error(f"{key}.ipmi", f"{quote(address)} is not an address or host name",
                'write the BMC\'s IPv4 address or DNS name, e.g. ipmi = "192.168.20.122"')
        address = None
    user = r.string(f"{key}.user", what="the BMC user's name")
    if user is not None and not IPMI_USER.fullmatch(user):
        r.error(f"{key}.user", f"{quote(user)} is not an IPMI user name",
                "use the BMC's user name: 1 to 16 letters, digits or _ . @ -")
        user = None
    secret = r.string(f"{key}.password_file", what="the path of a file")
    if secret is not None and (not PATH.fullmatch(secret) or
                               any(p in (".", "..") for p in secret.split("/"))):
        r.error(f"{key}.password_file", f"{quote(secret)} is not an absolute file path",
                "write the absolute path of a file (mode 0600) holding only the BMC "
                "password, e.g. /etc/ganeti-installer/bmc-node1; never the password itself")
        secret = None
    port = r.integer(f"{key}.port", default=623, low=1, high=65535,
                     fix="use the BMC's UDP port (623 unless it was changed)")
    return Power("ipmi", address, port or 623, user, secret)


def _shared_bmcs(r: Reader, nodes: list[Node]) -> None:
    """One BMC switches one PC: two nodes naming the same one would switch each other."""
    seen: dict[tuple, Node] = {}
    for n in nodes:
        if n.power.method != "ipmi" or not n.power.address:
            continue
        bmc = (n.power.address.lower(), n.power.port)
        if bmc in seen:
            r.error(f"nodes[{n.index}].power.ipmi", f"BMC {n.power.address} is also "
                    f"nodes[{seen[bmc].index}]'s ({seen[bmc].name})",
                    "give each node the address of its own BMC")
        else:
            seen[bmc] = n


def _cluster_ip(r: Reader, management: Management, nodes: list[Node]) -> str:
    ip = r.address("cluster.ip")
    if ip is None:
        return ""
    r.host_in("cluster.ip", ip, management.network, gateway=management.gateway)
    for node in nodes:
        if node.ip == ip:
            r.error("cluster.ip", f"{ip} is also nodes[{node.index}].ip ({node.name})",
                    "the cluster address floats between master candidates: give it a free "
                    "address of the management network")
    return ip


# The paper's `gnt-cluster modify -H kvm:kernel_path=,initrd_path=,vnc_bind_address=0.0.0.0`:
# guests boot their own kernel, VNC listens on every address.
PAPER_KVM_PARAMS = (("kernel_path", ""), ("initrd_path", ""), ("vnc_bind_address", "0.0.0.0"))
KVM_PARAM = re.compile(r"[a-z][a-z0-9_]{0,39}")
# A value of `-H kvm:a=b,c=d`: Ganeti splits the list at commas, so a value holds none.
KVM_VALUE = re.compile(r"(?:[A-Za-z0-9/][A-Za-z0-9_.+:=/-]{0,199})?")


def _kvm_params(r: Reader, hypervisors: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The paper's kvm parameters with the file's [hypervisor.kvm] over them (a test
    cluster without /dev/kvm sets kvm_path = "/usr/bin/qemu-system-x86_64": Debian's
    /usr/bin/kvm insists on KVM)."""
    table = r.data.get("hypervisor", {}).get("kvm", {})
    if table and "kvm" not in hypervisors:
        r.error("hypervisor.kvm", "kvm parameters, but kvm is not in cluster.hypervisors",
                'add "kvm" to cluster.hypervisors or remove [hypervisor.kvm]')
    params = dict(PAPER_KVM_PARAMS)
    for name, value in table.items():
        key = f"hypervisor.kvm.{name}" if len(name) <= 40 else "hypervisor.kvm"
        if not KVM_PARAM.fullmatch(name):
            r.error(key, f"{quote(name)} is not a Ganeti kvm parameter name",
                    "use the name `gnt-cluster info` lists under kvm, e.g. kvm_path")
        elif not KVM_VALUE.fullmatch(value):
            r.error(key, f"{quote(value)} cannot be given to gnt-cluster modify -H",
                    "use letters, digits and _.+:=/- only (no comma, no leading -), at "
                    "most 200 characters")
        else:
            params[name] = value
    return tuple(params.items())


def _hypervisors(r: Reader) -> tuple[str, ...]:
    hvs = r.strings("cluster.hypervisors", ["kvm"], "hypervisor names")
    for i, hv in enumerate(hvs):
        if hv not in HYPERVISORS:
            r.error(f"cluster.hypervisors[{i}]", f"unknown hypervisor {quote(hv)}",
                    f"use one of {', '.join(HYPERVISORS)}" + r.did_you_mean(hv, HYPERVISORS))
        elif hv in hvs[:i]:
            r.error(f"cluster.hypervisors[{i}]", f"{hv} is named twice",
                    "name each hypervisor once, the default first")
    if not hvs and not r.was_refused("cluster.hypervisors"):
        r.error("cluster.hypervisors", "no hypervisor enabled", 'write hypervisors = ["kvm"]')
    return tuple(hvs) or ("kvm",)


def _ntp(r: Reader) -> tuple[str, ...]:
    servers = r.string_list("ntp.servers", default=[
        "0.debian.pool.ntp.org", "1.debian.pool.ntp.org", "2.debian.pool.ntp.org"])
    if not servers and r.raw("ntp.servers") == []:
        r.error("ntp.servers", "names no NTP server (DRBD and Ganeti need the nodes' clocks "
                "in step)", "name at least one, or leave the key out for Debian's pool")
    return tuple(servers)


def _storage(r: Reader) -> Storage:
    root = r.size("storage.root", default="10GiB", low=2 * sizes.GiB)
    swap = r.size("storage.swap", default="2GiB", low=0)
    selector = r.table("storage.disk")
    if len(selector) > 1:
        r.error("storage.disk", f"names {len(selector)} selectors ({', '.join(selector)})",
                "choose the install disk by one of serial, wwn or path")
    for key, value in selector.items():
        if not value.strip():
            r.error(f"storage.disk.{key}", "must not be empty",
                    "copy the value from `udevadm info` of the disk")
        elif key == "path" and not value.startswith("/dev/disk/by-"):
            r.error("storage.disk.path", f"{quote(value)} is not a stable disk name "
                    "(/dev/sdX and /dev/nvmeXnY change between boots)",
                    "use a /dev/disk/by-path/… or /dev/disk/by-id/… name "
                    "(ls -l /dev/disk/by-path)")
        elif any(c.isspace() or not c.isprintable() for c in value):
            r.error(f"storage.disk.{key}", f"{quote(value)} holds spaces or control "
                    "characters", "copy the value from `udevadm info` of the disk")
    return Storage(root=root, swap=swap, vg=r.vgname("storage.vg", default="ganeti"),
                   disk=dict(selector), wipe=r.boolean("storage.wipe", default=False))


def _apt(r: Reader, release: Release, host_mirror_fn) -> Apt:
    mirror = r.url("apt.mirror")
    security = r.url("apt.security_mirror")
    proxy = r.url("apt.proxy")
    given = r.present("apt.mirror")     # and invalid: reported already
    if mirror is None and not given and release.archived:
        r.error("apt.mirror", f"{release.name} is only on Debian's archive mirror, which this "
                "host's apt sources do not name",
                "set apt.mirror to the URL of your Debian archive mirror (its /debian path)")
    if mirror is None and not given and not release.archived:
        host = host_mirror_fn()
        mirror = host.debian
        security = security or host.security
        if mirror is None:
            r.error("apt.mirror", "not set, and this host's apt sources name no Debian mirror",
                    "set apt.mirror to a Debian mirror URL")
    if release.archived:
        security = None
    return Apt(mirror=mirror or "", security_mirror=security, proxy=proxy)
