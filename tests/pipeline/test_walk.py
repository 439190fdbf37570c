"""Listing the input: sorted, streaming, skipping ours and hidden files, errors as entries."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from pipeline.walk import (
    LINK_OUTSIDE,
    UNREADABLE,
    Entry,
    check_locations,
    iter_files,
    iter_listed,
)
from tasks.errors import UsageError
from tasks.fileio import TEMP_MARKER


def _tree(root: Path) -> Path:
    for rel in ("b.dcm", "a.dcm", "sub/z.dcm", "sub/deeper/y.dcm", "a-sub/x.dcm",
                ".hidden", f".a.dcm{TEMP_MARKER}1-ab", ".git/config"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * len(rel))
    return root


def _rels(entries: list[Entry]) -> list[str]:
    return [e.rel for e in entries]


def test_top_level_only_without_recursion(tmp_path: Path) -> None:
    assert _rels(list(iter_files(_tree(tmp_path)))) == ["a.dcm", "b.dcm"]


def test_recursive_sorted_and_deterministic(tmp_path: Path) -> None:
    entries = list(iter_files(_tree(tmp_path), recursive=True))
    assert _rels(entries) == ["a-sub/x.dcm", "a.dcm", "b.dcm", "sub/deeper/y.dcm", "sub/z.dcm"]
    assert all(e.ok and e.size == len(e.rel) and e.mtime_ns for e in entries)


def test_is_a_lazy_generator(tmp_path: Path) -> None:
    assert isinstance(iter_files(_tree(tmp_path), recursive=True), types.GeneratorType)


def test_symlinks_followed_dangling_and_fifo_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path / "in")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.dcm").write_bytes(b"12345")
    os.symlink(outside / "o.dcm", root / "link.dcm")
    os.symlink(outside, root / "linkdir")
    os.symlink(tmp_path / "missing", root / "dangling.dcm")
    os.mkfifo(root / "pipe.dcm")
    os.symlink(root / "a.dcm", root / "inside.dcm")
    entries = {e.rel: e for e in iter_files(root, recursive=True, follow_outside=True)}
    assert entries["link.dcm"].ok and entries["link.dcm"].size == 5
    assert entries["linkdir/o.dcm"].ok
    assert entries["inside.dcm"].ok
    # by default, links that leave the input folder are skipped with a reason
    default = {e.rel: e for e in iter_files(root, recursive=True)}
    assert default["inside.dcm"].ok
    for rel in ("link.dcm", "linkdir"):
        assert default[rel].error_kind == LINK_OUTSIDE
        assert default[rel].error is not None and "--follow-symlinks" in default[rel].error
    assert not any(rel.startswith("linkdir/") for rel in default)
    assert entries["dangling.dcm"].error_kind == UNREADABLE
    assert entries["dangling.dcm"].error == "dangling symbolic link"
    assert entries["pipe.dcm"].error == "not a regular file (FIFO)"


def test_directory_loop_is_reported_once(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.symlink(root / "sub", root / "sub" / "deeper" / "back")
    entries = {e.rel: e for e in iter_files(root, recursive=True)}
    assert entries["sub/deeper/back"].error == "folder loop through a symbolic link"
    assert len(entries) == 6


_LIST_PROBE = """
import json, sys
from pathlib import Path
from pipeline.walk import iter_files
print(json.dumps({e.rel: e.error_kind for e in iter_files(Path(sys.argv[1]), recursive=True)}))
"""


def test_unlistable_folder_is_an_entry(tmp_path: Path) -> None:
    """Listed in a child without root's DAC capabilities, so chmod 000 binds even as root."""
    import json
    import subprocess
    import sys

    root = _tree(tmp_path)
    os.chmod(root / "sub", 0)
    drop = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
            if os.geteuid() == 0 else [])
    try:
        proc = subprocess.run([*drop, sys.executable, "-c", _LIST_PROBE, str(root)],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        os.chmod(root / "sub", 0o755)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sub"] == UNREADABLE


def test_locations_refused(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for out, message in ((src, "is the input folder"),
                         (src / "out", "inside the input folder"),
                         (tmp_path, "input folder .* is inside the output folder")):
        with pytest.raises(UsageError, match=message):
            check_locations(src, out)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError, match="not a directory"):
        check_locations(src, tmp_path / "file")
    with pytest.raises(UsageError, match="is not a directory"):
        check_locations(tmp_path / "file", tmp_path / "o")
    check_locations(src, tmp_path / "out")


def test_output_inside_input_through_a_symlink_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "real").mkdir(parents=True)
    os.symlink(src / "real", tmp_path / "alias")
    with pytest.raises(UsageError, match="inside the input"):
        check_locations(src, tmp_path / "alias" / "out")


def test_listed_files_follow_the_walks_link_rule(tmp_path: Path) -> None:
    """--files-from and --retry-failed must not pull in what the walk would skip."""
    root, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "a.dcm").write_bytes(b"a")
    (elsewhere / "secret.dcm").write_bytes(b"s")
    os.symlink(elsewhere / "secret.dcm", root / "leak.dcm")
    os.symlink(root / "a.dcm", root / "alias.dcm")
    listed = {e.rel: e for e in iter_listed(root, ["leak.dcm", "alias.dcm", "a.dcm", "gone"])}
    assert listed["a.dcm"].ok and listed["alias.dcm"].ok
    assert listed["leak.dcm"].error_kind == LINK_OUTSIDE
    assert listed["gone"].error_kind == UNREADABLE
    followed = {e.rel: e for e in iter_listed(root, ["leak.dcm"], follow_outside=True)}
    assert followed["leak.dcm"].ok and followed["leak.dcm"].size == 1
    assert [e.rel for e in iter_files(root)] == sorted(listed.keys() - {"gone"})
