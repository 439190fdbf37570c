"""Output names (PS3.15 E.1.1: identifiers in file names) and outputs of earlier settings."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipeline.cli import main
from pipeline.names import PathIdentifiers, date_spellings, paths_holding
from tests.conftest import run_main

CT = "1.2.840.10008.5.1.4.1.1.2"


def _write(path: Path, name: str, pid: str, accession: str, birth: str, study: str,
           charset: str | None = None) -> None:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.10.543.")
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".1"
    ds.PatientName = name
    ds.PatientID = pid
    ds.AccessionNumber = accession
    ds.PatientBirthDate = birth
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture()
def exported(tmp_path: Path) -> Path:
    """An export named as hospitals name them: name, ID, accession, birth date in paths."""
    src = tmp_path / "in"
    study = "1.2.826.0.1.3680043.10.543.77"
    for n in range(3):
        _write(src / "DOE^JOHN_5551234" / "ACC_A7654321" / f"{n}.dcm", "DOE^JOHN", "5551234",
               "A7654321", "19700102", study)
    _write(src / "clinic" / "LI_CT" / "1.dcm", "LI^NA", "X-991", "B1", "19800304",
           study + "9")
    _write(src / "clinic" / "04.03.1980" / "scan.dcm", "LI^NA", "X-991", "B1", "19800304",
           study + "9")
    return src


def _run(*argv: str) -> tuple[int, str]:
    proc = run_main("-e", "--irreversible", "-r", "--workers", "0", *argv)
    return proc.returncode, proc.stderr


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_identifiers_in_mirrored_names_stop_before_writing(exported: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, err = _run("--store", str(tmp_path / "s.sqlite"), str(exported), str(out))
    assert code == 2
    assert not out.exists() or not _files(out)
    lines = [line for line in err.splitlines()
             if line.startswith("anonpipe:") and "created a new secret" not in line]
    assert len(lines) == 1 and "5 output paths" in lines[0]
    assert "--output-names uid" in lines[0] and "--keep-names" in lines[0]
    for value in ("DOE", "JOHN", "5551234", "A7654321", "LI_CT", "1980"):
        assert value not in err


def test_uid_names_are_replacements_stable_and_resumable(exported: Path, tmp_path: Path) -> None:
    out, store = tmp_path / "out", str(tmp_path / "s.sqlite")
    code, _ = _run("--store", store, "--output-names", "uid", str(exported), str(out))
    assert code == 0
    names = _files(out)
    assert len(names) == 5
    for rel in names:
        patient, study, series, sop = rel.split("/")
        assert patient.startswith("ANON") and study.startswith("2.25.")
        assert series.startswith("2.25.") and sop.startswith("2.25.") and sop.endswith(".dcm")
        ds = pydicom.dcmread(out / rel)
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID + ".dcm") == (
            study, series, sop)
    assert len({rel.split("/")[0] for rel in names}) == 2  # one pseudonym per patient
    before = {rel: (out / rel).stat().st_mtime_ns for rel in names}
    code, _ = _run("--store", store, "--output-names", "uid", str(exported), str(out))
    assert code == 0 and {rel: (out / rel).stat().st_mtime_ns for rel in _files(out)} == before


def test_a_rerun_with_other_settings_leaves_no_older_output(exported: Path,
                                                            tmp_path: Path) -> None:
    out, store = tmp_path / "out", str(tmp_path / "s.sqlite")
    assert _run("--store", store, "--keep-names", str(exported), str(out))[0] == 0
    assert "DOE^JOHN_5551234/ACC_A7654321/0.dcm" in _files(out)
    code, err = _run("--store", store, "--output-names", "uid", str(exported), str(out))
    assert code == 0 and "removed 5 files" in err
    assert len(_files(out)) == 5 and all(rel.startswith("ANON") for rel in _files(out))
    assert sorted(p.name for p in out.iterdir()) == sorted({r.split("/")[0] for r in _files(out)})


def test_an_output_with_files_of_another_program_needs_force(exported: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "DOE_JOHN.txt").write_text("notes")
    code, err = _run("--store", str(tmp_path / "s.sqlite"), "--output-names", "uid",
                     str(exported), str(out))
    assert code == 2 and "--force" in err and _files(out) == ["old/DOE_JOHN.txt"]
    code, err = _run("--store", str(tmp_path / "s.sqlite"), "--output-names", "uid", "--force",
                     str(exported), str(out))
    assert code == 0 and "removed 1 files" in err and not (out / "old").exists()
    assert "DOE_JOHN" not in err


def test_name_parts_are_whole_tokens_in_any_case_and_charset() -> None:
    ids = PathIdentifiers()
    ids.add_row({"patient_name": "LI^NA", "patient_id": "AB-12", "birth_date": "19700102"})
    ids.add_row({"patient_name": "Müller^Jörg".encode().decode("latin-1"),
                 "charset": "ISO_IR 192"})
    ids.add_row({"patient_name": "\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", "charset":
                 "\\ISO 2022 IR 87"})
    held = ["LI_CT/x.dcm", "a/li/b", "x/ab-12/y", "1970-01-02/x", "02.01.1970_scan/a",
            "MÜLLER/x", "jörg_1/y", "山田/x", "b/NA.dcm"]
    clear = ["CLINIC/x.dcm", "a/lina/b", "ab12x/y", "1970-01-03/x", "MUELLERS/x", "山田太郎/x"]
    assert list(paths_holding(held + clear, ids)) == held
    assert {"19700102", "02011970", "1970-1-2", "2.1.1970"} <= set(date_spellings("19700102"))


def test_the_run_report_holds_the_roots_only_with_debug(exported: Path, tmp_path: Path) -> None:
    reports = Path(os.environ["ANONPIPE_STATE_DIR"]) / "reports"
    for debug, args in ((False, ()), (True, ("-D",))):
        before = set(reports.glob("*.json")) if reports.is_dir() else set()
        out = tmp_path / f"out-{debug}"
        code, _ = _run("--store", str(tmp_path / f"s{debug}.sqlite"), "--output-names", "uid",
                       *args, str(exported), str(out))
        assert code == 0
        (report,) = set(reports.glob("*.json")) - before
        text = report.read_text()
        assert (str(exported) in text, str(out) in text) == (debug, debug)


def test_name_options_are_validated_once(exported: Path, tmp_path: Path) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["-d", "-p", "pw", "--output-names", "uid", str(exported),
                     str(tmp_path / "o")]) == 2
        assert main(["-e", "--irreversible", "--keep-names", "--output-names", "uid",
                     str(exported), str(tmp_path / "o")]) == 2
    assert "apply to -e only" in err.getvalue() and "choose one" in err.getvalue()
    assert not (tmp_path / "o").exists()
