"""File meta and preamble of de-identified files (PS3.15 E.1.1): rebuilt, zeroed, restored."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.errors import UnsupportedFileError
from tasks.filemeta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, rebuilt_meta
from tasks.reidentify import ReidentifySettings, reidentify_bytes
from tests.builders import file_bytes, small_ct
from tests.conftest import SECRET, pydicom_file

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian]
#: what the meta and preamble may carry, each with a marker no output may hold
MARKERS = {
    "SourceApplicationEntityTitle": "SRCAEMARK",
    "SendingApplicationEntityTitle": "SENDAEMARK",
    "ReceivingApplicationEntityTitle": "RECVAEMARK",
    "ImplementationVersionName": "IMPLVERMARK",
}
PRIVATE_MARKER = b"PRIVATE-INFO-MARKER^DOE"
PREAMBLE_MARKER = b"PREAMBLE-MARKER PATIENT DOE^JOHN 19700101"
ALLOWED_META = {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012,
                0x00020013}


@pytest.fixture(scope="module")
def settings(encryptor: EnvelopeEncryptor) -> DeidentifySettings:
    return DeidentifySettings(secret=SECRET, encryptor=encryptor, allow_burned_in=True)


def planted(syntax: str, **extra: object) -> bytes:
    """A small CT file whose meta and preamble carry every marker."""
    ds = small_ct(syntax, sop_instance_uid="1.2.3.4.5.6", patient_name="Doe^John",
                  patient_id="PID-4711")
    ds.file_meta.ImplementationClassUID = "1.2.3.999.1"
    for keyword, marker in MARKERS.items():
        setattr(ds.file_meta, keyword, marker)
    ds.file_meta.add_new(0x00020100, "UI", "1.2.3.999.77")  # Private Information Creator UID
    ds.file_meta.add_new(0x00020102, "OB", PRIVATE_MARKER + b"\0")  # Private Information
    ds.preamble = PREAMBLE_MARKER.ljust(128, b"\0")
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return file_bytes(ds)


def check_rebuilt(out: bytes, syntax: str) -> None:
    df = read_dicom(out)
    assert out[:128] == bytes(128) and out[128:132] == b"DICM"
    assert {el.tag for el in df.meta} == ALLOWED_META
    for marker in [*MARKERS.values(), "1.2.3.999"]:
        assert marker.encode() not in out
    assert PRIVATE_MARKER not in out and PREAMBLE_MARKER[:16] not in out
    ds = pydicom.dcmread(io.BytesIO(out))
    meta = ds.file_meta
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.TransferSyntaxUID == syntax
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID != "1.2.3.4.5.6"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID.decode()
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME.decode()
    assert meta.FileMetaInformationGroupLength == len(df.meta_bytes) - 12


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("profile", ["basic", "gdcmanon"])
def test_meta_and_preamble_are_rebuilt_and_restored(syntax: str, profile: str,
                                                    settings: DeidentifySettings,
                                                    reid: ReidentifySettings) -> None:
    data = planted(syntax)
    for keyword in MARKERS.values():
        assert keyword.encode() in data
    out = deidentify_bytes(data, DeidentifySettings(secret=SECRET, profile=profile,
                                                    encryptor=settings.encryptor))
    check_rebuilt(out, syntax)
    assert reidentify_bytes(out, reid) == data


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_irreversible_meta_is_rebuilt_and_marked(syntax: str) -> None:
    data = planted(syntax, PatientIdentityRemoved="NO")
    out = deidentify_bytes(data, DeidentifySettings(secret=SECRET))
    check_rebuilt(out, syntax)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert 0x04000500 not in ds
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"


def test_irreversible_gdcmanon_profile_marks_without_codes() -> None:
    out = deidentify_bytes(planted(ExplicitVRLittleEndian),
                           DeidentifySettings(secret=SECRET, profile="gdcmanon"))
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == "BASIC APPLICATION LEVEL CONFIDENTIALITY PROFILE"
    assert 0x00120064 not in ds  # the profile adds none (as gdcmanon)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm",
                                  "MR_small_bigendian.dcm", "image_dfl.dcm", "ExplVR_BigEnd.dcm",
                                  "rtplan.dcm", "test-SR.dcm", "JPEG2000.dcm",
                                  "no_meta_group_length.dcm", "ExplVR_LitEndNoMeta.dcm"])
def test_pydicom_files_round_trip_byte_for_byte(name: str, settings: DeidentifySettings,
                                                reid: ReidentifySettings) -> None:
    data = pydicom_file(name).read_bytes()
    out = deidentify_bytes(data, settings)
    original = read_dicom(data)
    if original.meta:
        assert {el.tag for el in read_dicom(out).meta} <= ALLOWED_META
    if len(original.raw_prefix) == 132:
        assert out[:128] == bytes(128)
    else:  # a file without preamble (or without meta) keeps that shape
        assert out[:len(original.raw_prefix)] == original.raw_prefix
    assert reidentify_bytes(out, reid) == data


def test_meta_without_sop_instance_uid_in_the_data_set(settings: DeidentifySettings,
                                                       reid: ReidentifySettings) -> None:
    """No (0008,0018): (0002,0003) is the original's, mapped like every instance UID."""
    data = pydicom_file("no_meta_group_length.dcm").read_bytes()
    df = read_dicom(data)
    assert df.top(0x00080018) is None
    out = deidentify_bytes(data, settings)
    meta = pydicom.dcmread(io.BytesIO(out)).file_meta
    original = pydicom.dcmread(io.BytesIO(data)).file_meta
    if "MediaStorageSOPInstanceUID" in original:
        assert meta.MediaStorageSOPInstanceUID != original.MediaStorageSOPInstanceUID
    assert reidentify_bytes(out, reid) == data


