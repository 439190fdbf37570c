"""Dumb mode on large files: the pixel data stays in the file (``tasks.pixeltail``), and the
output is the one the file read whole gives, warnings and errors included."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest

from tasks import dumb
from tasks.dumb import DumbEdit, DumbSettings, dumb_edit_split, parse_dumb_ops
from tasks.errors import AnonpipeError
from tests.conftest import pydicom_file
from tests.tasks.test_pixel_tail import SPLITS, TEST_FILES

#: operation sets a user runs: the usual edits; private attributes by creator, one created;
#: the trailing padding after the pixel data; a private attribute created after it; an
#: edit in group 7FE0 before Pixel Data; nothing to do; and Pixel Data itself (the split
#: gives way)
EDITS: dict[str, dict[str, Sequence[str]]] = {
    "usual": {"empty": ["10,20"], "remove": ["8,90", "10,30"],
              "replace": ["10,10=Anon^Ymous", "8,20=20010101"]},
    "private": {"remove": ["9,10,GEMS_IDEN_01", "43,1,GEMS_PARM_01"],
                "replace": ["11,1,ANONPIPE TEST=kept"]},
    "padding": {"remove": ["fffc,fffc"]},
    "created-after-pixels": {"replace": ["7fe1,10,ANONPIPE TEST=after"]},
    "before-pixels": {"empty": ["7fe0,1"]},
    "nothing": {"clear": ["10,21"]},
    "pixel-data": {"empty": ["7fe0,10"]},
}


def _settings(edits: dict[str, Sequence[str]], force: bool = True) -> DumbSettings:
    ops = parse_dumb_ops(edits.get("empty", []), edits.get("clear", []),
                         edits.get("remove", []), edits.get("replace", []))
    return DumbSettings(ops, force=force)


def _run(src: Path, dst: Path, settings: DumbSettings, split: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[bytes | str, list[str]]:
    """The output bytes or the error a user would see, and the warnings given."""
    monkeypatch.setattr(dumb, "SPLIT_FROM", 0 if split else 1 << 62)
    notes: list[str] = []
    try:
        DumbEdit(settings, warn=notes.append)(src, dst)
    except AnonpipeError as exc:
        return f"{type(exc).__name__}: {exc}", notes
    return dst.read_bytes(), notes


def _splits(path: Path, settings: DumbSettings) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        notes: list[str] = []
        return isinstance(dumb_edit_split(fd, os.fstat(fd).st_size, settings, notes.append), list)
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", sorted(EDITS))
def test_every_test_file_gives_the_same_bytes_warnings_or_error_split_or_whole(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(EDITS[name])
    compared = split_count = 0
    for path in TEST_FILES:
        whole = _run(path, tmp_path / "whole.dcm", settings, False, monkeypatch)
        split = _run(path, tmp_path / "split.dcm", settings, True, monkeypatch)
        assert split == whole, path.name
        compared += isinstance(whole[0], bytes)
        split_count += _splits(path, settings)
    assert compared >= 60
    if name == "pixel-data":
        assert split_count == 0  # an edit of Pixel Data reads the file whole
    else:
        assert split_count >= len(SPLITS)


def test_the_edits_land_and_the_pixel_data_is_copied(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = pydicom_file("CT_small.dcm")
    usual = EDITS["usual"]
    settings = _settings({**usual, "remove": [*usual["remove"], *EDITS["padding"]["remove"]]})
    assert _splits(src, settings)
    out, _ = _run(src, tmp_path / "out.dcm", settings, True, monkeypatch)
    assert isinstance(out, bytes)
    edited, original = pydicom.dcmread(tmp_path / "out.dcm"), pydicom.dcmread(src)
    assert str(edited.PatientName) == "Anon^Ymous" and edited.StudyDate == "20010101"
    assert edited.PatientID == "" and "PatientBirthDate" not in edited
    assert "ReferringPhysicianName" in original and "ReferringPhysicianName" not in edited
    assert 0xFFFCFFFC in original and 0xFFFCFFFC not in edited
    assert edited.PixelData == original.PixelData


def test_a_type1_warning_is_given_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = pydicom_file("CT_small.dcm")
    settings = _settings({"remove": ["8,16"]}, force=False)
    assert _splits(src, settings)
    split = _run(src, tmp_path / "s.dcm", settings, True, monkeypatch)
    whole = _run(src, tmp_path / "w.dcm", settings, False, monkeypatch)
    assert split == whole and len(split[1]) == 1 and "(0008,0016)" in split[1][0]
