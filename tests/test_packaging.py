"""A non-editable install works: the wheel carries the templates, the plan schema, the
first-boot bundle and the clone's elements/, hooks/ and preseed/, and renders from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, example_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed from a wheel built of this clone, in a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work / "dist"), REPO], check=True)
    wheel = next((work / "dist").glob("ganeti_installer-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(work / "site"), str(wheel)],
                   check=True)
    return work / "site"


def run(site: Path, cwd: Path, code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout


def test_the_installed_package_is_the_wheel_not_the_clone(installed, tmp_path):
    where = run(installed, tmp_path, "import installer; print(installer.__file__)")
    assert where.startswith(str(installed)), where


def test_the_wheel_carries_the_data_trees(installed, tmp_path):
    code = ("from installer.build import resources as r, images; import os; "
            "print(sorted(os.listdir(r.ELEMENTS)), os.access(os.path.join(r.ELEMENTS, "
            "'ganeti-netboot/post-install.d/50-netboot-system'), os.X_OK), "
            "sorted(os.listdir(r.PRESEED)), images.ELEMENTS.is_dir())")
    out = run(installed, tmp_path, code)
    assert out.strip() == ("['ganeti-instance-os', 'ganeti-netboot', 'ganeti-node-os'] True "
                           "['modern', 'wheezy'] True")


def test_an_installed_package_renders_a_cluster(installed, tmp_path):
    out = tmp_path / "out"
    code = (f"import sys; from installer import cli; "
            f"sys.exit(cli.main(['render', {example_path('cluster.toml')!r}, {str(out)!r}]))")
    run(installed, tmp_path, code)
    plan = json.loads((out / "plans" / "node1.json").read_text())
    assert {"name": "50-show-storage", "phase": "pre-reboot"} in \
        [{k: h[k] for k in ("name", "phase")} for h in plan["hooks"]]
    assert (out / "tftp" / "entries").is_dir() and (out / "dnsmasq" / "mode").is_file()
