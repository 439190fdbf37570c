"""Dumb mode (--empty/--clear/--remove/--replace) on files built from pydicom's test data."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tasks.dicomio import read_dicom
from tasks.dumb import (
    GDCMANON_DIFFERENCES,
    IRREVERSIBLE_OPS,
    ORDER,
    DumbEdit,
    DumbKind,
    DumbModeWarning,
    DumbOp,
    DumbSettings,
    _vm_allows,
    dumb_edit_bytes,
    encode_value,
    parse_dumb_ops,
    type1_warnings,
)
from tasks.edit import EditPlan, encode_element, render
from tasks.errors import ProfileError, UsageError
from tasks.tagspec import TagSpec
from tests.conftest import pydicom_file

CT = pydicom_file("CT_small.dcm")


def ops(empty: Sequence[str] = (), clear: Sequence[str] = (), remove: Sequence[str] = (),
        replace: Sequence[str] = ()) -> tuple[DumbOp, ...]:
    return parse_dumb_ops(list(empty), list(clear), list(remove), list(replace))


def edit(data: bytes, *, force: bool = False, **kwargs: Sequence[str]
         ) -> tuple[bytes, list[str]]:
    """Our dumb mode on ``data``; returns the output and the warnings."""
    notes: list[str] = []
    out = dumb_edit_bytes(data, DumbSettings(ops(**kwargs), force), warn=notes.append)
    return out, notes


def dcm(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def saved(ds: Dataset, implicit: bool = False) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


def small(implicit: bool = False) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.1")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.1"
    ds.PatientName = "Doe^Jane"
    return ds


# --------------------------------------------------------------------------- parsing


def test_operations_run_in_gdcmanon_order() -> None:
    parsed = ops(empty=["10,10", "9,1001,P"], clear=["10,20", "9,1002,P"],
                 remove=["10,30", "9,1003,P"], replace=["9,1004,P=x", "10,40=M"])
    assert [(op.kind, op.tag.private) for op in parsed] == list(ORDER)


def test_command_line_order_is_kept_within_one_kind() -> None:
    parsed = ops(remove=["10,40", "10,1010", "8,80"])
    assert [op.tag.tag for op in parsed] == [0x00100040, 0x00101010, 0x00080080]


def test_no_operation_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^No operation\(s\) to be done\.$"):
        ops()


def test_manpage_example_parses_as_written() -> None:
    parsed = ops(empty=["10,10"], clear=["10,20"], remove=["10,40", "10,1010"],
                 replace=["10,1030,10"])
    assert [str(op) for op in parsed] == [
        "replace (0010,1030) with '10'", "empty (0010,0010)", "clear (0010,0020)",
        "remove (0010,0040)", "remove (0010,1010)"]


def test_irreversible_ops() -> None:
    assert IRREVERSIBLE_OPS == tuple(
        DumbOp(DumbKind.REMOVE, TagSpec(group, element))
        for group, element in ((0x0400, 0x0500), (0x0012, 0x0062), (0x0012, 0x0063)))


BAD_OPS = [
    ({"empty": ["2,3"]}, "group 0002 is the file meta"),
    ({"clear": ["2,3"]}, "group 0002 is the file meta"),
    ({"remove": ["2,10"]}, "group 0002 is the file meta"),
    ({"replace": ["2,3=1.2"]}, "group 0002 is the file meta"),
    ({"empty": ["4,1130"]}, "group 0004 is below 0008"),
    ({"replace": ["0,1000=1"]}, "group 0000 is below 0008"),
    ({"empty": ["fffe,e000"]}, "item delimiter, not an attribute"),
    ({"empty": ["10,9999"]}, "not in the DICOM dictionary"),
    ({"replace": ["10,9999=x"]}, "not in the DICOM dictionary"),
    ({"empty": ["10,0"]}, "group lengths are computed"),
    ({"replace": ["10,0=12"]}, "group lengths are computed"),
    ({"empty": ["9,0001"]}, "not a valid private tag"),
    ({"replace": ["9,0101=x"]}, "not a valid private tag"),
    ({"replace": ["10,1002=x"]}, r"\(0010,1002\) is a sequence"),
    ({"replace": ["8,20=202001011234567890123456"]}, "24 characters, at most 8"),
    ({"replace": ["8,20=20230230"]}, "not a valid calendar date"),
    ({"replace": ["28,10=abc"]}, "'abc' is not a decimal integer"),
    ({"replace": ["28,10=70000"]}, "70000 is out of the US range"),
    ({"replace": ["28,10=1\\2"]}, "2 value.s. given, the dictionary's VM is 1"),
    ({"replace": ["10,1030=heavy"]}, "expected a decimal number"),
    ({"replace": ["20,13=1.5"]}, "expected an integer"),
    ({"replace": ["20,13=99999999999"]}, "11 characters|out of the IS range"),
    ({"replace": ["10,40=m"]}, "expected upper-case letters"),
    ({"replace": ["10,20=" + "x" * 65]}, "65 characters, at most 64"),
    ({"replace": ["8,50=" + "x" * 17]}, "17 characters, at most 16"),
    ({"replace": ["8,18=1.02.3"]}, "no leading zero"),
    ({"replace": ["8,18=1..3"]}, "no empty component"),
    ({"replace": ["8,18=" + "1." * 32 + "1"]}, "65 characters, at most 64"),
    ({"replace": ["8,30=256000"]}, "out of range"),
    ({"replace": ["10,1010=58"]}, "nnnD, nnnW, nnnM or nnnY"),
    ({"replace": ["10,10=A^B^C^D^E^F"]}, "more than 5 components"),
    ({"replace": ["10,20=a\x01b"]}, "control characters"),
    ({"replace": ["8,1155=1.2\\1.3"]}, "VM is 1"),
    ({"replace": ["28,1052=nan"]}, "not a finite number|decimal number"),
    ({"replace": ["7fe0,10=abc"]}, "cannot write OB"),
    ({"replace": ["9,1027,GEMS_IDEN_01=today"]}, "not a decimal integer .SL."),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_OPS)
def test_refused_before_any_file(kwargs: dict[str, list[str]], match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        ops(**kwargs)


# --------------------------------------------------------------------------- values

VALID_VALUES = [
    ("DA", "20240229", b"20240229"),
    ("TM", "235960.123456", b"235960.123456"),
    ("TM", "07", b"07"),
    ("DT", "20240101120000.5+0100", b"20240101120000.5+0100"),
    ("DS", " -1.5e3 ", b" -1.5e3 "),
    ("IS", "-2147483648", b"-2147483648"),
    ("AS", "058Y", b"058Y"),
    ("CS", "ORIGINAL\\PRIMARY", b"ORIGINAL\\PRIMARY"),
    ("UI", "1.2.840.10008.1.2", b"1.2.840.10008.1.2"),
    ("PN", "Doe^Jane^^Dr=ideo=phon", b"Doe^Jane^^Dr=ideo=phon"),
    ("LT", "line\r\nnext\\with backslash", b"line\r\nnext\\with backslash"),
    ("US", "12\\65535", b"\x0c\x00\xff\xff"),
    ("SS", "-2", b"\xfe\xff"),
    ("UL", "1", b"\x01\x00\x00\x00"),
    ("SL", "-1", b"\xff\xff\xff\xff"),
    ("FL", "1.5", struct.pack("<f", 1.5)),
    ("FD", "-0.25", struct.pack("<d", -0.25)),
    ("UV", "18446744073709551615", b"\xff" * 8),
    ("AT", "00100010", b"\x10\x00\x10\x00"),
    ("AT", "(0028,0010)", b"\x28\x00\x10\x00"),
    ("DA", "", b""),
    ("DA", "20240101\\", b"20240101\\"),  # an empty second value is allowed
]


@pytest.mark.parametrize(("vr", "text", "expected"), VALID_VALUES)
def test_valid_values_are_encoded(vr: str, text: str, expected: bytes) -> None:
    assert encode_value(vr, text, None, [""], "test") == expected


def test_binary_values_follow_the_byte_order() -> None:
    assert encode_value("US", "1\\2", "1-n", [""], "t", little=False) == b"\x00\x01\x00\x02"
    assert encode_value("FD", "1", "1", [""], "t", little=False) == struct.pack(">d", 1.0)
    assert encode_value("AT", "00100020", "1", [""], "t", little=False) == b"\x00\x10\x00\x20"


@pytest.mark.parametrize(("count", "vm", "ok"), [
    (1, "1", True), (2, "1", False), (3, "1-3", True), (4, "1-3", False), (5, "1-n", True),
    (4, "2-2n", True), (3, "2-2n", False), (6, "3-3n", True), (0, "1", False),
    (7, "2-n", True), (1, "2-n", False)])
def test_vm(count: int, vm: str, ok: bool) -> None:
    assert _vm_allows(count, vm) is ok


def test_text_uses_the_specific_character_set() -> None:
    ds = pydicom.dcmread(CT)  # ISO_IR 100
    out, _ = edit(saved(ds), replace=["10,10=Müller^Jürgen"])
    assert b"M\xfcller^J\xfcrgen" in out
    assert str(dcm(out).PatientName) == "Müller^Jürgen"
    ds.SpecificCharacterSet = "ISO_IR 192"
    out, _ = edit(saved(ds), replace=["10,10=Müller^Jürgen"])
    assert "Müller^Jürgen".encode() in out


def test_non_ascii_without_character_set_is_refused() -> None:
    with pytest.raises(ProfileError, match="no Specific Character Set"):
        edit(saved(small()), replace=["10,10=Müller"])
    with pytest.raises(ProfileError, match="cannot be encoded in the file's Specific"):
        edit(saved(pydicom.dcmread(CT)), replace=["10,10=山田"])


def test_too_long_for_a_short_vr_is_refused() -> None:
    values = "\\".join(["1"] * 16400)  # UL 1-n: 65600 bytes do not fit a 16-bit length
    with pytest.raises(ProfileError, match="too long for UL"):
        edit(saved(small()), replace=[f"40,a132={values}"])


# --------------------------------------------------------------------------- files


def test_only_the_edited_element_changes_and_the_preamble_stays() -> None:
    data = CT.read_bytes()
    assert data[:4] == b"II*\x00"  # CT_small has a TIFF preamble; gdcmanon zeroes it
    out, _ = edit(data, replace=["10,10=ABC"])
    before, after = read_dicom(data), read_dicom(out)
    name = before.top(0x00100010)
    assert name is not None
    expected = (before.body[:name.start] + encode_element(0x00100010, "PN", b"ABC", before.enc)
                + before.body[name.end:])
    assert after.body == expected
    assert out[:128 + 4] == data[:128 + 4]
    assert after.meta_bytes == before.meta_bytes


def test_nothing_to_do_returns_the_input_bytes() -> None:
    data = CT.read_bytes()
    out, _ = edit(data, clear=["10,21b0"], remove=["10,2180", "9,1077,NOBODY"])
    assert out is data


def with_group_length(data: bytes, group: int) -> bytes:
    """``data`` with a correct (gggg,0000) added (pydicom drops them when writing)."""
    df = read_dicom(data)
    size = sum(el.end - el.start for el in df.elements if el.group == group)
    plan = EditPlan()
    plan.insert[group << 16] = encode_element(group << 16, "UL", struct.pack("<I", size), df.enc)
    return df.raw_prefix + df.meta_bytes + render(df.body, df.elements, plan, df.enc)


def group_size(data: bytes, group: int) -> int:
    return sum(el.end - el.start for el in read_dicom(data).elements
               if el.group == group and el.tag & 0xFFFF)


def test_group_lengths_are_recomputed() -> None:
    ds = small()
    ds.PatientID = "ID"
    data = with_group_length(saved(ds), 0x0010)
    assert dcm(data)[0x00100000].value == group_size(data, 0x0010)
    out, _ = edit(data, replace=["10,10=A much longer name^X"], empty=["10,30"])
    assert dcm(out)[0x00100000].value == group_size(out, 0x0010) != group_size(data, 0x0010)
    out, _ = edit(data, remove=["10,0"])
    assert 0x00100000 not in dcm(out)


def test_meta_follows_sop_uids() -> None:
    out, notes = edit(saved(small()), replace=["8,18=1.2.345", "8,16=1.2.840.10008.5.1.4.1.1.2"])
    ds = dcm(out)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == "1.2.345"
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.FileMetaInformationGroupLength == len(read_dicom(out).meta_bytes) - 12
    assert notes == []


@pytest.mark.parametrize("kind", ["empty", "remove"])
def test_meta_uid_is_not_left_stale(kind: str) -> None:
    out, notes = edit(saved(small()), force=True, **{kind: ["8,18"]})
    assert dcm(out).file_meta.MediaStorageSOPInstanceUID == ""
    assert notes == []


def test_implicit_vr_private_value_uses_the_private_dictionary() -> None:
    ds = pydicom.dcmread(CT)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    data = saved(ds, implicit=True)
    out, _ = edit(data, replace=["9,1027,gems_iden_01=5", "9,1002,GEMS_IDEN_01=CT9"])
    result = dcm(out)
    assert result[0x00091027].value == 5  # SL, encoded as 4 binary bytes
    assert result[0x00091002].value == "CT9"
    assert b"\x09\x00\x27\x10\x04\x00\x00\x00\x05\x00\x00\x00" in out


def test_big_endian_binary_replace() -> None:
    data = pydicom_file("MR_small_bigendian.dcm").read_bytes()
    out, notes = edit(data, replace=["28,10=12", "18,1310=1\\2\\3\\4"])
    ds = dcm(out)
    assert ds.Rows == 12 and list(ds.AcquisitionMatrix) == [1, 2, 3, 4]
    assert notes == []


def test_us_or_ss_follows_pixel_representation() -> None:
    out, _ = edit(CT.read_bytes(), replace=["28,106=-5"])  # CT_small is signed
    assert dcm(out)[0x00280106].VR == "SS"
    assert dcm(out).SmallestImagePixelValue == -5


def test_deflated_file_stays_deflated() -> None:
    data = pydicom_file("image_dfl.dcm").read_bytes()
    out, _ = edit(data, replace=["10,10=ABC"])
    ds = dcm(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    assert str(ds.PatientName) == "ABC"


def test_private_element_named_publicly() -> None:
    data = CT.read_bytes()
    out, _ = edit(data, replace=["9,1002=XX"], empty=["9,1004"])
    ds = dcm(out)
    assert ds[0x00091002].value == "XX" and ds[0x00091004].value in ("", None)
    with pytest.raises(ProfileError, match="name its creator"):
        edit(data, empty=["9,1077"])


def test_new_block_skips_orphaned_elements() -> None:
    ds = small()
    ds.add_new(0x00091001, "LO", "orphan")  # no (0009,0010) creator
    ds.add_new(0x00090011, "LO", "OTHER")
    out, _ = edit(saved(ds), replace=["9,1001,NEWCO=v"])
    result = dcm(out)
    assert result[0x00090012].value == "NEWCO"
    assert result[0x00091201].value == b"v\0"  # no dictionary entry: UN, as gdcmanon
    assert result[0x00091001].value == "orphan"


def test_no_free_block_is_an_error() -> None:
    ds = small()
    for block in range(0x10, 0x100):
        ds.add_new(0x00090000 | block, "LO", f"C{block}")
    with pytest.raises(ProfileError, match="no free private block"):
        edit(saved(ds), empty=["9,1001,NEWCO"])


def test_private_operations_find_blocks_created_by_earlier_ones() -> None:
    out, _ = edit(saved(small()), replace=["9,1001,NEWCO=a"], empty=["9,1002,newco"])
    ds = dcm(out)
    assert [ds[t].value for t in (0x00090010, 0x00091001)] == ["NEWCO", b"a\0"]
    assert 0x00091002 in ds and 0x00090011 not in ds


CREATOR_CHANGES = [ops(remove=["9,10"]), ops(empty=["9,10"]), ops(clear=["9,10"]),
                   ops(replace=["9,10=OTHER"])]


@pytest.mark.parametrize("change", CREATOR_CHANGES, ids=["remove", "empty", "clear", "replace"])
def test_creator_of_a_used_block_is_protected(change: tuple[DumbOp, ...]) -> None:
    data = CT.read_bytes()
    with pytest.raises(ProfileError, match=r"Private Creator 'GEMS_IDEN_01' of 9 element"):
        dumb_edit_bytes(data, DumbSettings(change))
    out = dumb_edit_bytes(data, DumbSettings(change, force=True))  # gdcmanon: block orphaned
    assert dcm(out).get(0x00090010) is None or dcm(out)[0x00090010].value in ("", "OTHER")
    assert dcm(out)[0x00091001].value == "GE_GENESIS_FF"


def test_creator_may_change_when_its_block_is_empty_or_case_only() -> None:
    out, _ = edit(CT.read_bytes(), remove=[f"9,10{b:02x}" for b in (0x01, 0x02, 0x04, 0x27,
                                                                 0x30, 0x31, 0xE6, 0xE7, 0xE9)]
                  + ["9,10"])
    assert 0x00090010 not in dcm(out)
    out, _ = edit(CT.read_bytes(), replace=["9,10=gems_iden_01"])
    assert dcm(out)[0x00090010].value == "gems_iden_01"


def test_type1_warnings_go_to_warn_unless_forced() -> None:
    data = CT.read_bytes()
    _, notes = edit(data, remove=["8,18", "20,d"], empty=["8,60"], clear=["20,52"])
    assert [note[:11] for note in notes] == ["(0008,0060)", "(0020,0052)", "(0008,0018)",
                                             "(0020,000D)"]  # empty, clear, remove
    assert "is Type 1 and is removed" in notes[2]
    _, notes = edit(data, force=True, remove=["8,18", "20,d"])
    assert notes == []
    _, notes = edit(data, replace=["8,60=CT"])
    assert notes == []


def test_warnings_module_when_no_callback() -> None:
    settings = DumbSettings(ops(empty=["28,10"]))
    with pytest.warns(DumbModeWarning, match=r"\(0028,0010\) Rows"):
        dumb_edit_bytes(CT.read_bytes(), settings)


def test_no_warning_when_an_operation_fails() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ProfileError):
            dumb_edit_bytes(CT.read_bytes(), DumbSettings(ops(empty=["28,10"],
                                                              remove=["9,10"])))


def test_static_type1_warnings() -> None:
    found = type1_warnings(ops(remove=["8,18"], replace=["8,60=", "20,d=1.2"], clear=["10,10"]))
    assert [note[:11] for note in found] == ["(0008,0060)", "(0008,0018)"]


def test_sequence_can_be_emptied_but_not_replaced() -> None:
    data = CT.read_bytes()
    out, _ = edit(data, empty=["10,1002"])
    assert len(dcm(out).OtherPatientIDsSequence) == 0


def test_dumb_edit_writes_atomically_and_pickles(tmp_path: Path) -> None:
    settings = DumbSettings(ops(empty=["10,10"]))
    operation = pickle.loads(pickle.dumps(DumbEdit(settings)))
    dst = tmp_path / "out" / "ct.dcm"
    assert operation(CT, dst) == dst.stat().st_size
    assert dcm(dst.read_bytes()).PatientName == ""
    failing = DumbEdit(DumbSettings(ops(remove=["9,10"])))
    with pytest.raises(ProfileError):
        failing(CT, tmp_path / "out" / "bad.dcm")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct.dcm"]


def test_differences_are_documented() -> None:
    assert len(GDCMANON_DIFFERENCES) >= 10
    assert all(text.endswith((")", ".")) for text in GDCMANON_DIFFERENCES)


@pytest.mark.parametrize("change", [True, False])
def test_trailing_nul_padding_after_the_last_element_is_kept(change: bool) -> None:
    """As -e and -d keep it: whether an edit changed the file or not (found by the split
    fuzz target: an edited file lost it, an unedited one kept it)."""
    data = CT.read_bytes() + b"\0" * 5
    out, _ = edit(data, replace=["10,10=Anon"] if change else [], clear=["10,21b0"])
    assert out.endswith(b"\0" * 5) and len(out) - len(data) == (
        len(edit(CT.read_bytes(), replace=["10,10=Anon"])[0]) - len(CT.read_bytes())
        if change else 0)
