"""Dumb mode against the real ``gdcmanon --dumb``: one test per cell of its grammar.

Each test runs gdcmanon and anonpipe on the same input.  Where gdcmanon is right, the data
sets must be equal (pydicom equality; gdcmanon zeroes the preamble and rewrites part of the
file meta, so bytes are not compared, but the mirrored (0002,0002)/(0002,0003) are).  Where
gdcmanon misbehaves, the test asserts its behaviour *and* our clean error, so the difference
is documented by a test.  Nothing is mocked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tasks.dumb import IRREVERSIBLE_OPS, DumbEdit, DumbSettings, parse_dumb_ops
from tasks.errors import ProfileError
from tasks.pixeltail import SPLIT_FROM
from tests.conftest import REPO, Pki, pydicom_file

pytestmark = [pytest.mark.gdcm, pytest.mark.usefixtures("needs_gdcmanon")]

GE = "CT_small.dcm"  # GEMS_* private blocks, Other Patient IDs Sequence (0010,1002)
MR = "MR_small.dcm"


@pytest.fixture(scope="module")
def siemens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MR_small with two Siemens blocks; SIEMENS MEDCOM HEADER owns block 11, not 10."""
    ds = pydicom.dcmread(pydicom_file(MR))
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")
    ds.add_new(0x00290011, "LO", "SIEMENS MEDCOM HEADER ")
    ds.add_new(0x00291120, "OB", b"HISTORY-OF-THE-PATIENT")
    ds.add_new(0x00291131, "LO", "4.0.12412818")
    path = tmp_path_factory.mktemp("siemens") / "siemens.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def source(name: str, siemens: Path) -> Path:
    return siemens if name == "siemens" else pydicom_file(name)


def gdcmanon(
    tmp_path: Path, src: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "gdcm.dcm"
    proc = subprocess.run(["gdcmanon", "--dumb", *args, str(src), str(out)],
                          check=False, capture_output=True, text=True, timeout=60)
    return proc, out


def split_args(args: tuple[str, ...]) -> dict[str, list[str]]:
    """gdcmanon's ``--empty X --replace Y ...`` as parse_dumb_ops' four lists."""
    lists: dict[str, list[str]] = {"empty": [], "clear": [], "remove": [], "replace": []}
    for option, value in zip(args[::2], args[1::2]):
        lists[option.removeprefix("--")].append(value)
    return lists


def anonpipe(tmp_path: Path, src: Path, *args: str, force: bool = False
             ) -> tuple[Path, list[str]]:
    """Our dumb mode through the pipeline's per-file operation; returns output and warnings."""
    out = tmp_path / "ours.dcm"
    notes: list[str] = []
    ops = parse_dumb_ops(**split_args(args))
    DumbEdit(DumbSettings(ops, force=force), warn=notes.append)(src, out)
    return out, notes


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)


def assert_same_dataset(ours: Path, theirs: Path) -> None:
    a, b = read(ours), read(theirs)
    differing = sorted(t for t in set(a.keys()) | set(b.keys()) if a.get(t) != b.get(t))
    assert not differing, [(str(a.get(t)), str(b.get(t))) for t in differing]
    assert a == b
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
        assert a.file_meta.get(keyword) == b.file_meta.get(keyword), keyword


# --------------------------------------------------------------- cells where gdcmanon is right

