"""The synthetic archive generator: determinism, layout, cross-file UIDs, and real-tool reads."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from pipeline import sample
from pipeline.sample import Kind, Shape, generate_archive, main
from tasks.errors import OutputError, UsageError
from tests.conftest import BIN, Pki, require_tool

SHAPE: dict[str, Any] = {"patients": 2, "studies": 2, "series": 2, "instances": 3, "seed": 7}
N_FILES = 2 * 2 * 2 * 3
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")
SCRIPT = BIN / "anonpipe-sample"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_archive(tmp_path_factory.mktemp("sample") / "out", **SHAPE)


@pytest.fixture(scope="module")
def datasets(archive: list[Path]) -> dict[Path, Dataset]:
    return {path: pydicom.dcmread(path) for path in archive}


@pytest.fixture(scope="module")
def large_ct(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("large") / "out"
    return generate_archive(out, patients=1, studies=1, series=1, instances=3, kind="large-ct")


def _parts(path: Path) -> tuple[str, str, str, str]:
    *_, patient, study, series, name = path.parts
    return patient, study, series, name


# --- layout and determinism ------------------------------------------------------------------


def test_layout_and_count(archive: list[Path]) -> None:
    assert len(archive) == N_FILES
    assert archive == sorted(archive)
    root = archive[0].parents[3]
    names = [p.relative_to(root).as_posix() for p in archive]
    assert names[:4] == [
        "P0001/ST01/SE01/IM0001.dcm",
        "P0001/ST01/SE01/IM0002.dcm",
        "P0001/ST01/SE01/IM0003.dcm",
        "P0001/ST01/SE02/IM0001.dcm",
    ]
    assert names[-1] == "P0002/ST02/SE02/IM0003.dcm"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        str(p.relative_to(root)) for p in archive
    ]


@pytest.mark.parametrize(
    ("shape", "widths"),
    [(Shape(1, 1, 1, 1), (4, 2, 2, 4)), (Shape(12345, 100, 3, 99999), (5, 3, 2, 5))],
)
def test_widths_grow_only_when_needed(shape: Shape, widths: tuple[int, ...]) -> None:
    assert shape.widths() == widths


def test_same_arguments_same_bytes(archive: list[Path], tmp_path: Path) -> None:
    again = generate_archive(tmp_path / "again", **SHAPE)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in archive]


def test_other_seed_other_values(archive: list[Path], tmp_path: Path) -> None:
    other = generate_archive(tmp_path / "other", **{**SHAPE, "seed": 8})
    first, second = pydicom.dcmread(archive[0]), pydicom.dcmread(other[0])
    assert first.PatientName != second.PatientName
    assert first.StudyInstanceUID != second.StudyInstanceUID


def test_patient_does_not_depend_on_archive_size(archive: list[Path], tmp_path: Path) -> None:
    small = generate_archive(
        tmp_path / "one", patients=1, studies=1, series=1, instances=1, seed=SHAPE["seed"]
    )
    assert pydicom.dcmread(small[0]).PatientName == pydicom.dcmread(archive[0]).PatientName


@pytest.mark.parametrize(
    ("modality", "kind"), [("CT", Kind.SMALL), ("MR", Kind.SMALL), ("CT", Kind.LARGE_CT)]
)
def test_fast_encoding_equals_dcmwrite(modality: str, kind: Kind) -> None:
    """The spliced bytes are exactly what pydicom's dcmwrite writes for the same dataset."""
    perms = sample._Permutations.draw(3)
    template = sample.load_template(modality, kind)
    patient = sample.make_patient(3, perms, 0, "P0001")
    study = sample.make_study(3, perms, patient, 1, 0, "ST01")
    series = sample.make_series(3, patient, study, 1, modality, "SE01", 2)
    overlay = sample.series_overlay(template, patient, study, series)
    encoder = sample.SeriesEncoder(template, overlay)
    noise = sample._noise_block(sample._rng(3, "noise"))
    for index in range(2):
        pixels = sample.ct_pixels(512, 512, index, 2, noise) if kind is Kind.LARGE_CT else None
        instance = sample.instance_elements(template, patient, series, index, pixels)
        assert encoder.encode(instance) == sample.reference_bytes(template, overlay, instance)


# --- file format -----------------------------------------------------------------------------


def test_part10_header(archive: list[Path], datasets: dict[Path, Dataset]) -> None:
    for path in archive:
        assert path.read_bytes()[:132] == b"\x00" * 128 + b"DICM"
        ds = datasets[path]
        assert ds.file_meta.ImplementationVersionName == "ANONPIPE_SAMPLE"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID


