"""SSH keys and serve's known_hosts: fingerprints against `ssh-keygen -lf`, lookups against
`ssh-keygen -F` (OpenSSH's own reading of the file), and a rebuilt node's keys replacing the
old ones."""

from __future__ import annotations

import subprocess
import threading

import pytest

from installer.cluster import sshkeys

# Every key here is made by ssh-keygen, and fingerprints are checked against it.
pytestmark = pytest.mark.integration


def keygen(tmp_path, kind: str, name: str | None = None) -> str:
    path = tmp_path / (name or f"key_{kind}")
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "someone@somewhere",
                    "-f", str(path)], check=True)
    return (tmp_path / f"{path.name}.pub").read_text().strip()


def keygen_says(line: str, tmp_path, hash_: str = "sha256") -> str:
    """The fingerprint field of `ssh-keygen -l -E <hash> -f key.pub`."""
    pub = tmp_path / "probe.pub"
    pub.write_text(line + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-E", hash_, "-f", str(pub)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_fingerprint_is_what_ssh_keygen_prints(tmp_path, kind):
    line = keygen(tmp_path, kind)
    assert sshkeys.fingerprint(line) == keygen_says(line, tmp_path)
    assert "MD5:" + sshkeys.parse(line).md5() == keygen_says(line, tmp_path, "md5")
    assert sshkeys.parse(line).printed_type == {"ed25519": "ED25519", "rsa": "RSA",
                                                "ecdsa": "ECDSA"}[kind]


def test_parse_keeps_type_blob_and_comment(tmp_path):
    line = keygen(tmp_path, "ed25519")
    key = sshkeys.parse(line)
    assert (key.type, key.line, key.comment) == ("ssh-ed25519", " ".join(line.split()[:2]),
                                                 "someone@somewhere")


@pytest.mark.parametrize("bad", [
    "", "ssh-ed25519", "ssh-foo AAAA", "ssh-ed25519 AAAA$(reboot)", "ssh-ed25519 not base64!",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPnn78oiACkS/RuNEECbmuqN5JM5YuykzKa8sbZ8ACtY\nx",
])
def test_parse_refuses_what_is_not_a_key(bad):
    with pytest.raises(ValueError):
        sshkeys.parse(bad)


def test_a_key_under_the_wrong_type_is_refused(tmp_path):
    blob = keygen(tmp_path, "ed25519").split()[1]
    with pytest.raises(ValueError, match="does not hold a ssh-rsa key"):
        sshkeys.parse(f"ssh-rsa {blob}")


def test_reported_keys_trust_each_keys_own_type(tmp_path):
    ed, rsa = keygen(tmp_path, "ed25519"), keygen(tmp_path, "rsa")
    keys = sshkeys.reported_keys({"ed25519": " ".join(ed.split()[:2]), "whatever": rsa})
    assert [k.type for k in keys] == ["ssh-ed25519", "ssh-rsa"]
    assert all(k.comment == "" for k in keys)
    with pytest.raises(ValueError, match="no SSH host keys"):
        sshkeys.reported_keys({})
    assert [k.type for k in sshkeys.cluster_keys(keys)] == ["ssh-rsa"]


def test_host_patterns():
    assert sshkeys.host_patterns(["Node2.Project.edu", "node2", "192.168.20.223"]) == \
        ["node2.project.edu", "node2", "192.168.20.223"]
    assert sshkeys.host_patterns(["127.0.0.3", "127.0.0.3"], 2222) == ["[127.0.0.3]:2222"]
    for bad in ["node2 evil", "-oProxyCommand=x", "a,b", ""]:
        with pytest.raises(ValueError):
            sshkeys.host_patterns([bad])


def ssh_keygen_finds(known_hosts, host: str) -> set[str]:
    """The key lines OpenSSH's own lookup (`ssh-keygen -F`) finds for host."""
    done = subprocess.run(["ssh-keygen", "-F", host, "-f", str(known_hosts)],
                          capture_output=True, text=True)
    return {" ".join(ln.split()[1:3]) for ln in done.stdout.splitlines()
            if ln and not ln.startswith("#")}


def test_replace_pins_all_names_and_replaces_a_rebuilt_nodes_keys(tmp_path):
    kh = tmp_path / "ssh" / "known_hosts"
    old = sshkeys.parse(keygen(tmp_path, "ed25519", "old"))
    new = sshkeys.parse(keygen(tmp_path, "ed25519", "new"))
    other = sshkeys.parse(keygen(tmp_path, "ed25519", "other"))
    names = ["node2.project.edu", "node2", "192.168.20.223"]
    sshkeys.replace(str(kh), sshkeys.host_patterns(["node3", "192.168.20.224"]), [other])
    sshkeys.replace(str(kh), sshkeys.host_patterns(names), [old])
    for name in names:
        assert ssh_keygen_finds(kh, name) == {old.line}
    assert kh.stat().st_mode & 0o777 == 0o600

    sshkeys.replace(str(kh), sshkeys.host_patterns(names), [new])       # rebuilt
    for name in names:
        assert ssh_keygen_finds(kh, name) == {new.line}
    assert old.blob not in kh.read_text()
    assert ssh_keygen_finds(kh, "node3") == {other.line}                # others stay
    assert sshkeys.keys_for(str(kh), "192.168.20.224") == [other]


def test_replace_keeps_other_names_of_a_shared_line_and_comments(tmp_path):
    kh = tmp_path / "known_hosts"
    key = sshkeys.parse(keygen(tmp_path, "ed25519"))
    kh.write_text(f"# admin's note\nnode2,oldalias {key.line}\n|1|abc=|def= {key.line}\n")
    sshkeys.replace(str(kh), ["node2"], [])
    assert kh.read_text() == f"# admin's note\noldalias {key.line}\n|1|abc=|def= {key.line}\n"


def test_ports_other_than_22_are_looked_up_as_ssh_does(tmp_path):
    kh = tmp_path / "known_hosts"
    key = sshkeys.parse(keygen(tmp_path, "ed25519"))
    sshkeys.replace(str(kh), sshkeys.host_patterns(["127.0.0.3"], 2222), [key])
    assert ssh_keygen_finds(kh, "[127.0.0.3]:2222") == {key.line}
    assert ssh_keygen_finds(kh, "127.0.0.3") == set()


def test_concurrent_replaces_lose_nothing(tmp_path):
    kh = str(tmp_path / "known_hosts")
    key = sshkeys.parse(keygen(tmp_path, "ed25519"))
    names = [f"node{i}" for i in range(24)]
    threads = [threading.Thread(target=sshkeys.replace, args=(kh, [n], [key])) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(sshkeys.keys_for(kh, n) == [key] for n in names)
