"""Pass 1's flags and pass 2's refusal come from one decision (tasks.eligibility)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.eligibility import Refusal, refusals
from tasks.errors import UnsupportedFileError
from tasks.inventory import scan_file
from tests.conftest import SECRET, pydicom_file


def _deidentified_once(tmp_path: Path) -> Path:
    out = tmp_path / "once.dcm"
    out.write_bytes(deidentify_bytes(pydicom_file("CT_small.dcm").read_bytes(),
                                     DeidentifySettings(secret=SECRET)))
    return out


@pytest.mark.parametrize("case, expected", [
    ("plain", []),
    ("dicomdir", [Refusal.DICOMDIR]),
    ("deidentified", [Refusal.IDENTITY_REMOVED]),
])
def test_inventory_and_deidentify_agree(tmp_path: Path, case: str,
                                        expected: list[Refusal]) -> None:
    path = {"plain": lambda: pydicom_file("CT_small.dcm"),
            "dicomdir": lambda: pydicom_file("dicomdirtests/DICOMDIR"),
            "deidentified": lambda: _deidentified_once(tmp_path)}[case]()
    data = path.read_bytes()
    assert refusals(read_dicom(data)) == expected
    row = scan_file(path)
    assert row["deidentified"] is any(why.deidentified for why in expected)
    assert row["dicomdir"] is (Refusal.DICOMDIR in expected)
    if expected:
        with pytest.raises(UnsupportedFileError) as caught:
            deidentify_bytes(data, DeidentifySettings(secret=SECRET))
        assert str(caught.value) == expected[0].value
    else:
        assert deidentify_bytes(data, DeidentifySettings(secret=SECRET)) != data
