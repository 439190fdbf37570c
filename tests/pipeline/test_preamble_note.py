"""A preamble that held data is written as zeros (PS3.15 E.1.1): the user is told, at -W."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from tasks.filemeta import PREAMBLE_NOTE
from tests.conftest import Pki, pydicom_file


def test_single_file_says_so_at_the_default_verbosity(pki: Pki, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = pydicom_file("CT_small.dcm")  # a TIFF header in its preamble
    assert src.read_bytes()[:4] == b"II*\x00"
    assert main(["-c", str(pki.cert), "-e", str(src), str(tmp_path / "a.dcm")]) == 0
    assert PREAMBLE_NOTE in capsys.readouterr().err
    assert main(["-E", "-c", str(pki.cert), "-e", str(src), str(tmp_path / "b.dcm")]) == 0
    assert PREAMBLE_NOTE not in capsys.readouterr().err
    plain = pydicom_file("rtplan.dcm")
    assert plain.read_bytes()[:128] == bytes(128)
    assert main(["-c", str(pki.cert), "-e", str(plain), str(tmp_path / "c.dcm")]) == 0
    assert PREAMBLE_NOTE not in capsys.readouterr().err


def test_directory_run_counts_the_files_in_pass_one(pki: Pki, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(pydicom_file("rtplan.dcm"), src / "plan.dcm")
    assert main(["-c", str(pki.cert), "-e", "-r", str(src), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"1 files: {PREAMBLE_NOTE}" in err
    assert (tmp_path / "out" / "ct.dcm").read_bytes()[:128] == bytes(128)
