"""``anonpipe-crosswalk`` and ``anonpipe-status`` as installed commands, against the outputs
of a real run: every row of the crosswalk is what the output files hold."""

from __future__ import annotations

import csv
import io
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import pydicom
import pytest

from pipeline.sample import generate_archive
from tests.conftest import REPO, Pki, run_command

tool = partial(run_command, timeout=180)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A de-identified archive with date shifting, and one file that is not DICOM."""
    base = tmp_path_factory.mktemp("crosswalk")
    src, out, store = base / "in", base / "out", base / "run.sqlite"
    generate_archive(src, patients=2, studies=2, series=1, instances=2, seed=11)
    (src / "P0002" / "notes.txt").write_text("not DICOM")
    proc = tool("anonpipe", "--irreversible", "-r", "--continue", "--retain-long-modified-dates",
                "--store", str(store), str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    assert "studies, old -> new Patient ID and accession (0600)" in " ".join(proc.stderr.split())
    return src, out, store


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_crosswalk_maps_what_the_outputs_hold(run: tuple[Path, Path, Path],
                                              tmp_path: Path) -> None:
    src, out, store = run
    target = tmp_path / "crosswalk.csv"
    proc = tool("anonpipe-crosswalk", str(store), "--csv", str(target))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert text.splitlines()[0] == "id_old,id_new,kind"
    rows = _rows(text)
    by = {(r["kind"], r["id_old"]): r["id_new"] for r in rows}
    checked = 0
    for original in sorted(src.rglob("*.dcm")):
        old = pydicom.dcmread(original)
        new = pydicom.dcmread(out / original.relative_to(src))
        assert by[("PatientID", old.PatientID)] == new.PatientID
        assert by[("PatientName", str(old.PatientName))] == str(new.PatientName)
        assert by[("AccessionNumber", old.AccessionNumber)] == (new.get("AccessionNumber") or "")
        assert by[("StudyInstanceUID", old.StudyInstanceUID)] == new.StudyInstanceUID
        assert by[("SeriesInstanceUID", old.SeriesInstanceUID)] == new.SeriesInstanceUID
        assert by[("SOPInstanceUID", old.SOPInstanceUID)] == new.SOPInstanceUID
        shift = int(by[("DateOffsetDays", old.PatientID)])
        before = date.fromisoformat(f"{old.StudyDate[:4]}-{old.StudyDate[4:6]}-{old.StudyDate[6:]}")
        assert new.StudyDate == (before + timedelta(days=shift)).strftime("%Y%m%d")
        checked += 1
    assert checked == 8


def test_crosswalk_kinds_output_folder_and_bad_input(run: tuple[Path, Path, Path],
                                                     tmp_path: Path) -> None:
    _src, out, store = run
    uids = tmp_path / "uids.csv"
    proc = tool("anonpipe-crosswalk", str(store), "--csv", str(uids), "--kind", "uid")
    assert proc.returncode == 0
    kinds = {r["kind"] for r in _rows(uids.read_text())}
    assert kinds <= {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "UID"}
    assert "SOPInstanceUID" in kinds
    bad = tool("anonpipe-crosswalk", str(store), "--csv", str(uids), "--kind", "Nmae")
    assert bad.returncode == 2 and "--kind Nmae: not one of" in bad.stderr
    nowhere = tool("anonpipe-crosswalk", str(out), "--csv", str(uids))
    assert nowhere.returncode == 2 and "no store" in nowhere.stderr


def test_crosswalk_encrypted_for_a_certificate_opens_with_openssl(
        run: tuple[Path, Path, Path], pki: Pki, tmp_path: Path) -> None:
    _src, _out, store = run
    plain, sealed = tmp_path / "plain.csv", tmp_path / "crosswalk.cms"
    assert tool("anonpipe-crosswalk", str(store), "--csv", str(plain)).returncode == 0
    proc = tool("anonpipe-crosswalk", str(store), "--csv", str(sealed), "--encrypt-to",
                str(pki.cert))
    assert proc.returncode == 0 and "encrypted" in proc.stderr
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert b"id_old" not in sealed.read_bytes()
    opened = subprocess.run(["openssl", "cms", "-decrypt", "-inform", "DER", "-in", str(sealed),
                             "-inkey", str(pki.key)], capture_output=True, check=True)
    assert opened.stdout == plain.read_bytes()
    wrong = tool("anonpipe-crosswalk", str(store), "--csv", str(sealed), "--encrypt-to",
                 str(tmp_path / "missing.pem"))
    assert wrong.returncode == 2 and "cannot read certificate" in wrong.stderr


def test_status_of_a_finished_run(run: tuple[Path, Path, Path]) -> None:
    _src, _out, store = run
    proc = tool("anonpipe-status", str(store))
    assert proc.returncode == 1  # one file was not written
    assert re.search(r"deidentify run started .*: finished", proc.stdout)
    assert "files found by pass 1: 9; settled: 9 (100%)" in proc.stdout
    assert "written 8, not DICOM 1, refused 0, failed 0" in proc.stdout
    assert "not DICOM: DicomFormatError: not a DICOM file" in proc.stdout
    assert "notes.txt" not in proc.stdout and "files not written (paths, 0600):" in proc.stdout
    debug = tool("anonpipe-status", "-D", str(store))
    assert "not written: P0002/notes.txt" in debug.stdout


def test_status_of_a_running_run(tmp_path: Path) -> None:
    """A run in another process: status reads its store while it holds the lock."""
    src, out, store = tmp_path / "in", tmp_path / "out", tmp_path / "run.sqlite"
    generate_archive(src, patients=1, studies=1, series=1, instances=30, seed=2)
    proc = subprocess.Popen([sys.executable, "-m", "tests.pipeline.driver", str(src), str(out),
                             str(store), "0", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO)
    try:
        seen = None
        for _ in range(600):
            if (out.exists() and any(out.rglob("*.dcm"))) or proc.poll() is not None:
                seen = tool("anonpipe-status", str(store))
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert seen is not None and proc.poll() is None, "the run ended before it was seen"
        assert re.search(r"deidentify run started .*: running", seen.stdout), seen.stdout
        assert "files found by pass 1: 30" in seen.stdout
    finally:
        proc.kill()
        proc.wait()
    after = tool("anonpipe-status", str(store))
    assert "interrupted (rerun the same command to resume)" in after.stdout


def test_per_study_summary_in_a_private_list_and_with_debug(run: tuple[Path, Path, Path],
                                                           tmp_path: Path) -> None:
    src, _out, store = run
    out = tmp_path / "again"
    proc = tool("anonpipe", "--irreversible", "-r", "--continue", "--retain-long-modified-dates",
                "--store", str(store), str(src), str(out))
    text = " ".join(proc.stderr.split())
    listed = Path(re.findall(r"4 studies, old -> new Patient ID and accession \(0600\): (\S+)",
                             text)[0])
    assert stat.S_IMODE(listed.stat().st_mode) == 0o600
    assert "study: Patient ID" not in text  # it links old and new: -D only
    lines = [line.split("\t") for line in listed.read_text().splitlines()]
    assert lines[0] == ["patient_id_old", "patient_id_new", "accession_old", "accession_new",
                        "study_uid_new", "files", "written"]
    originals = {}
    for path in src.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        new = pydicom.dcmread(out / path.relative_to(src), stop_before_pixels=True)
        originals[new.StudyInstanceUID] = (ds.PatientID, new.PatientID, ds.AccessionNumber)
    assert len(lines) == 5
    for old_pid, new_pid, accession, _new_accession, study, files, written in lines[1:]:
        assert originals[study] == (old_pid, new_pid, accession)
        assert (files, written) == ("2", "2")
    debug = tool("anonpipe", "--irreversible", "-r", "--continue", "-D",
                 "--retain-long-modified-dates", "--store", str(store), str(src), str(out))
    assert f"study: Patient ID {lines[1][0]} -> {lines[1][1]}" in debug.stderr


def _replaced_uids(old: pydicom.Dataset, new: pydicom.Dataset) -> Iterator[tuple[str, str]]:
    """(original, replacement) of every UID element the output holds changed, nested
    sequence items included (matched by position)."""
    for element in old:
        if element.tag not in new:
            continue
        other = new[element.tag]
        if element.VR == "SQ":
            for item, other_item in zip(element.value, other.value, strict=False):
                yield from _replaced_uids(item, other_item)
        elif element.VR == "UI" and element.value and element.value != other.value:
            yield str(element.value), str(other.value)


def test_midi_b_mapping_files_as_the_benchmark_scorer_reads_them(
        run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Two files, uid_mapping.csv and patid_mapping.csv, each with exactly the columns
    id_old,id_new (the scorer reads them by name, drops repeated originals and turns each
    table into a dict both ways): every UID and Patient ID the outputs changed is there."""
    src, out, store = run
    folder = tmp_path / "mappings"
    proc = tool("anonpipe-crosswalk", str(store), "--midi-b", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["patid_mapping.csv", "uid_mapping.csv"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    tables = {}
    for name in ("uid_mapping.csv", "patid_mapping.csv"):
        path = folder / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert text.splitlines()[0] == "id_old,id_new"
        reader = csv.DictReader(io.StringIO(text))
        rows = [(r["id_old"], r["id_new"]) for r in reader]
        assert reader.fieldnames == ["id_old", "id_new"]
        assert all(old and new for old, new in rows)
        olds, news = [r[0] for r in rows], [r[1] for r in rows]
        assert len(set(olds)) == len(olds) and len(set(news)) == len(news)  # both ways
        tables[name] = dict(rows)
        assert f"{len(rows):,} rows written to {path} (0600)" in proc.stderr
    uids, patids = tables["uid_mapping.csv"], tables["patid_mapping.csv"]
    changed = 0
    for original in sorted(src.rglob("*.dcm")):
        old = pydicom.dcmread(original)
        new = pydicom.dcmread(out / original.relative_to(src))
        assert patids[old.PatientID] == new.PatientID
        for before, after in _replaced_uids(old, new):
            assert uids[before] == after
            changed += 1
    assert changed >= 8 * 3  # Study, Series and SOP Instance UIDs of each file at least
    assert set(patids) == {pydicom.dcmread(p).PatientID for p in src.rglob("*.dcm")}
    for argv, words in ((["--midi-b", str(folder), "--kind", "uid"], "--kind goes with --csv"),
                        ([], "--csv FILE and/or --midi-b FOLDER")):
        bad = tool("anonpipe-crosswalk", str(store), *argv)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
        assert len(bad.stderr.splitlines()) == 1