def test_series_alternate_ct_mr_and_keep_template_pixels(datasets: dict[Path, Dataset]) -> None:
    templates = {m: pydicom.dcmread(sample._testdata(f"{m}_small.dcm")) for m in ("CT", "MR")}
    for path, ds in datasets.items():
        modality = "CT" if _parts(path)[2] == "SE01" else "MR"
        assert ds.Modality == modality
        assert ds.PixelData == templates[modality].PixelData
    ct = next(ds for ds in datasets.values() if ds.Modality == "CT")
    assert ct[0x0009, 0x0010].value == "GEMS_IDEN_01"  # the GE blocks stay as they were
    assert ct[0x0043, 0x1028].value == templates["CT"][0x0043, 0x1028].value


# --- identities and UIDs ---------------------------------------------------------------------


def test_uids_consistent_per_level(datasets: dict[Path, Dataset]) -> None:
    by_level: dict[str, dict[tuple[str, ...], set[str]]] = defaultdict(lambda: defaultdict(set))
    for path, ds in datasets.items():
        patient, study, series, _ = _parts(path)
        by_level["study"][(patient, study)].add(ds.StudyInstanceUID)
        by_level["series"][(patient, study, series)].add(ds.SeriesInstanceUID)
        by_level["for"][(patient, study, series)].add(ds.FrameOfReferenceUID)
        for uid in (
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.FrameOfReferenceUID,
            ds.SOPInstanceUID,
        ):
            assert UID_RE.match(uid) and len(uid) <= 64
    for level, groups in by_level.items():
        assert all(len(uids) == 1 for uids in groups.values()), level
        assert len(set().union(*groups.values())) == len(groups), f"{level} UIDs not distinct"
    assert len({ds.SOPInstanceUID for ds in datasets.values()}) == N_FILES


def test_referenced_image_points_at_previous_file(
    archive: list[Path], datasets: dict[Path, Dataset]
) -> None:
    for previous, path in itertools.pairwise(archive):
        ds = datasets[path]
        if ds.InstanceNumber == 1:
            assert "ReferencedImageSequence" not in ds
            continue
        (item,) = ds.ReferencedImageSequence
        assert _parts(previous)[:3] == _parts(path)[:3]
        assert item.ReferencedSOPInstanceUID == datasets[previous].SOPInstanceUID
        assert item.ReferencedSOPClassUID == datasets[previous].SOPClassUID
        assert ds.InstanceNumber == datasets[previous].InstanceNumber + 1
    assert datasets[archive[0]].InstanceNumber == 1


def test_request_attributes_nest_the_study(datasets: dict[Path, Dataset]) -> None:
    for ds in datasets.values():
        (request,) = ds.RequestAttributesSequence
        assert request.RequestedProcedureID and request.ScheduledProcedureStepID
        assert request.AccessionNumber == ds.AccessionNumber
        (study,) = request.ReferencedStudySequence
        assert study.ReferencedSOPInstanceUID == ds.StudyInstanceUID


def test_patients_and_studies_distinct(datasets: dict[Path, Dataset]) -> None:
    patients: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    studies: dict[tuple[str, str], set[tuple[str, ...]]] = defaultdict(set)
    for path, ds in datasets.items():
        patient, study, _, _ = _parts(path)
        patients[patient].add((str(ds.PatientName), ds.PatientID, ds.PatientBirthDate))
        studies[(patient, study)].add((ds.AccessionNumber, ds.StudyID))
    for groups in (patients, studies):
        assert all(len(values) == 1 for values in groups.values())
        values = [next(iter(v)) for v in groups.values()]
        for column in zip(*values):
            assert len(set(column)) == len(column)


def test_patient_phi_everywhere(datasets: dict[Path, Dataset]) -> None:
    ds = next(iter(datasets.values()))
    family, given = str(ds.PatientName).split("^")
    assert family in sample.FAMILY_NAMES
    assert (given, ds.PatientSex) in sample.GIVEN_NAMES
    assert re.fullmatch(r"\d{3}Y", ds.PatientAge)
    for keyword in (
        "PatientAddress",
        "PatientTelephoneNumbers",
        "EthnicGroup",
        "Occupation",
        "AdditionalPatientHistory",
        "PatientComments",
        "ReferringPhysicianName",
        "InstitutionName",
        "InstitutionAddress",
        "OperatorsName",
        "PerformingPhysicianName",
        "StationName",
        "DeviceSerialNumber",
        "ProtocolName",
        "SeriesDescription",
        "StudyDescription",
        "ContentDate",
        "ContentTime",
        "AcquisitionDateTime",
        "ImageComments",
        "StudyDate",
        "StudyTime",
        "SeriesDate",
        "SeriesTime",
    ):
        assert ds.get(keyword), keyword
    (other,) = ds.OtherPatientIDsSequence
    assert other.PatientID and other.IssuerOfPatientID
    assert given in ds.PatientComments


