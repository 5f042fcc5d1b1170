"""A node's new MAC written into the cluster file (`rebuild --mac`, issue 16): that value
alone changes, comments and layout kept, and every bad MAC is refused naming the file, the
key and the fix, before anything is written."""

from __future__ import annotations

import os
import shutil
import tomllib

import pytest

from installer.cluster import macedit
from installer.cluster.errors import ConfigInvalid, InstallerError
from tests.conftest import example_path

NEW = "52:54:00:20:02:99"


@pytest.fixture
def cluster_file(tmp_path):
    path = tmp_path / "cluster.toml"
    shutil.copyfile(example_path("cluster.toml"), path)
    os.chmod(path, 0o640)
    return path


def test_only_that_nodes_mac_changes_and_the_rest_of_the_text_is_kept(cluster_file):
    before = cluster_file.read_text()
    change = macedit.prepare(str(cluster_file), "node2", "52-54-00-20-02-99")
    assert (change.key, change.old, change.new) == ("nodes[1].mac", "52:54:00:20:02:23", NEW)
    assert cluster_file.read_text() == before           # prepare writes nothing
    macedit.write(change)
    after = cluster_file.read_text()
    assert after == before.replace('mac = "52:54:00:20:02:23"', f'mac = "{NEW}"')
    assert "# VLAN 100" in after                        # comments kept
    old, new = tomllib.loads(before), tomllib.loads(after)
    old["nodes"][1]["mac"] = NEW
    assert new == old
    assert os.stat(cluster_file).st_mode & 0o777 == 0o640
    assert change.said() == (f"{cluster_file}: nodes[1].mac 52:54:00:20:02:23 -> {NEW} "
                             "(the old MAC is forgotten)")
    assert [n.mac for n in change.cluster.nodes][1] == NEW


def test_a_mac_spelled_otherwise_in_the_file_is_found(cluster_file):
    text = cluster_file.read_text().replace('"52:54:00:20:02:24"', "'5254.0020.0224'")
    cluster_file.write_text(text)
    change = macedit.prepare(str(cluster_file), "node3", NEW)
    assert change.new_text == text.replace("'5254.0020.0224'", f"'{NEW}'")


@pytest.mark.parametrize("mac, key, words", [
    ("zz:54", "nodes[1].mac", "--mac 'zz:54' for node2 is not a MAC address; write six hex "
                              "bytes"),
    ("52:54:00:20:02:22", "nodes[0].mac", "52:54:00:20:02:22 is the MAC of node1, not free "
                                          "for node2; check the MAC of node2's new NIC"),
    ("52:54:00:20:02:23", "nodes[1].mac", "node2 has MAC 52:54:00:20:02:23 already"),
    ("01:00:5e:00:00:01", "nodes[1].mac", "is a multicast or broadcast address"),
])
def test_a_bad_mac_is_refused_naming_the_key_and_nothing_is_written(cluster_file, mac, key,
                                                                    words):
    before = cluster_file.read_bytes()
    with pytest.raises(ConfigInvalid) as e:
        macedit.prepare(str(cluster_file), "node2", mac)
    (error,) = e.value.errors
    assert (error.file, error.key) == (str(cluster_file), key)
    assert words in str(error)
    assert cluster_file.read_bytes() == before


def test_an_unknown_node_is_refused_naming_the_nodes(cluster_file):
    with pytest.raises(ConfigInvalid, match="no node 'node9'; use one of node1, node2, node3"):
        macedit.prepare(str(cluster_file), "node9", NEW)


def test_the_old_text_goes_back_whole(cluster_file):
    before = cluster_file.read_text()
    change = macedit.prepare(str(cluster_file), "node2", NEW)
    macedit.write(change)
    macedit.restore(change)
    assert cluster_file.read_text() == before
    assert sorted(os.listdir(cluster_file.parent)) == ["cluster.toml"]     # no temporaries


def test_an_edit_made_since_prepare_is_not_overwritten(cluster_file):
    """rebuild --mac prepares the change before evacuating, and writes it hours later: an
    edit made in between is kept, and the write refused naming the file and the fix."""
    change = macedit.prepare(str(cluster_file), "node2", NEW)
    edited = cluster_file.read_text() + "# an edit made while the node was evacuated\n"
    cluster_file.write_text(edited)
    with pytest.raises(InstallerError, match=f"{cluster_file} changed since node2's new MAC "
                                             "was prepared from it: nothing was written.*run "
                                             f"rebuild --mac {NEW} again"):
        macedit.write(change)
    assert cluster_file.read_text() == edited


def test_the_old_text_goes_back_only_over_the_new(cluster_file):
    change = macedit.prepare(str(cluster_file), "node2", NEW)
    macedit.write(change)
    edited = cluster_file.read_text().replace("# VLAN 100", "# VLAN 100, edited")
    cluster_file.write_text(edited)
    with pytest.raises(InstallerError, match=f"{cluster_file} changed since the new MAC was "
                                             "written into it, so it is left as it is: by "
                                             'hand, set nodes\\[1\\].mac back to '
                                             '"52:54:00:20:02:23"'):
        macedit.restore(change)
    assert cluster_file.read_text() == edited