def test_transfer_syntax_that_is_not_a_uid_is_refused(settings: DeidentifySettings) -> None:
    data = planted(ExplicitVRLittleEndian)
    cut = data.index(ExplicitVRLittleEndian.encode())
    bad = data[:cut] + b"1.2.840.10008.1.2.X" + data[cut + 19:]  # same length: 19
    with pytest.raises(UnsupportedFileError, match="transfer syntax"):
        deidentify_bytes(bad, settings)


def test_rebuilt_meta_leaves_out_values_that_are_not_uids() -> None:
    meta = rebuilt_meta(b"DOE^JOHN", b"1.2.3\0", ExplicitVRLittleEndian)
    assert b"DOE" not in meta
    assert b"1.2.3\0" in meta


@pytest.mark.parametrize("sop_class", [None, b"1.2.840.10008.5.1.4.1.1.2", b"1.2.3\0",
                                       b"1.2.34 ", b"", b"DOE^JOHN", b"1." + b"1" * 63])
@pytest.mark.parametrize("instance", [None, b"2.25.1234", b"2.25.12345\0", b"1..2", b"0.01"])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    "1.2.840.10008.1.2.4.50"])
def test_rebuilt_meta_is_the_elements_encoded_one_by_one(
        sop_class: bytes | None, instance: bytes | None, syntax: str) -> None:
    """rebuilt_meta (its parts made once per SOP Class and syntax) against each element
    encoded by encode_element and measured: the same bytes, asked once or twice."""
    from tasks.dicomio import EXPLICIT_LE_ENC
    from tasks.edit import encode_element
    from tasks.filemeta import is_uid

    def uid(tag: int, value: bytes | None) -> bytes:
        value = None if value is None else value.rstrip(b"\0 ")
        return encode_element(tag, "UI", value, EXPLICIT_LE_ENC) if value and is_uid(
            value) else b""

    body = (encode_element(0x00020001, "OB", b"\x00\x01", EXPLICIT_LE_ENC)
            + uid(0x00020002, sop_class) + uid(0x00020003, instance)
            + encode_element(0x00020010, "UI", syntax.encode(), EXPLICIT_LE_ENC)
            + encode_element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID, EXPLICIT_LE_ENC)
            + encode_element(0x00020013, "SH", IMPLEMENTATION_VERSION_NAME, EXPLICIT_LE_ENC))
    expected = encode_element(0x00020000, "UL", len(body).to_bytes(4, "little"),
                              EXPLICIT_LE_ENC) + body
    assert rebuilt_meta(sop_class, instance, syntax) == expected
    assert rebuilt_meta(sop_class, instance, syntax) == expected


def test_retained_uids_keep_meta_and_data_set_in_step(settings: DeidentifySettings) -> None:
    """--retain-uids keeps (0008,0018): (0002,0003) keeps it too (PS3.10 7.1)."""
    out = deidentify_bytes(planted(ExplicitVRLittleEndian), DeidentifySettings(
        secret=SECRET, encryptor=settings.encryptor, options=("retain_uids",)))
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == "1.2.3.4.5.6"


def test_implementation_version_name_is_the_package_version() -> None:
    from importlib import metadata

    assert IMPLEMENTATION_VERSION_NAME == f"ANONPIPE {metadata.version('anonpipe')}".encode()
    assert len(IMPLEMENTATION_VERSION_NAME) <= 16  # SH
