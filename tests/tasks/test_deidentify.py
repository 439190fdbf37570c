"""The per-file engine (E.1.1 / E.1.2) on real files built from pydicom's test data."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.errors import CryptoError, DicomFormatError, UnsupportedFileError
from tasks.profile import GDCMANON
from tasks.reidentify import ReidentifySettings, reidentify_bytes
from tasks.uids import new_uid, validate_root
from tests.builders import file_bytes, small_ct
from tests.conftest import SECRET, Pki, pydicom_file


@pytest.fixture(scope="module")
def settings(encryptor: EnvelopeEncryptor) -> DeidentifySettings:
    return DeidentifySettings(secret=SECRET, encryptor=encryptor, profile="gdcmanon")


def make_file(implicit: bool = False, **values: object) -> Dataset:
    """A small CT-like data set with a private block holding a nested Patient's Name."""
    ds = small_ct(ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    ds.StudyID = "S1"
    inner = Dataset()
    inner.PatientName = "Secret^Inside"
    ds.add_new(0x00090010, "LO", "ACME PRIVATE")
    ds.add_new(0x00091010, "SQ", Sequence([inner]))
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def test_every_listed_attribute_is_protected_at_every_depth(settings: DeidentifySettings) -> None:
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.3.4.9"
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds = make_file(ReferencedImageSequence=Sequence([ref]), InstitutionName="General Hospital")
    out = pydicom.dcmread(io.BytesIO(deidentify_bytes(file_bytes(ds), settings)))
    assert out.PatientName != "Doe^Jane" and str(out.PatientName).startswith("ANON^")
    assert out.PatientID != "PID-777" and out.PatientID
    assert out.InstitutionName == ""
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_uid(
        SECRET, "2.25", "1.2.3.4.9")
    assert out.ReferencedImageSequence[0].ReferencedSOPClassUID == ref.ReferencedSOPClassUID
    assert out[0x00091010][0].PatientName != "Secret^Inside"


def test_private_sequence_in_implicit_file_is_entered(settings: DeidentifySettings,
                                                      pki: Pki, tmp_path: Path,
                                                      require_tool) -> None:  # type: ignore[no-untyped-def]
    """gdcmanon leaks a Patient's Name inside a private SQ of an implicit file; we do not."""
    data = file_bytes(make_file(implicit=True))
    ours = deidentify_bytes(data, settings)
    assert b"Secret^Inside" not in ours
    assert b"Doe^Jane" not in ours
    require_tool("gdcmanon")
    src, theirs = tmp_path / "in.dcm", tmp_path / "gdcm.dcm"
    src.write_bytes(data)
    proc = subprocess.run(["gdcmanon", "-c", str(pki.cert), "-e", str(src), str(theirs)],
                          capture_output=True, check=False)
    assert proc.returncode == 0
    assert b"Secret^Inside" in theirs.read_bytes()  # the leak we fix


def test_consistent_uids_across_files(settings: DeidentifySettings) -> None:
    first = make_file()
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second = make_file(SOPInstanceUID="1.2.3.4.2", ReferencedImageSequence=Sequence([ref]))
    a = pydicom.dcmread(io.BytesIO(deidentify_bytes(file_bytes(first), settings)))
    b = pydicom.dcmread(io.BytesIO(deidentify_bytes(file_bytes(second), settings)))
    assert a.StudyInstanceUID == b.StudyInstanceUID != first.StudyInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.PatientID == b.PatientID and a.PatientName == b.PatientName
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID


def test_irreversible_output_is_deterministic_and_has_no_payload() -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    irreversible = DeidentifySettings(secret=SECRET)
    one, two = deidentify_bytes(data, irreversible), deidentify_bytes(data, irreversible)
    assert one == two
    ds = pydicom.dcmread(io.BytesIO(one))
    assert 0x04000500 not in ds
    # PS3.15 E.1.1 asks every de-identified instance to say so, irreversible or not
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    other_secret = deidentify_bytes(data, DeidentifySettings(secret=b"x" * 32))
    assert pydicom.dcmread(io.BytesIO(other_secret)).SOPInstanceUID != ds.SOPInstanceUID


def test_untouched_bytes_are_copied(settings: DeidentifySettings) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    out = deidentify_bytes(data, settings)
    assert data[:4] == b"II*\x00" and out[:128] == bytes(128)  # TIFF preamble: zeros
    original, result = read_dicom(data), read_dicom(out)
    touched = set(GDCMANON.actions) | {0x00080000, 0x00100000, 0x00200000,
                                       0x00120062, 0x00120063, 0x04000500}
    sequences_with_listed = {0x00101002}  # Other Patient IDs Sequence holds a Patient ID
    for el in original.elements:
        if el.tag in touched or el.tag in sequences_with_listed:
            continue
        twin = result.top(el.tag)
        assert twin is not None
        assert result.body[twin.start:twin.end] == original.body[el.start:el.end], hex(el.tag)


@pytest.mark.parametrize("name", ["priv_SQ.dcm", "nested_priv_SQ.dcm", "UN_sequence.dcm",
                                  "no_meta_group_length.dcm", "empty_charset_LEI.dcm",
                                  "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm",
                                  "SC_rgb_small_odd_big_endian.dcm", "liver_1frame.dcm",
                                  "JPEG2000-embedded-sequence-delimiter.dcm"])
def test_files_gdcmanon_cannot_handle_round_trip(name: str, settings: DeidentifySettings,
                                                 reid: ReidentifySettings) -> None:
    """No (0008,0018), no meta, UN sequences: de-identified and restored byte for byte."""
    data = pydicom_file(name).read_bytes()
    out = deidentify_bytes(data, settings)
    assert reidentify_bytes(out, reid) == data


def test_sop_class_gdcmanon_refuses_is_handled(settings: DeidentifySettings,
                                               reid: ReidentifySettings) -> None:
    ds = make_file(SOPClassUID="1.2.840.10008.5.1.4.1.1.130")  # Enhanced PET
    data = file_bytes(ds)
    assert reidentify_bytes(deidentify_bytes(data, settings), reid) == data


def test_already_deidentified_is_refused(settings: DeidentifySettings) -> None:
    out = deidentify_bytes(pydicom_file("CT_small.dcm").read_bytes(), settings)
    with pytest.raises(UnsupportedFileError, match="already de-identified"):
        deidentify_bytes(out, settings)


def test_wrong_key_is_a_clear_error(settings: DeidentifySettings, pki: Pki) -> None:
    out = deidentify_bytes(pydicom_file("MR_small.dcm").read_bytes(), settings)
    with pytest.raises(CryptoError):
        reidentify_bytes(out, ReidentifySettings(key_pem=pki.key2.read_bytes()))


def test_reidentify_plain_file_is_refused(reid: ReidentifySettings) -> None:
    with pytest.raises(UnsupportedFileError, match="not de-identified"):
        reidentify_bytes(pydicom_file("CT_small.dcm").read_bytes(), reid)


TRUNCATIONS = [0, 10, 100, 131, 132, 133, 140, 200, 300, 500, 1000, 5000, 20000, 39000]


@pytest.mark.parametrize("size", TRUNCATIONS)
def test_truncated_input_is_an_error_not_zero_filled(size: int,
                                                     settings: DeidentifySettings) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()[:size]
    with pytest.raises(DicomFormatError):
        deidentify_bytes(data, settings)


@pytest.mark.parametrize("root,ok", [("2.25", True), ("1.2.826.0.1.3680043.2.1143", True),
                                     ("1.02.3", False), ("1..2", False), ("abc", False),
                                     ("1." + "2" * 50, False)])
def test_root_uid_validation(root: str, ok: bool) -> None:
    if ok:
        assert validate_root(root) == root
        uid = new_uid(SECRET, root, "1.2.3")
        assert uid.startswith(root + ".") and len(uid) <= 64
    else:
        with pytest.raises(ValueError):
            validate_root(root)
