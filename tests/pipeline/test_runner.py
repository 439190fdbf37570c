"""run_tree end to end, inline: consistency, resume, stop/continue, scan-only, no PHI shown."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest
from rich.console import Console

from pipeline.job import Mode
from pipeline.runner import run_tree
from pipeline.store import Store
from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.errors import UsageError
from tasks.fileio import TEMP_MARKER
from tasks.inventory import scan_file
from tasks.reidentify import Reidentify, ReidentifySettings
from tasks.uids import new_uid, secret_fingerprint
from tests.pipeline.conftest import FILES, SECRET, deid_job, tree_digest


def _copy(archive: Path, tmp_path: Path) -> Path:
    src = tmp_path / "in"
    shutil.copytree(archive, src)
    return src


def test_study_series_and_references_stay_consistent(archive: Path, reference_out: Path) -> None:
    new_study: dict[str, set[str]] = defaultdict(set)
    new_series: dict[str, set[str]] = defaultdict(set)
    new_frame: dict[str, set[str]] = defaultdict(set)
    new_sop: dict[str, str] = {}
    references: list[tuple[str, str]] = []
    for path in sorted(archive.rglob("*.dcm")):
        rel = path.relative_to(archive)
        old = pydicom.dcmread(path, stop_before_pixels=True)
        new = pydicom.dcmread(reference_out / rel, stop_before_pixels=True)
        new_study[old.StudyInstanceUID].add(new.StudyInstanceUID)
        new_series[old.SeriesInstanceUID].add(new.SeriesInstanceUID)
        new_frame[old.FrameOfReferenceUID].add(new.FrameOfReferenceUID)
        new_sop[old.SOPInstanceUID] = new.SOPInstanceUID
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        assert new.PatientName != old.PatientName
        if "ReferencedImageSequence" in old:
            references.append((old.ReferencedImageSequence[0].ReferencedSOPInstanceUID,
                               new.ReferencedImageSequence[0].ReferencedSOPInstanceUID))
    for mapping in (new_study, new_series, new_frame):
        assert all(len(v) == 1 for v in mapping.values())  # one new UID per original
        assert len({next(iter(v)) for v in mapping.values()}) == len(mapping)  # no collisions
    assert len(new_study) == 6 and len(new_series) == 12
    assert references and all(new_sop[old] == new for old, new in references)


def test_mapping_is_recorded_in_the_store(archive: Path, reference_out: Path) -> None:
    old = scan_file(archive / "P0002/ST02/SE01/IM0003.dcm")
    store_path = reference_out.parent / "out.store.sqlite"
    with Store(store_path) as store:
        assert store.get("uids", old["study"]) == new_uid(SECRET, "2.25", old["study"])
        assert store.get("uids", old["sop"]) == new_uid(SECRET, "2.25", old["sop"])
        patient = store.get("patients", old["patient_id"])
        assert patient["names"] == [old["patient_name"]] and patient["pseudonym"]
        assert store.get("ids", f"PatientID:{old['patient_id']}") == patient["pseudonym"]
        assert store.table_size("uids") > FILES


def test_same_secret_other_folder_identical(archive: Path, reference: dict[str, str],
                                            tmp_path: Path) -> None:
    summary = run_tree(deid_job(archive, tmp_path / "again"))
    assert summary.done == FILES and tree_digest(tmp_path / "again") == reference
    run_tree(deid_job(archive, tmp_path / "other", secret=b"another-secret-0123456789abcdef"))
    assert not set(tree_digest(tmp_path / "other").values()) & set(reference.values())


def test_resume_skips_intact_outputs_and_redoes_the_rest(archive: Path, reference: dict[str, str],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = deid_job(archive, out)
    assert run_tree(job).done == FILES
    again = run_tree(job)
    assert (again.done, again.skipped, again.failed) == (0, FILES, 0)
    (out / "P0001/ST01/SE01/IM0001.dcm").unlink()
    with open(out / "P0003/ST02/SE02/IM0010.dcm", "r+b") as fh:
        fh.truncate(100)
    (out / "P0001/ST01" / f".IM0005.dcm{TEMP_MARKER}123-abcd").write_bytes(b"partial")
    third = run_tree(job)
    assert (third.done, third.skipped) == (2, FILES - 2)
    assert tree_digest(out) == reference  # temp file swept, damaged outputs redone


def test_another_operation_redoes_everything(archive: Path, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    run_tree(deid_job(archive, out, store))
    other = deid_job(archive, out, store, secret=b"another-secret-0123456789abcdef")
    assert run_tree(other).done == FILES


def test_pass_one_rejections_stop_before_writing(archive: Path, tmp_path: Path) -> None:
    src = _copy(archive, tmp_path)
    (src / "P0001" / "notes.dcm").write_bytes(b"not DICOM")
    out = tmp_path / "out"
    summary = run_tree(deid_job(src, out))
    assert (summary.done, summary.not_dicom, summary.failed) == (0, 1, 0) and not summary.ok
    assert summary.errors == [("P0001/notes.dcm", "DicomFormatError", summary.errors[0][2])]
    assert not out.exists() or not any(out.rglob("*"))
    report = json.loads(summary.report_path.read_text())  # type: ignore[union-attr]
    assert report["stopped_early"] and report["counts"]["not_dicom"] == 1
    assert report["reasons"] == [{"outcome": "not DICOM", "kind": "DicomFormatError",
                                  "reason": summary.errors[0][2], "files": 1}]
    assert "notes.dcm" not in summary.report_path.read_text()  # type: ignore[union-attr]
    assert summary.failed_list is not None and "notes.dcm" in summary.failed_list.read_text()
    debug = run_tree(deid_job(src, out, verbosity=3), console=Console(file=io.StringIO()))
    report = json.loads(debug.report_path.read_text())  # type: ignore[union-attr]
    assert report["files"][0]["path"] == "P0001/notes.dcm"

    goes_on = run_tree(deid_job(src, out, continue_on_error=True))
    assert (goes_on.done, goes_on.not_dicom, goes_on.failed) == (FILES, 1, 0) and goes_on.ok


def test_first_failure_stops_submission_continue_goes_on(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    obstacle = out / "P0002"
    obstacle.write_bytes(b"a file where a folder must go")
    with pytest.raises(UsageError, match="no run of this store wrote"):
        run_tree(deid_job(archive, out, batch_files=5))  # a file it did not write: --force
    stop = run_tree(deid_job(archive, out, batch_files=5, force=True))
    assert stop.failed == 1 and stop.done < FILES
    assert stop.errors[0][1] == "OutputError"
    assert not obstacle.exists()  # not produced by these settings: removed at the end
    obstacle.write_bytes(b"a file where a folder must go")
    goes_on = run_tree(deid_job(archive, out, batch_files=5, continue_on_error=True,
                                force=True))
    assert goes_on.failed == 40 and goes_on.done + goes_on.skipped == 80
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))


def test_scan_only_and_dry_run_write_nothing(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    summary = run_tree(deid_job(archive, out, scan_only=True, verbosity=1), console=console)
    assert (summary.done, summary.failed) == (0, 0) and not out.exists()
    text = buffer.getvalue()
    assert "found 120 files" in text and "3 patients, 6 studies, 12 series" in text
    report = json.loads(summary.report_path.read_text())  # type: ignore[union-attr]
    assert report["findings"]["files"] == FILES and len(report["passes"]) == 1

    buffer.truncate(0)
    plan = tmp_path / "plan.tsv"
    run_tree(deid_job(archive, out, dry_run=True, verbosity=1, plan=plan), console=console)
    assert "P0001/" not in buffer.getvalue()  # paths may hold names: never on the terminal
    lines = plan.read_text().splitlines()
    assert stat.S_IMODE(plan.stat().st_mode) == 0o600 and lines == sorted(lines)
    assert len(lines) == FILES and lines[0] == "P0001/ST01/SE01/IM0001.dcm\tP0001/ST01/SE01/IM0001.dcm"
    assert not out.exists()


def test_console_shows_counts_never_names(archive: Path, tmp_path: Path) -> None:
    src = _copy(archive, tmp_path)
    (src / "P0003" / "broken.dcm").write_bytes(b"\0" * 200)
    names = {scan_file(p)["patient_name"] for p in src.rglob("IM0001.dcm")}
    ids = {scan_file(p)["patient_id"] for p in src.rglob("IM0001.dcm")}
    for verbosity in (0, 1, 2):
        buffer = io.StringIO()
        run_tree(deid_job(src, tmp_path / f"out{verbosity}", verbosity=verbosity,
                          continue_on_error=True), console=Console(file=buffer, width=200))
        text = buffer.getvalue()
        assert not any(n in text or n.replace("^", " ") in text for n in names | ids)
        assert "broken.dcm" not in text and "P0003/" not in text
    assert "files/s" in text and "1 unreadable" in text
    buffer = io.StringIO()
    run_tree(deid_job(src, tmp_path / "out3", verbosity=3, continue_on_error=True),
             console=Console(file=buffer, width=200))
    assert "P0003/broken.dcm" in buffer.getvalue()  # -D may show paths


def test_report_is_private_and_has_no_secret(archive: Path, tmp_path: Path) -> None:
    summary = run_tree(deid_job(archive, tmp_path / "out"))
    path = summary.report_path
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert SECRET.decode() not in text and SECRET.hex() not in text
    report = json.loads(text)
    assert report["secret_fingerprint"] == secret_fingerprint(SECRET)
    assert report["counts"]["written"] == FILES
    assert [p["name"] for p in report["passes"]] == ["pass 1 scan", "pass 2 deidentify"]
    assert report["passes"][1]["files"] == FILES and report["passes"][1]["timeline"]


def test_store_inside_output_refused(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must not be inside the output"):
        run_tree(deid_job(archive, tmp_path / "out", tmp_path / "out" / "s.sqlite"))


def test_reidentify_tree_restores_the_archive(archive: Path, tmp_path: Path,
                                              encryptor: EnvelopeEncryptor,
                                              reid: ReidentifySettings) -> None:
    op = Deidentify(DeidentifySettings(secret=SECRET, encryptor=encryptor))
    deid = tmp_path / "deid"
    assert run_tree(deid_job(archive, deid, operation=op)).done == FILES
    back = tmp_path / "back"
    job = deid_job(deid, back, mode=Mode.REIDENTIFY, secret=None,
                   operation=Reidentify(reid))
    summary = run_tree(job)
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(back) == tree_digest(archive)
    # a de-identified archive is refused by -e in pass 1, before anything is written
    again = run_tree(deid_job(deid, tmp_path / "twice", operation=op))
    assert again.refused == FILES and again.errors[0][1] == "UnsupportedFileError"
    assert not again.ok


def test_non_recursive_takes_top_level_files_only(archive: Path, tmp_path: Path) -> None:
    src = tmp_path / "flat"
    src.mkdir()
    shutil.copy(archive / "P0001/ST01/SE01/IM0001.dcm", src / "one.dcm")
    shutil.copytree(archive / "P0002", src / "P0002")
    summary = run_tree(deid_job(src, tmp_path / "out", recursive=False))
    assert summary.done == 1 and sorted(os.listdir(tmp_path / "out")) == ["one.dcm"]


def test_plan_records_date_offsets_with_modified_dates(archive: Path, tmp_path: Path) -> None:
    from tasks.actions import date_offset_days

    settings = DeidentifySettings(secret=SECRET, options=("retain_long_modified_dates",))
    store_path = tmp_path / "store.sqlite"
    job = deid_job(archive, tmp_path / "out", store_path, operation=Deidentify(settings),
                   scan_only=False, dry_run=True)
    run_tree(job)
    pid = scan_file(archive / "P0003/ST01/SE01/IM0001.dcm")["patient_id"]
    with Store(store_path) as store:
        row = store.get("patients", pid)
    assert row["date_offset_days"] == date_offset_days(SECRET, pid.encode()) < 0


def test_mapping_is_written_in_steps_between_results(archive: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass 2 takes one step of the mapping between two results: the workers never wait
    for all of it; every UID is recorded by the end, as by record_mapping in one go."""
    from pipeline import plan

    monkeypatch.setattr(plan, "MAPPING_STEP", 7)
    journaled_at_step: list[int] = []
    steps = plan.mapping_steps

    def watched(store: Store, *args: object) -> object:
        for step in steps(store, *args):  # type: ignore[arg-type]
            journaled_at_step.append(sum(store.journal_counts().values()))
            yield step

    monkeypatch.setattr("pipeline.runner.mapping_steps", watched)
    out = tmp_path / "out"
    job = deid_job(_copy(archive, tmp_path), out, batch_files=4)
    summary = run_tree(job)
    assert summary.done == FILES
    assert journaled_at_step[0] < FILES  # the first step came before the last result
    assert len(journaled_at_step) > 3
    with Store(job.store) as store:  # type: ignore[arg-type]
        recorded = store.table_size("uids")
        report = json.loads(summary.report_path.read_text())  # type: ignore[union-attr]
        assert report["mapping"]["uids"] == recorded > FILES
        for uid in store.replaced_uids():
            assert store.get("uids", uid) == new_uid(SECRET, "2.25", uid)