#: (cell, input, gdcmanon arguments); gdcmanon exits 0 and we must give the same data set.
SAME = [
    ("empty-present", GE, ("--empty", "10,10")),
    ("empty-absent-created", GE, ("--empty", "10,21b0")),
    ("empty-private-present-case-insensitive", GE, ("--empty", "9,1001,gems_iden_01")),
    ("empty-private-absent-element", GE, ("--empty", "9,10f0,GEMS_IDEN_01")),
    ("empty-private-absent-creator", GE, ("--empty", "9,1001,NEWCREATOR")),
    ("empty-private-new-group", MR, ("--empty", "0029,20,SIEMENS MEDCOM HEADER")),
    ("empty-private-siemens-block-11", "siemens", ("--empty", "29,1131,siemens medcom header")),
    ("empty-binary", GE, ("--empty", "28,10")),
    ("clear-present", MR, ("--clear", "10,20")),
    ("clear-absent-noop", GE, ("--clear", "10,21b0")),
    ("clear-sequence", GE, ("--clear", "10,1002")),
    ("clear-private-manpage-example", "siemens", ("--clear", "0029,20,SIEMENS MEDCOM HEADER")),
    ("clear-private-overlay-file", "examples_overlay.dcm",
     ("--clear", "0029,31,SIEMENS MEDCOM HEADER")),
    ("clear-private-absent", "examples_overlay.dcm", ("--clear", "0029,20,SIEMENS MEDCOM HEADER")),
    ("clear-private-absent-creator", GE, ("--clear", "9,1001,NOBODY")),
    ("clear-binary", GE, ("--clear", "28,11")),
    ("remove-present-top-level-only", GE, ("--remove", "10,20")),
    ("remove-absent-noop", GE, ("--remove", "10,21b0")),
    ("remove-sequence", GE, ("--remove", "10,1002")),
    ("remove-private-element-creator-stays", GE, ("--remove", "9,1002,GEMS_IDEN_01")),
    ("remove-private-siemens", "siemens", ("--remove", "0029,20,SIEMENS MEDCOM HEADER")),
    ("remove-binary", GE, ("--remove", "28,11")),
    ("replace-present-odd-length-space-pad", GE, ("--replace", "10,10=ABC")),
    ("replace-present-uid-nul-pad-resyncs-meta", GE, ("--replace", "8,18=1.2.34")),
    ("replace-sop-class-resyncs-meta", GE, ("--replace", "8,16=1.2.840.10008.5.1.4.1.1.7")),
    ("replace-absent-created", GE, ("--replace", "10,1040= x")),
    ("replace-gdcmanon-comma-form", GE, ("--replace", "10,1030,72.5")),
    ("replace-multi-valued", GE, ("--replace", "8,8=ORIGINAL\\PRIMARY\\AXIAL")),
    ("manpage-five-operations", GE, ("--empty", "10,10", "--clear", "10,20", "--remove", "10,40",
                                     "--remove", "10,1010", "--replace", "10,1030,10")),
    ("manpage-five-operations-mr", MR, ("--empty", "10,10", "--clear", "10,20", "--remove",
                                        "10,40", "--remove", "10,1010", "--replace", "10,1030,10")),
    ("order-replace-before-remove", GE, ("--remove", "10,10", "--replace", "10,10=X")),
    ("order-replace-before-empty", GE, ("--empty", "10,10", "--replace", "10,10=X")),
    ("order-private-before-public", GE, ("--remove", "9,1001", "--empty", "9,1001,GEMS_IDEN_01")),
    ("implicit-vr", "MR_small_implicit.dcm",
     ("--empty", "10,10", "--replace", "10,20=ABC", "--remove", "8,70", "--empty", "10,21b0")),
    ("big-endian", "MR_small_bigendian.dcm",
     ("--empty", "10,10", "--replace", "10,20=ABC", "--empty", "28,10", "--clear", "10,1030")),
    ("deflated", "image_dfl.dcm", ("--empty", "10,10", "--replace", "10,20=ABC")),
]


@pytest.mark.parametrize(("cell", "name", "args"), SAME, ids=[row[0] for row in SAME])
def test_same_data_set_as_gdcmanon(
    cell: str, name: str, args: tuple[str, ...], siemens: Path, tmp_path: Path
) -> None:
    src = source(name, siemens)
    proc, theirs = gdcmanon(tmp_path, src, *args)
    assert proc.returncode == 0, proc.stderr
    ours, _ = anonpipe(tmp_path, src, *args)
    assert_same_dataset(ours, theirs)


