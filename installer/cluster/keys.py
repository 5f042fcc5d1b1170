"""Every key a cluster file may hold: a nested map, None for a value, [map] for an array of
tables. Unknown keys are typos until proven otherwise (see validate.check_unknown_keys)."""

SCHEMA = {
    "cluster": {"name": None, "domain": None, "ip": None, "release": None, "master": None,
                "hypervisors": None},
    "network": {
        "management": {"vlan": None, "bridge": None, "cidr": None, "gateway": None, "dns": None},
        "public": {"vlan": None, "bridge": None},
        "provisioning": {"nic": None, "interface": None, "address": None, "cidr": None,
                         "dhcp": None, "range": None, "http_port": None,
                         "on_master": None, "management_address": None},
    },
    "storage": {"root": None, "swap": None, "vg": None, "wipe": None,
                "disk": {"serial": None, "wwn": None, "path": None}},
    "install": {"method": None, "initramfs_modules": None},
    "drbd": {"minor_count": None, "usermode_helper": None},
    "apt": {"mirror": None, "security_mirror": None, "proxy": None},
    "ntp": {"servers": None},
    "ssh": {"authorized_keys": None},
    "root": {"password_hash": None},
    "nodes": [{"name": None, "mac": None, "ip": None, "role": None}],
}
