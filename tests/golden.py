"""Golden-file comparison: UPDATE_GOLDEN=1 rewrites the expected files from the actual ones."""

from __future__ import annotations

import difflib
import os
import shutil

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files a plan copies from our own source, byte for byte: checked against that source, not
# kept a second time (per node) under golden/.
SOURCE_COPIES = {"usr/share/ganeti/os/image/lib/osdef/": "installer/agent/osdef/"}


def _copied_from(rel: str) -> str | None:
    """The source file a rendered file must equal, for a file under a SOURCE_COPIES folder."""
    for copied, source in SOURCE_COPIES.items():
        head, sep, tail = rel.partition(copied)
        if sep and head.count("/") <= 1:        # <node>/usr/share/... or usr/share/...
            return os.path.join(REPO, source, tail)
    return None


def _tree(root: str) -> dict[str, str]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def _check_copies(actual: dict[str, str]) -> dict[str, str]:
    """The tree without its source copies, once each equals its source."""
    kept = {}
    for rel, text in actual.items():
        source = _copied_from(rel)
        if source is None:
            kept[rel] = text
            continue
        with open(source, encoding="utf-8") as f:
            assert text == f.read(), f"{rel} is not a copy of {os.path.relpath(source, REPO)}"
    return kept


def compare_tree(actual_root: str, golden_name: str) -> None:
    """Every file under actual_root equals tests/golden/<golden_name> (or, for a copy of our
    own source, that source), and no file is missing."""
    expected_root = os.path.join(GOLDEN, golden_name)
    actual = _check_copies(_tree(actual_root))
    if UPDATE:
        shutil.rmtree(expected_root, ignore_errors=True)
        for rel in actual:         # copied with their modes (git keeps the executable bit)
            os.makedirs(os.path.dirname(os.path.join(expected_root, rel)), exist_ok=True)
            shutil.copy2(os.path.join(actual_root, rel), os.path.join(expected_root, rel))
        return
    expected = _tree(expected_root)
    assert sorted(actual) == sorted(expected), (
        f"files differ from {expected_root}: extra {sorted(set(actual) - set(expected))}, "
        f"missing {sorted(set(expected) - set(actual))} (UPDATE_GOLDEN=1 to accept)")
    for rel in sorted(expected):
        if actual[rel] != expected[rel]:
            diff = "".join(difflib.unified_diff(expected[rel].splitlines(True),
                                                actual[rel].splitlines(True),
                                                f"golden/{golden_name}/{rel}", f"actual/{rel}"))
            raise AssertionError(f"{rel} differs from its golden file:\n{diff}")