def test_empty_sequence_gives_zero_items_but_gdcmanon_reports_failure(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--empty", "10,1002")
    assert proc.returncode == 1  # gdcmanon: emptied, written, yet "failed"
    ours, _ = anonpipe(tmp_path, src, "--empty", "10,1002")
    assert_same_dataset(ours, theirs)
    assert len(read(ours).OtherPatientIDsSequence) == 0


def test_remove_keeps_nested_copies(tmp_path: Path) -> None:
    """Top level only, like gdcmanon: Patient ID inside (0010,1002) stays."""
    ours, _ = anonpipe(tmp_path, pydicom_file(GE), "--remove", "10,20")
    ds = read(ours)
    assert "PatientID" not in ds
    assert all("PatientID" in item for item in ds.OtherPatientIDsSequence)


def test_padding_bytes_match_gdcmanon(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    args = ("--replace", "10,10=ABC", "--replace", "8,18=1.2.345")
    proc, theirs = gdcmanon(tmp_path, src, *args)
    assert proc.returncode == 0
    ours, _ = anonpipe(tmp_path, src, *args)
    for path in (ours, theirs):
        data = path.read_bytes()
        assert b"\x10\x00\x10\x00PN\x04\x00ABC " in data
        assert b"\x08\x00\x18\x00UI\x08\x001.2.345\x00" in data
        assert b"\x02\x00\x03\x00UI\x08\x001.2.345\x00" in data


def test_private_creation_takes_first_free_block(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--empty", "9,1001,NEWCREATOR")
    assert proc.returncode == 0
    ours, _ = anonpipe(tmp_path, src, "--empty", "9,1001,NEWCREATOR")
    assert_same_dataset(ours, theirs)
    ds = read(ours)
    assert ds[0x00090011].value == "NEWCREATOR"
    assert ds[0x00091101].value in (b"", None, "")


# --------------------------------------------------------------- cells where gdcmanon is wrong


def unchanged(path: Path, src: Path) -> bool:
    return read(path) == read(src)


def test_private_replace_works_where_gdcmanon_exits_silently(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--replace", "9,1002,GEMS_IDEN_01=CT02")
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "")
    assert not theirs.exists()
    ours, _ = anonpipe(tmp_path, src, "--replace", "9,1002,GEMS_IDEN_01=CT02")
    ds, original = read(ours), read(src)
    assert ds[0x00091002].value == "CT02"
    del ds[0x00091002], original[0x00091002]
    assert ds == original


def test_private_replace_creates_block_and_element(tmp_path: Path) -> None:
    ours, _ = anonpipe(tmp_path, pydicom_file(MR),
                       "--replace", "0029,31,SIEMENS MEDCOM HEADER=4.0.1")
    ds = read(ours)
    assert ds[0x00290010].value == "SIEMENS MEDCOM HEADER"
    assert (ds[0x00291031].VR, ds[0x00291031].value) == ("LO", "4.0.1")


def test_public_form_replace_of_private_attribute(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "-V", "--replace", "9,1002=XX")
    assert proc.returncode == 1 and unchanged(theirs, src)
    assert "Cannot replace private attribute" in proc.stderr  # only shown with -V
    ours, _ = anonpipe(tmp_path, src, "--replace", "9,1002=XX")
    assert read(ours)[0x00091002].value == "XX"


def test_replace_binary_vr_is_encoded(tmp_path: Path) -> None:
    for name in (GE, "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        src = pydicom_file(name)
        proc, theirs = gdcmanon(tmp_path, src, "--replace", "28,10=12")
        assert proc.returncode == 1  # "You need to explicitly specify the length"
        assert unchanged(theirs, src)  # ... and the file is written anyway
        ours, _ = anonpipe(tmp_path, src, "--replace", "28,10=12")
        ds, original = read(ours), read(src)
        assert ds.Rows == 12
        original.Rows = 12
        assert ds == original


def test_replace_sequence_is_an_error(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--replace", "10,1002=X")
    assert proc.returncode == 1 and unchanged(theirs, src)
    with pytest.raises(ProfileError, match=r"\(0010,1002\) is a sequence"):
        anonpipe(tmp_path, src, "--replace", "10,1002=X")


def test_invalid_value_for_vr_is_refused(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--replace", "8,20=202001011234567890123456")
    assert proc.returncode == 0
    assert read(theirs).StudyDate == "202001011234567890123456"  # an invalid DA, exit 0
    with pytest.raises(ProfileError, match="not a valid DA value: 24 characters, at most 8"):
        anonpipe(tmp_path, src, "--replace", "8,20=202001011234567890123456")


@pytest.mark.parametrize("args", [("--empty", "2,3"), ("--replace", "2,3=1.2"),
                                  ("--empty", "4,1130"), ("--replace", "6,10=X")])
def test_group_below_0008_for_empty_and_replace(args: tuple[str, ...], tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, *args)
    assert (proc.returncode, proc.stderr) == (1, "")  # fails without a message ...
    assert unchanged(theirs, src)  # ... and writes the file anyway
    with pytest.raises(ProfileError, match="group 000[2-6]"):
        anonpipe(tmp_path, src, *args)


@pytest.mark.parametrize("option", ["--clear", "--remove"])
def test_clear_and_remove_on_file_meta_are_refused(option: str, tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, option, "2,3")
    assert proc.returncode == 0  # silently does nothing: (0002,0003) keeps the UID
    assert read(theirs).file_meta.MediaStorageSOPInstanceUID == read(src).SOPInstanceUID
    with pytest.raises(ProfileError, match="file meta information"):
        anonpipe(tmp_path, src, option, "2,3")


def test_unknown_public_tag(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--empty", "10,9999")
    assert proc.returncode == 1 and unchanged(theirs, src)
    with pytest.raises(ProfileError, match="not in the DICOM dictionary"):
        anonpipe(tmp_path, src, "--empty", "10,9999")


def test_first_failure_leaves_gdcmanon_output_half_done(tmp_path: Path) -> None:
    """gdcmanon skips every later operation but writes; we refuse and write nothing."""
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--replace", "10,1002=X", "--empty", "10,10")
    assert proc.returncode == 1
    assert str(read(theirs).PatientName) == str(read(src).PatientName)  # --empty never ran
    with pytest.raises(ProfileError):
        anonpipe(tmp_path, src, "--replace", "10,1002=X", "--empty", "10,10")
    assert not (tmp_path / "ours.dcm").exists()


def test_file_dependent_failure_writes_nothing(tmp_path: Path) -> None:
    """A failure found while editing (here: orphaning a block) leaves no output either."""
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--remove", "9,10", "--empty", "10,10")
    assert proc.returncode == 0
    assert 0x00090010 not in read(theirs) and 0x00091001 in read(theirs)  # orphaned block
    with pytest.raises(ProfileError, match="orphan"):
        anonpipe(tmp_path, src, "--remove", "9,10", "--empty", "10,10")
    assert not (tmp_path / "ours.dcm").exists()
    assert list(tmp_path.iterdir()) == [theirs]  # no temporary file left either


def test_removing_a_creator_with_force_is_gdcmanon_result(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--remove", "9,10")
    assert proc.returncode == 0
    ours, _ = anonpipe(tmp_path, src, "--remove", "9,10", force=True)
    assert_same_dataset(ours, theirs)


@pytest.mark.parametrize(("spec", "reason"), [("10,10,ABC", "even"),
                                              ("9,1002,", "empty"),
                                              ("9,1002,GEMS\\X", "backslash")])
def test_bad_creator_is_refused_where_gdcmanon_falls_back_to_public(
    spec: str, reason: str, tmp_path: Path
) -> None:
    src = pydicom_file(GE)
    public = spec.rsplit(",", 1)[0]
    proc, theirs = gdcmanon(tmp_path, src, "--clear", spec)
    assert proc.returncode == 0
    (tmp_path / "public").mkdir()
    _, fallback = gdcmanon(tmp_path / "public", src, "--clear", public)
    assert read(theirs) == read(fallback) != read(src)  # the creator is silently ignored
    with pytest.raises(ProfileError, match=reason):
        anonpipe(tmp_path, src, "--clear", spec)


def test_removing_sop_instance_uid_warns_and_writes(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--remove", "8,18")
    assert proc.returncode == 1 and "Could not Write" in proc.stderr
    assert not theirs.exists()
    ours, notes = anonpipe(tmp_path, src, "--remove", "8,18")
    assert len(notes) == 1 and "(0008,0018)" in notes[0]
    ds = read(ours)
    assert "SOPInstanceUID" not in ds
    assert ds.file_meta.MediaStorageSOPInstanceUID == ""  # no stale copy of the UID
    _, quiet = anonpipe(tmp_path, src, "--remove", "8,18", force=True)
    assert quiet == []


def test_emptying_sop_class_matches_gdcmanon_with_a_warning(tmp_path: Path) -> None:
    src = pydicom_file(GE)
    proc, theirs = gdcmanon(tmp_path, src, "--empty", "8,16")
    assert proc.returncode == 0  # an invalid file, silently
    ours, notes = anonpipe(tmp_path, src, "--empty", "8,16")
    assert_same_dataset(ours, theirs)
    assert len(notes) == 1 and "Type 1" in notes[0]


# --------------------------------------------------------------- irreversible anonymization


@pytest.mark.parametrize("name", [GE, MR, "MR_small_implicit.dcm"])
def test_irreversible_second_step(name: str, pki: Pki, tmp_path: Path) -> None:
    """The manpage: gdcmanon -c cert -e, then --dumb --remove 400,500 / 12,62 / 12,63."""
    reversible = tmp_path / "reversible.dcm"
    proc = subprocess.run(
        ["gdcmanon", "-c", str(pki.cert), "-e", str(pydicom_file(name)), str(reversible)],
        check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert {0x04000500, 0x00120062, 0x00120063} <= set(read(reversible).keys())
    _, theirs = gdcmanon(tmp_path, reversible, "--remove", "400,500", "--remove", "12,62",
                         "--remove", "12,63")
    ours = tmp_path / "irreversible.dcm"
    DumbEdit(DumbSettings(IRREVERSIBLE_OPS))(reversible, ours)
    ds = read(ours)
    assert not {0x04000500, 0x00120062, 0x00120063} & set(ds.keys())
    assert_same_dataset(ours, theirs)
    back = tmp_path / "back.dcm"
    proc = subprocess.run(["gdcmanon", "-k", str(pki.key), "-d", str(ours), str(back)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1  # nothing left to re-identify from


@pytest.mark.parametrize("args", [
    ("--replace", "10,10=Anon", "--empty", "10,20", "--remove", "8,90"),
    ("--remove", "fffc,fffc", "--clear", "10,30"),
    ("--empty", "7fe0,10"),
], ids=["header", "after-pixels", "pixel-data"])
def test_a_large_slice_edited_as_gdcmanon_does(args: tuple[str, ...], tmp_path: Path) -> None:
    """A generated 512x512 CT slice (530 KB, trailing padding): our dumb mode leaves its pixel
    data in the file and copies it (or reads it whole when an edit names it); the data set
    is gdcmanon's."""
    archive = tmp_path / "in"
    subprocess.run([sys.executable, "-m", "pipeline.sample", str(archive), "--seed", "5",
                    "--patients", "1", "--studies", "1", "--series", "1", "--instances", "1",
                    "--kind", "large-ct"], check=True, cwd=REPO, capture_output=True)
    (src,) = archive.rglob("*.dcm")
    assert src.stat().st_size >= SPLIT_FROM
    proc, theirs = gdcmanon(tmp_path, src, *args)
    assert proc.returncode == 0, proc.stderr
    ours, _ = anonpipe(tmp_path, src, *args)
    assert_same_dataset(ours, theirs)
