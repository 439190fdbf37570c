"""gdcmanon -d on outputs whose file meta and preamble anonpipe rebuilt (PS3.15 E.1.1)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pipeline.cli import main
from tasks.dicomio import read_dicom
from tests.conftest import Pki
from tests.tasks.test_filemeta import check_rebuilt, planted

pytestmark = [pytest.mark.gdcm, pytest.mark.usefixtures("needs_gdcmanon")]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_gdcmanon_restores_the_data_set_of_a_rebuilt_meta(syntax: str, pki: Pki,
                                                         tmp_path: Path) -> None:
    original, deid = tmp_path / "in.dcm", tmp_path / "deid.dcm"
    back, ours = tmp_path / "back.dcm", tmp_path / "ours.dcm"
    original.write_bytes(planted(syntax))
    assert main(["--profile", "gdcmanon", "-c", str(pki.cert), "-e", str(original),
                 str(deid)]) == 0
    check_rebuilt(deid.read_bytes(), syntax)
    proc = subprocess.run(["gdcmanon", "-k", str(pki.key), "-d", str(deid), str(back)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    restored, source = read_dicom(back.read_bytes()), read_dicom(original.read_bytes())
    assert restored.body == source.body
    assert main(["-k", str(pki.key), "-d", str(deid), str(ours)]) == 0
    assert ours.read_bytes() == original.read_bytes()


def test_gdcmanon_restores_pixel_data_whose_overlay_bits_were_cleared(pki: Pki,
                                                                       tmp_path: Path) -> None:
    import pydicom

    from tests.tasks.test_overlay import make

    original, deid, back = tmp_path / "in.dcm", tmp_path / "deid.dcm", tmp_path / "back.dcm"
    original.write_bytes(make())
    assert main(["-c", str(pki.cert), "-e", str(original), str(deid)]) == 0
    before = pydicom.dcmread(original).PixelData
    assert pydicom.dcmread(deid).PixelData != before
    proc = subprocess.run(["gdcmanon", "-k", str(pki.key), "-d", str(deid), str(back)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert pydicom.dcmread(back).PixelData == before
