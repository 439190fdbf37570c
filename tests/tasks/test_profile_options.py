"""The basic profile and each PS3.15 Option, on the token corpus and pydicom's test files."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tasks import _profile_table as table
from tasks.actions import date_offset_days, shift_date, shift_datetime
from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.errors import UnsupportedFileError
from tasks.explain import explain_bytes
from tasks.profile import OPTIONS, PROFILE_DIR
from tasks.reidentify import ReidentifySettings, reidentify_bytes
from tests.conftest import SECRET, pydicom_file
from tests.tokens import build_corpus

ADDED = {0x00120063, 0x00120064, 0x00280303}  # name the options by design


@pytest.fixture(scope="module")
def corpus() -> bytes:
    return build_corpus().data


def run(data: bytes, *options: str, profile: str = "basic", **extra: object) -> Dataset:
    settings = DeidentifySettings(secret=SECRET, profile=profile, options=options,
                                  **extra)  # type: ignore[arg-type]
    return pydicom.dcmread(io.BytesIO(deidentify_bytes(data, settings)))


def flatten(ds: Dataset, prefix: tuple[int, ...] = ()) -> dict[tuple[int, ...], object]:
    """Path (tags, with -(n+1) for item n) -> value, for every element at every depth."""
    out: dict[tuple[int, ...], object] = {}
    for el in ds:
        key = prefix + (int(el.tag),)
        if el.VR == "SQ":
            out[key] = ("SQ", len(el.value))
            for n, item in enumerate(el.value):
                out.update(flatten(item, key + (-(n + 1),)))
        else:
            out[key] = (el.VR, el.value)
    return out


def option_rows(option: str) -> tuple[set[int], set[str]]:
    """Tags and pattern rows the option has a code for in Table E.1-1."""
    index = OPTIONS.index(option)
    tags = {row[1] for row in table.ROWS if row[8][index] and row[1] is not None}
    patterns = {row[2] for row in table.ROWS if row[8][index] and row[1] is None}
    return tags, patterns


def attributable(path: tuple[int, ...], tags: set[int], patterns: set[str]) -> bool:
    for tag in path:
        if tag < 0:
            continue
        group = tag >> 16
        if tag in tags or tag in ADDED:
            return True
        if "private" in patterns and group & 1:
            return True
        if "curve" in patterns and group & 0xFF01 == 0x5000:
            return True
        if patterns & {"overlay_data", "overlay_comments"} and group & 0xFF01 == 0x6000:
            return True
    return False


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_changes_its_rows_and_nothing_else(option: str, corpus: bytes) -> None:
    basic = flatten(run(corpus))
    with_option = flatten(run(corpus, option))
    changed = {path for path in basic.keys() | with_option.keys()
               if basic.get(path) != with_option.get(path)}
    tags, patterns = option_rows(option)
    strays = sorted(path for path in changed if not attributable(path, tags, patterns))
    assert not strays, [tuple(f"{t:08X}" if t >= 0 else t for t in p) for p in strays[:5]]
    assert {p for p in changed if p[0] not in ADDED}, f"{option} changed nothing"


def test_retain_uids_and_device_identity_keep_the_original(corpus: bytes) -> None:
    original = pydicom.dcmread(io.BytesIO(corpus))
    kept = run(corpus, "retain_uids", "retain_device_identity")
    assert kept.StudyInstanceUID == original.StudyInstanceUID
    assert kept.DeviceSerialNumber == original.DeviceSerialNumber
    basic = run(corpus)
    assert basic.StudyInstanceUID != original.StudyInstanceUID
    assert "DeviceSerialNumber" not in basic  # X/Z/D, Type 3 in the CT Image IOD


def test_modified_dates_shift_by_one_offset_per_patient() -> None:
    first = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    second = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    second.StudyDate, second.ContentDate = "20200301", "20200305"
    second.AcquisitionDateTime = "20200305123000.5"
    buffer = io.BytesIO()
    second.save_as(buffer)
    out1 = run(pydicom_file("CT_small.dcm").read_bytes(), "retain_long_modified_dates")
    out2 = run(buffer.getvalue(), "retain_long_modified_dates")
    offset = date_offset_days(SECRET, first.PatientID.encode())
    assert offset < 0
    assert out1.StudyDate == shift_date(first.StudyDate.encode(), offset).decode()
    assert out1.StudyDate != first.StudyDate
    assert (out2.StudyDate, out2.ContentDate) == (shift_date(b"20200301", offset).decode(),
                                                  shift_date(b"20200305", offset).decode())
    assert out2.AcquisitionDateTime == shift_datetime(b"20200305123000.5", offset).decode()
    assert out1.StudyTime == first.StudyTime  # whole days: the time of day stays
    assert out1.LongitudinalTemporalInformationModified == "MODIFIED"
    other = date_offset_days(SECRET, b"another patient")
    assert other != offset  # one offset per patient
    full = run(pydicom_file("CT_small.dcm").read_bytes(), "retain_long_full_dates")
    assert full.StudyDate == first.StudyDate
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "LongitudinalTemporalInformationModified" not in run(
        pydicom_file("CT_small.dcm").read_bytes())


def test_unparseable_date_falls_back_to_the_basic_action() -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        ds.StudyDate = "2020.03.01"  # ACR-NEMA style: cannot be shifted
    buffer = io.BytesIO()
    ds.save_as(buffer)
    out = run(buffer.getvalue(), "retain_long_modified_dates")
    assert out.StudyDate == ""  # Basic Z


def test_private_attributes_removed_safe_ones_kept_with_option(corpus: bytes) -> None:
    basic = run(corpus)
    assert not [el for el in basic if el.tag.group & 1]
    safe = run(corpus, "retain_safe_private")
    private = {int(el.tag) for el in safe if el.tag.group & 1}
    assert private == {0x70530010, 0x70531000}  # the safe DS and its creator, nothing else
    ct = run(pydicom_file("CT_small.dcm").read_bytes(), "retain_safe_private")
    kept = {int(el.tag) for el in ct if el.tag.group & 1}
    assert {0x00190010, 0x00191023, 0x00191024, 0x00191027} <= kept  # GEMS_ACQU_01 safe
    assert 0x00090010 not in kept and 0x00091001 not in kept  # GEMS_IDEN_01 goes whole


def test_site_profile_keeps_a_private_creator_block(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("name: site\nextends: basic\nkeep_private_creators: [GEMS_ACQU_01]\n")
    out = run(pydicom_file("CT_small.dcm").read_bytes(), profile=str(site))
    groups = {el.tag.group for el in out if el.tag.group & 1}
    assert groups == {0x0019}
    original = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    assert len([e for e in out if e.tag.group == 0x0019]) == len(
        [e for e in original if e.tag.group == 0x0019])


def test_overlays_go_whole_unless_clean_graphics() -> None:
    data = pydicom_file("examples_overlay.dcm").read_bytes()
    original = pydicom.dcmread(io.BytesIO(data))
    assert [e for e in original if e.tag.group == 0x6000]
    basic = run(data)
    assert not [e for e in basic if e.tag.group & 0xFF00 == 0x6000]
    graphics = run(data, "clean_graphics")
    assert graphics[0x60003000].value == original[0x60003000].value


def test_identity_is_pseudonymised_consistently(corpus: bytes,
                                                encryptor: EnvelopeEncryptor) -> None:
    a = run(pydicom_file("CT_small.dcm").read_bytes())
    b = run(pydicom_file("CT_small.dcm").read_bytes())
    original = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    assert a.PatientID == b.PatientID != original.PatientID and a.PatientID.startswith("ANON")
    assert str(a.PatientName).startswith("ANON^")
    codes = [item.CodeValue for item in
             pydicom.dcmread(io.BytesIO(deidentify_bytes(
                 pydicom_file("CT_small.dcm").read_bytes(),
                 DeidentifySettings(secret=SECRET, encryptor=encryptor,
                                    options=("clean_descriptors", "retain_uids")))))
             .DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113105"]


def test_method_attributes_name_profile_and_options(encryptor: EnvelopeEncryptor) -> None:
    out = pydicom.dcmread(io.BytesIO(deidentify_bytes(
        pydicom_file("MR_small.dcm").read_bytes(),
        DeidentifySettings(secret=SECRET, encryptor=encryptor,
                           options=("retain_long_modified_dates",)))))
    assert out.PatientIdentityRemoved == "YES"
    assert list(out[0x00120063].value) == [
        "anonpipe basic profile, PS3.15 E.1-1 2026d",
        "Retain Longitudinal Temporal Information Modified Dates Option"]
    assert [(i.CodeValue, i.CodingSchemeDesignator) for i in
            out.DeidentificationMethodCodeSequence] == [("113100", "DCM"), ("113107", "DCM")]


BURNED_IN = [
    ("SC_rgb_rle.dcm", None, "usually carries burned-in text"),
    ("examples_palette.dcm", None, "usually carries burned-in text"),
    ("CT_small.dcm", "YES", "Burned In Annotation \\(0028,0301\\) is YES"),
]


@pytest.mark.parametrize("name,flag,message", BURNED_IN)
def test_burned_in_annotation_is_refused_under_pixels_refuse(name: str, flag: str | None,
                                                             message: str) -> None:
    ds = pydicom.dcmread(pydicom_file(name))
    if flag is not None:
        ds.BurnedInAnnotation = flag
    buffer = io.BytesIO()
    ds.save_as(buffer)
    data = buffer.getvalue()
    with pytest.raises(UnsupportedFileError, match=message):
        deidentify_bytes(data, DeidentifySettings(secret=SECRET, pixels="refuse"))
    deidentify_bytes(data, DeidentifySettings(secret=SECRET))  # clean: OCR finds no text
    deidentify_bytes(data, DeidentifySettings(secret=SECRET, allow_burned_in=True))
    deidentify_bytes(data, DeidentifySettings(secret=SECRET, profile="gdcmanon"))
    if flag is None:
        ds.BurnedInAnnotation = "NO"
        buffer = io.BytesIO()
        ds.save_as(buffer)
        deidentify_bytes(buffer.getvalue(), DeidentifySettings(secret=SECRET, pixels="refuse"))
        # examples_palette is a Philips CX50 ultrasound: a shipped region rule still cleans it
        out = deidentify_bytes(buffer.getvalue(), DeidentifySettings(secret=SECRET))
        assert (b"113101" in out) == (name == "examples_palette.dcm")  # Clean Pixel Data code


ROUND_TRIP = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
              "image_dfl.dcm", "rtplan.dcm", "test-SR.dcm", "examples_overlay.dcm",
              "SC_rgb_rle.dcm", "nested_priv_SQ.dcm", "UN_sequence.dcm",
              "ExplVR_BigEndNoMeta.dcm", "liver_1frame.dcm", "waveform_ecg.dcm"]


@pytest.mark.parametrize("options", [(), OPTIONS], ids=["basic", "all-options"])
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_basic_round_trip_is_byte_identical(name: str, options: tuple[str, ...],
                                            encryptor: EnvelopeEncryptor,
                                            reid: ReidentifySettings) -> None:
    data = pydicom_file(name).read_bytes()
    settings = DeidentifySettings(secret=SECRET, encryptor=encryptor, options=options,
                                  allow_burned_in=True)
    out = deidentify_bytes(data, settings)
    assert out != data
    assert reidentify_bytes(out, reid) == data


def test_token_corpus_round_trip(corpus: bytes, encryptor: EnvelopeEncryptor,
                                 reid: ReidentifySettings) -> None:
    for options in ((), OPTIONS):
        out = deidentify_bytes(corpus, DeidentifySettings(
            secret=SECRET, encryptor=encryptor, options=options))
        assert reidentify_bytes(out, reid) == corpus


def test_explain_prints_the_decisions_the_walk_takes() -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    settings = DeidentifySettings(secret=SECRET, options=("retain_safe_private",))
    text = explain_bytes(data, settings)
    assert "SOP Class 1.2.840.10008.5.1.4.1.1.2 -> IOD ct-image" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("(")}
    assert 'Basic X/Z/D; Type 3 -> X' in lines["(0008,0080)"]
    assert "safe private (Table E.3.10-1, 'GEMS_ACQU_01')" in lines["(0019,1023)"]
    out = read_dicom(deidentify_bytes(data, settings))
    for tag_text, line in lines.items():
        tag = int(tag_text[1:5] + tag_text[6:10], 16)
        if " X remove " in line and not line.startswith(" "):
            assert out.top(tag) is None, tag_text
        if " K keep " in line and not line.startswith(" "):
            assert out.top(tag) is not None, tag_text
    assert "Doe" not in text and "CompressedSamples" not in text  # no values printed


def test_explain_reports_burned_in(tmp_path: Path) -> None:
    text = explain_bytes(pydicom_file("SC_rgb_rle.dcm").read_bytes(),
                         DeidentifySettings(secret=SECRET))
    assert "pixels: SOP Class 1.2.840.10008.5.1.4.1.1.7 usually carries" in text
    assert "pixels: OCR read no text" in text
    site = explain_bytes(pydicom_file("CT_small.dcm").read_bytes(),
                         DeidentifySettings(secret=SECRET,
                                            profile=str(PROFILE_DIR / "site-example.yaml")))
    assert "profile site-example" in site and "clean_descriptors" in site
