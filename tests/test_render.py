"""Rendered plans and node files: golden files for both examples, the paper's text for wheezy,
and the plan schema enforced by both validators."""

from __future__ import annotations

import json
import re

import pytest

from installer.agent import planschema
from installer.build import render
from tests.conftest import load_example
from tests.golden import compare_tree

EXAMPLES = {"bookworm": "cluster.toml", "wheezy": "paper-wheezy.toml"}


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def rendered(request, tmp_path_factory):
    cluster = load_example(EXAMPLES[request.param])
    out = tmp_path_factory.mktemp(request.param)
    plans = render.render_plans(cluster)
    render.write_plans(plans, str(out))
    return request.param, cluster, plans, out


def test_golden_node_files_and_plans(rendered):
    name, _, _, out = rendered
    compare_tree(str(out / "nodes"), f"{name}/nodes")
    compare_tree(str(out / "plans"), f"{name}/plans")


def test_browsable_files_keep_their_modes(rendered):
    _, cluster, plans, out = rendered
    for node in cluster.nodes:
        for f in plans[node.name]["files"]:
            path = out / "nodes" / node.name / f["path"].lstrip("/")
            assert oct(path.stat().st_mode & 0o777) == oct(int(f["mode"], 8)), f["path"]
    keys = out / "nodes" / cluster.nodes[0].name / "root/.ssh/authorized_keys"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert (keys.parent.stat().st_mode & 0o777) == 0o700


def test_every_node_file_the_issue_names(rendered):
    _, cluster, plans, out = rendered
    node = cluster.nodes[1]
    root = out / "nodes" / node.name
    assert (root / "etc/hostname").read_text() == f"{node.fqdn}\n"
    hosts = (root / "etc/hosts").read_text()
    for n in cluster.nodes:
        assert re.search(rf"^{re.escape(n.ip)}\s+{re.escape(n.fqdn)} {n.name}$", hosts, re.M)
    assert "127.0.1.1" not in hosts  # Ganeti needs the FQDN on the real address
    assert (root / "etc/modprobe.d/drbd.conf").read_text() == \
        "options drbd minor_count=128 usermode_helper=/bin/true\n"
    modules = (root / "etc/modules").read_text().split("\n")
    assert "drbd" in modules
    keys = (root / "root/.ssh/authorized_keys").read_text()
    assert keys.strip() == cluster.authorized_keys[0]
    naming = [f for f in plans[node.name]["files"] if node.mac in f["content"]]
    assert naming, "no file names the NIC by its MAC"


def test_plans_pass_both_validators(rendered):
    jsonschema = pytest.importorskip("jsonschema")
    schema = planschema.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    _, _, plans, out = rendered
    for name, plan in plans.items():
        on_disk = json.loads((out / "plans" / f"{name}.json").read_text())
        assert on_disk == plan
        assert planschema.check(plan) == []
        assert list(validator.iter_errors(plan)) == []


BROKEN = [
    ("plan_version", 2),
    ("node.mac", "52:54:00:XX:00:01"),
    ("node.role", "boss"),
    ("release.name", "sarge"),
    ("install.method", "pxe"),
    ("install.initramfs_modules", "all"),
    ("files.0.mode", "644"),
    ("files.0.path", "etc/hostname"),
    ("storage.actions.1.flag", "ntfs"),
    ("storage.actions.1.size", -5),
    ("storage.actions.0.match.label", "x"),
    ("hooks.0.name", "../../etc/passwd"),
    ("finish", "halt"),
    ("report.url", "file:///etc/passwd"),
    ("packages.0", "ganeti; rm -rf /"),
]


@pytest.mark.parametrize("key,value", BROKEN, ids=[b[0] for b in BROKEN])
def test_both_validators_refuse_a_broken_plan(bookworm, key, value):
    jsonschema = pytest.importorskip("jsonschema")
    plan = render.render_plans(bookworm)["node1"]
    node = plan
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    assert planschema.check(plan), f"stdlib validator accepted {key}={value!r}"
    assert list(jsonschema.Draft202012Validator(planschema.load_schema()).iter_errors(plan))


def test_dangling_storage_reference_is_refused(bookworm):
    plan = render.render_plans(bookworm)["node1"]
    plan["storage"]["actions"][-1]["device"] = "fmt-nothing"
    assert any("no earlier action defines" in e for e in planschema.check(plan))


