"""Every key a cluster file may hold, with the TOML type its value must have: a nested map
is a table, [map] an array of tables, [str] a list of strings, {str: str} a table of any
keys with string values, (str, map) a string or a table. Unknown keys are typos until
proven otherwise, and a value of the wrong type is refused before its meaning is looked at
(see validate.check_shape). Sizes are strings ("10GiB"): a bare number has no unit."""

SCHEMA = {
    "cluster": {"name": str, "domain": str, "ip": str, "release": str, "master": str,
                "hypervisors": [str]},
    "network": {
        "management": {"vlan": int, "bridge": str, "cidr": str, "gateway": str, "dns": [str]},
        "public": {"vlan": int, "bridge": str},
        "provisioning": {"nic": str, "interface": str, "address": str, "cidr": str,
                         "dhcp": str, "range": [str], "http_port": int,
                         "on_master": bool, "management_address": str},
    },
    "storage": {"root": str, "swap": str, "vg": str, "wipe": bool,
                "disk": {"serial": str, "wwn": str, "path": str}},
    "install": {"method": str, "initramfs_modules": str},
    "drbd": {"minor_count": int, "usermode_helper": str},
    "apt": {"mirror": str, "security_mirror": str, "proxy": str},
    "ntp": {"servers": [str]},
    "ssh": {"authorized_keys": [str]},
    "root": {"password_hash": str},
    "nodes": [{"name": str, "mac": str, "ip": str, "role": str,
               # how `ganeti-installer power` switches the PC: "wol", "manual", or its BMC
               "power": (str, {"ipmi": str, "port": int, "user": str, "password_file": str})}],
    # Ganeti's own kvm parameter names (gnt-cluster modify -H kvm:NAME=VALUE): {str: str}
    # is a table whose keys are free and whose values are strings.
    "hypervisor": {"kvm": {str: str}},
    "instance_image": {
        "variants": [{"name": str, "image": str, "cdinstall": bool, "nomount": bool}],
        "images": [{"name": str, "arch": str, "format": str, "file": str, "build": str}],
    },
}

# How messages name a TOML type, and how to write one.
NAMES = {str: "a string", int: "a whole number", bool: "true or false", float: "a number",
         list: "a list", dict: "a table"}
EXAMPLES = {"root": '"10GiB"', "swap": '"2GiB"'}      # sizes: a string with its unit
# A value that may be a string or a table: how to write either.
EITHER = {"power": 'power = "wol" (or "manual"), or power = { ipmi = "<BMC address>", '
                   'user = "…", password_file = "/etc/…" }'}