def test_the_mapping_of_an_unchanged_inventory_is_recorded_once(
        archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun over the inventory a whole mapping was recorded from, with the same secret,
    root and profile rows, records nothing again (a no-op rerun of a million files would
    recompute a million HMACs) and reports the same counts; a file added or removed, or a
    profile whose rows differ, has it recorded again."""
    from tasks.actions import date_offset_days

    src = _copy(archive, tmp_path)
    store_path = tmp_path / "store.sqlite"
    job = deid_job(src, tmp_path / "out", store_path)
    first = json.loads(run_tree(job).report_path.read_text())["mapping"]  # type: ignore[union-attr]
    queries: list[bool] = []
    replaced_uids = Store.replaced_uids

    def counted(self: Store, missing_only: bool = False) -> object:
        queries.append(missing_only)
        return replaced_uids(self, missing_only)

    monkeypatch.setattr(Store, "replaced_uids", counted)

    def rerun(job: object) -> dict[str, int]:
        summary = run_tree(job)  # type: ignore[arg-type]
        return json.loads(summary.report_path.read_text())["mapping"]  # type: ignore[union-attr]

    assert rerun(job) == first and queries == []
    added = src / "P0002/ST02/SE01/IM9999.dcm"
    ds = pydicom.dcmread(src / "P0002/ST02/SE01/IM0003.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.4242424242"
    ds.save_as(added)
    grown = rerun(job)
    assert queries == [True] and grown["uids"] == first["uids"] + 1
    with Store(store_path) as store:
        assert store.get("uids", "2.25.4242424242") == new_uid(SECRET, "2.25", "2.25.4242424242")
    assert rerun(job) == grown and queries == [True]
    added.unlink()
    rerun(job)
    assert queries == [True, True]
    dated = Deidentify(DeidentifySettings(secret=SECRET, options=("retain_long_modified_dates",)))
    rerun(deid_job(src, tmp_path / "dated", store_path, operation=dated))
    assert queries == [True, True, True]
    pid = scan_file(src / "P0003/ST01/SE01/IM0001.dcm")["patient_id"]
    with Store(store_path) as store:
        assert store.get("patients", pid)["date_offset_days"] == date_offset_days(
            SECRET, pid.encode())


def test_the_last_batches_of_a_pass_are_cut_smaller(archive: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Near its end, pass 2 hands out smaller batches, so no worker is left running the
    last full one alone; a pass of unknown size keeps full batches."""
    from pipeline import pools
    from pipeline.plan import Planner, op_fingerprint

    monkeypatch.setattr(pools, "MIN_BATCH_FILES", 2)  # 120 files: tapering shows below 20
    job = deid_job(archive, tmp_path / "out", scan_only=True)
    run_tree(job)
    with Store(job.store) as store:  # type: ignore[arg-type]
        op = op_fingerprint(job.operation)
        tapered = [len(b.items) for b in
                   Planner(job, store, op, batch_files=8, expected=FILES, workers=2).batches()]
        unknown = [len(b.items) for b in Planner(job, store, op, batch_files=8).batches()]
    assert sum(tapered) == sum(unknown) == FILES
    assert unknown == [8] * 15
    assert tapered == sorted(tapered, reverse=True)
    assert tapered[:10] == [8] * 10  # full while 4 full batches (2 a worker) are left
    assert tapered[-3:] == [2, 2, 2]


def test_tapered_batch_sizes() -> None:
    from pipeline.pools import MIN_BATCH_FILES, TAPER, tapered_batch

    assert tapered_batch(60, 10_000, 2) == 60
    assert tapered_batch(60, 60 * TAPER * 2, 2) == 60
    assert tapered_batch(60, 100, 2) == 25
    assert tapered_batch(60, 30, 2) == MIN_BATCH_FILES
    assert tapered_batch(10, 3, 2) == 10  # a size below the minimum stays as it is
    assert tapered_batch(60, 100, 1) == tapered_batch(60, None, 2) == 60  # no one to wait for