def test_missing_key_and_unknown_key(bookworm):
    plan = render.render_plans(bookworm)["node1"]
    del plan["files"]
    plan["extra"] = 1
    errors = planschema.check(plan)
    assert "plan: missing 'files'" in errors and "plan: unknown key 'extra'" in errors


def test_storage_layout(bookworm):
    plan = render.render_plans(bookworm)["node1"]
    parts = {a["id"]: a for a in plan["storage"]["actions"] if a["type"] == "partition"}
    assert parts["root"]["size"] == 10 << 30 and parts["swap"]["size"] == 2 << 30
    assert parts["bios-grub"]["flag"] == "bios_grub" and parts["esp"]["flag"] == "esp"
    assert parts["pv0"]["size"] is None  # the rest of the disk
    vg = next(a for a in plan["storage"]["actions"] if a["type"] == "lvm_volgroup")
    assert vg["name"] == "ganeti" and vg["devices"] == ["pv0"]
    # A disk that cannot hold swap, root and Ganeti's 20 GiB minimum VG is refused.
    assert plan["storage"]["min_disk"] >= (12 + 20) << 30


def test_master_carries_the_provisioning_address(bookworm, tmp_path):
    plans = render.render_plans(bookworm)
    files = {n: {f["path"]: f["content"] for f in p["files"]} for n, p in plans.items()}
    assert "address 10.99.0.1" in files["node1"]["/etc/network/interfaces"]
    assert "iface eth0 inet manual" in files["node2"]["/etc/network/interfaces"]


def test_a_separate_provisioning_host_keeps_its_address():
    from tests.conftest import cluster_from, example_data
    data = example_data()
    data["network"]["provisioning"]["on_master"] = False
    data["network"]["provisioning"]["management_address"] = "192.168.20.250"
    plans = render.render_plans(cluster_from(data))
    interfaces = {f["path"]: f["content"] for f in plans["node1"]["files"]}[
        "/etc/network/interfaces"]
    assert "iface eth0 inet manual" in interfaces and "10.99.0.1" not in interfaces
    # Installed nodes report to the serving host over the management VLAN.
    assert plans["node2"]["report"]["boot_url"] == \
        "http://192.168.20.250:8080/api/v1/nodes/node2"


def test_installed_nodes_report_to_the_master_on_the_management_vlan(bookworm):
    report = render.render_plans(bookworm)["node3"]["report"]
    assert report["url"] == "http://10.99.0.1:8080/api/v1/nodes/node3"
    assert report["boot_url"] == "http://192.168.20.222:8080/api/v1/nodes/node3"


@pytest.mark.parametrize("values, message", [
    ({"on_master": False}, "needs its address on the management VLAN"),
    ({"on_master": False, "management_address": "10.99.0.7"}, "outside the network"),
    ({"on_master": False, "management_address": "192.168.20.223"}, "is node2's address"),
    ({"management_address": "192.168.20.250"}, "only for a separate serving host"),
])
def test_a_separate_serving_host_is_checked(values, message):
    from installer.cluster.errors import ConfigInvalid
    from tests.conftest import cluster_from, example_data
    data = example_data()
    data["network"]["provisioning"].update(values)
    with pytest.raises(ConfigInvalid) as e:
        cluster_from(data)
    text = str(e.value)
    assert "network.provisioning.management_address" in text and message in text, text


def test_proxy_and_packages(bookworm):
    import dataclasses
    cluster = dataclasses.replace(bookworm, apt=dataclasses.replace(
        bookworm.apt, proxy="http://10.99.0.1:3142"))
    plan = render.render_plans(cluster)["node2"]
    files = {f["path"]: f["content"] for f in plan["files"]}
    assert files["/etc/apt/apt.conf.d/01proxy"] == 'Acquire::http::Proxy "http://10.99.0.1:3142";\n'
    assert plan["install"]["proxy"] == "http://10.99.0.1:3142"
    for pkg in ("ganeti", "drbd-utils", "lvm2", "vlan", "bridge-utils", "ntpsec",
                "openssh-server", "linux-image-amd64", "qemu-system-x86"):
        assert pkg in plan["packages"]
