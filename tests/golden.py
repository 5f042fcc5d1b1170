"""Golden-file comparison: UPDATE_GOLDEN=1 rewrites the expected files from the actual ones."""

from __future__ import annotations

import difflib
import os
import shutil

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def _tree(root: str) -> dict[str, str]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def compare_tree(actual_root: str, golden_name: str) -> None:
    """Every file under actual_root equals tests/golden/<golden_name>, and no file is missing."""
    expected_root = os.path.join(GOLDEN, golden_name)
    if UPDATE:
        shutil.rmtree(expected_root, ignore_errors=True)
        shutil.copytree(actual_root, expected_root)
        return
    actual, expected = _tree(actual_root), _tree(expected_root)
    assert sorted(actual) == sorted(expected), (
        f"files differ from {expected_root}: extra {sorted(set(actual) - set(expected))}, "
        f"missing {sorted(set(expected) - set(actual))} (UPDATE_GOLDEN=1 to accept)")
    for rel in sorted(expected):
        if actual[rel] != expected[rel]:
            diff = "".join(difflib.unified_diff(expected[rel].splitlines(True),
                                                actual[rel].splitlines(True),
                                                f"golden/{golden_name}/{rel}", f"actual/{rel}"))
            raise AssertionError(f"{rel} differs from its golden file:\n{diff}")