@pytest.mark.parametrize(("series", "slot"), [("SE01", 0x11), ("SE02", 0x10)])
def test_private_block_with_nested_phi(
    datasets: dict[Path, Dataset], series: str, slot: int
) -> None:
    """Ours takes the first free slot: (0009,0010) in MR, (0009,0011) in CT (GE holds 0010)."""
    ds = next(ds for path, ds in datasets.items() if _parts(path)[2] == series)
    block = ds.private_block(0x0009, sample.PRIVATE_CREATOR)
    assert block.block_start == slot << 8
    assert block[0x01].VR == "LO" and block[0x01].value == str(ds.PatientName).replace("^", " ")
    assert block[0x02].VR == "DS"
    assert block[0x03].VR == "SQ"
    (item,) = block[0x03].value
    assert item.PatientName == ds.PatientName
    assert item.private_block(0x0009, sample.PRIVATE_CREATOR)[0x04].VR == "LO"


# --- large CT --------------------------------------------------------------------------------


def test_large_ct(large_ct: list[Path]) -> None:
    pixels = []
    for path in large_ct:
        ds = pydicom.dcmread(path)
        assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Modality == "CT"
        assert len(ds.PixelData) == 512 * 512 * 2
        assert path.stat().st_size > 512 * 512 * 2
        pixels.append(ds.PixelData)
    assert len(set(pixels)) == len(pixels)  # slices differ


# --- real tools ------------------------------------------------------------------------------


def test_dcmdump_reads_files(archive: list[Path], large_ct: list[Path]) -> None:
    dcmdump = require_tool("dcmdump")
    for path in (archive[0], archive[-1], large_ct[-1]):
        run = subprocess.run(
            [dcmdump, "-q", str(path)], check=False, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        assert "E:" not in run.stderr and "W:" not in run.stderr
        assert "ANONPIPE SAMPLE" in run.stdout


@pytest.mark.gdcm
def test_gdcmanon_encrypts_and_restores(
    archive: list[Path], pki: Pki, tmp_path: Path
) -> None:
    gdcmanon = require_tool("gdcmanon")
    cert, key = pki.cert, pki.key
    for path in (archive[1], archive[-1]):  # a CT and an MR, both with a cross-file reference
        anon, back = tmp_path / f"anon-{path.name}", tmp_path / f"back-{path.name}"
        run = subprocess.run(
            [gdcmanon, "-c", str(cert), "-e", str(path), str(anon)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        assert pydicom.dcmread(anon).PatientName != pydicom.dcmread(path).PatientName
        run = subprocess.run(
            [gdcmanon, "-k", str(key), "-d", str(anon), str(back)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        assert pydicom.dcmread(back).PatientName == pydicom.dcmread(path).PatientName


# --- API and CLI -----------------------------------------------------------------------------

BAD_API_ARGUMENTS = [
    ({"patients": 0}, "patients must be a positive integer"),
    ({"instances": -1}, "instances must be a positive integer"),
    ({"series": True}, "series must be a positive integer"),
    ({"kind": "huge"}, "kind must be one of"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_API_ARGUMENTS)
def test_api_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        generate_archive(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_api_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        generate_archive(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_main_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                str(out),
                "--patients",
                "1",
                "--studies",
                "1",
                "--series",
                "2",
                "--instances",
                "2",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    files = sorted(out.rglob("*.dcm"))
    size = sum(p.stat().st_size for p in files)
    assert len(files) == 4
    assert len(lines) == 1
    assert re.search(rf"\b4 files, {size} bytes, [0-9.]+ s\b", lines[0])


def test_main_refuses_non_empty_out_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main([str(tmp_path), "--instances", "1"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert main([str(tmp_path), "--instances", "1", "--force"]) == 0
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert len(list(tmp_path.rglob("*.dcm"))) == 4


BAD_CLI_ARGUMENTS = [
    (["--patients", "0"], "must be at least 1"),
    (["--instances", "ten"], "not an integer"),
    (["--kind", "huge"], "invalid choice"),
    (["--seed", "x"], "invalid int value"),
    (["--bogus"], "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_CLI_ARGUMENTS)
def test_main_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_main_requires_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "OUT" in capsys.readouterr().err


def test_installed_command(archive: list[Path], tmp_path: Path) -> None:
    """The console script, in a fresh process with another hash seed, writes the same bytes."""
    assert SCRIPT.exists(), f"{SCRIPT} missing: is the project installed in this venv?"
    out = tmp_path / "out"
    argv = [str(SCRIPT), str(out)] + [f"--{k}={v}" for k, v in SHAPE.items()]
    run = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert run.returncode == 0, run.stderr
    assert f"{N_FILES} files" in run.stdout
    written = sorted(out.rglob("*.dcm"))
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in archive]
    bad = subprocess.run(
        [str(SCRIPT), str(out), "--kind", "huge"], check=False, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
