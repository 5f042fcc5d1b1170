"""The layout docs/architecture.md describes is the one the code has: every import runs the
way its table says, the agent ships alone on the oldest Python it must run on, and every
cluster-file key says where it is read."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from installer.cluster import keys

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "installer"
DOC = REPO / "docs" / "architecture.md"
AGENT_THIRD_PARTY = {"pyudev", "requests", "urllib3"}    # urllib3: requests' own transport
AGENT_FLOOR = "3.9"         # Debian 11's python3: the stock-installer path runs the agent there


def table(heading: str) -> list[list[str]]:
    """The rows of the doc's table whose header row starts with `heading`."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {heading} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def allowed() -> dict[str, set[str]]:
    out = {}
    for side, may, _ in table("side"):
        name = side.strip("`").replace("installer/", "").removesuffix(".py")
        out[name] = {"*"} if may == "everything" else set(re.findall(r"`(\w+)`", may))
    return out


def side_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name == "cli.py" \
        else "top"


def imported_sides(path: Path) -> list[tuple[int, str]]:
    """(line, side) of every import of installer.<side> in a module, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "installer":
                continue
            if len(parts) > 1:
                found.append((node.lineno, parts[1]))
            else:     # from installer import cluster, __version__
                found += [(node.lineno, a.name if (PACKAGE / a.name).is_dir() else "top")
                          for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "installer":
                    found.append((node.lineno, parts[1] if len(parts) > 1 else "top"))
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_side_imports_only_what_the_architecture_allows():
    rules = allowed()
    rules["top"] = {"agent"}      # installer/__init__.py: the version, from the agent
    wrong = []
    for path in modules():
        side = side_of(path)
        assert side in rules, f"{path.relative_to(REPO)}: side '{side}' is not in {DOC.name}"
        for line, target in imported_sides(path):
            if "*" not in rules[side] and target not in rules[side]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports installer.{target}")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_check_sees_an_import_against_the_direction(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from installer.master import state\n")
    assert imported_sides(bad) == [(2, "master")]


def test_the_agent_imports_only_the_standard_library_pyudev_and_requests():
    wrong = []
    for path in sorted((PACKAGE / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in AGENT_THIRD_PARTY \
                        and name.split(".")[:2] != ["installer", "agent"] \
                        and top != "__future__":
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)


def vermin(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "vermin"), f"-t={AGENT_FLOOR}-",
                           "--no-tips",
                           "--violations", "--eval-annotations", *map(str, paths)],
                          capture_output=True, text=True)


@pytest.mark.integration
def test_the_agent_runs_on_its_oldest_python():
    result = vermin(PACKAGE / "agent")
    assert result.returncode == 0, f"the agent needs a Python newer than {AGENT_FLOOR}:\n" \
        f"{result.stdout}{result.stderr}"


@pytest.mark.integration
def test_the_floor_check_refuses_newer_syntax(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    assert vermin(newer).returncode != 0


def documented_keys() -> list[str]:
    return [k for cell, _ in table("key") for k in re.findall(r"`([^`]+)`", cell)]


def schema_keys(tree=keys.SCHEMA, prefix="") -> list[str]:
    out = []
    for name, sub in tree.items():
        key = f"{prefix}{name}"
        if isinstance(sub, list) and isinstance(sub[0], dict):      # an array of tables
            out += [f"{key}[].{k}" for k in sub[0]]
        elif isinstance(sub, dict):
            out += schema_keys(sub, key + ".")
        else:
            out.append(key)
    return out


def test_the_architecture_says_where_every_cluster_file_key_is_read():
    doc = documented_keys()
    missing = []
    for key in schema_keys():
        section = key.rsplit(".", 1)[0]
        covered = key in doc or f"{section}.*" in doc or \
            f".{key.rsplit('.', 1)[1]}" in doc and key.startswith("nodes[]") or \
            any(key.startswith(d.removesuffix("*")) for d in doc if d.endswith(".*"))
        if not covered:
            missing.append(key)
    assert not missing, f"{DOC.name} does not say where these keys are read: {missing}"
