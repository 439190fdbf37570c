"""``anonpipe-audit``: real runs of ``anonpipe`` on a sample archive, then leaks planted in
the output by the tool itself (an original copied in, a name put back with ``--dumb``, the
gdcmanon profile's kept dates, a file de-identified under another secret), each found."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from pipeline import audit
from pipeline.cli import main as anonpipe
from pipeline.store import Store
from tasks.inventory import scan_file
from tests.conftest import BIN, Pki

AUDIT = str(BIN / "anonpipe-audit")
#: the file the leaks are planted in (an output relative path, the same as its input's)
VICTIM = "P0002/ST01/SE02/IM0003.dcm"


def deidentify(archive: Path, base: Path, pki: Pki, *extra: str) -> tuple[Path, Path]:
    """``anonpipe -c CERT -e -r --store S IN OUT`` (in process); returns (OUT, S)."""
    out, store = base / "out", base / "store.sqlite"
    rc = anonpipe(["-c", str(pki.cert), "-e", "-r", "-E", "--workers", "0", "--store",
                   str(store), *extra, str(archive), str(out)])
    assert rc == 0
    return out, store


@pytest.fixture(scope="module")
def run(archive: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A basic-profile run of the sample archive (do not modify: copy the output first)."""
    return deidentify(archive, tmp_path_factory.mktemp("audit"), pki)


@pytest.fixture
def copy(run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run's output to plant leaks in, with the run's store."""
    out = tmp_path / "out"
    shutil.copytree(run[0], out)
    return out, run[1]


def check(out: Path, store: Path, *extra: str) -> tuple[int, str]:
    """Run the audit in process; returns (exit code, everything it printed)."""
    stream = io.StringIO()
    rc = audit.audit(out, store, stream=stream, **_kwargs(extra))
    return rc, stream.getvalue()


def _kwargs(extra: tuple[str, ...]) -> dict[str, object]:
    args = audit.build_parser().parse_args(["x", *extra])
    return {"input_dir": Path(args.input) if args.input else None, "debug": args.debug,
            "limit": args.limit}


def test_clean_run_passes(run: tuple[Path, Path], archive: Path) -> None:
    rc, text = check(*run)
    assert rc == 0, text
    assert "120 files" in text and "clean" in text and "LEAK" not in text
    rc, text = check(*run, "--input", str(archive))  # every removed value of the originals
    assert rc == 0, text
    proc = subprocess.run([AUDIT, str(run[0]), "--store", str(run[1])], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stdout + proc.stderr


def test_original_copied_into_the_output(copy: tuple[Path, Path], archive: Path) -> None:
    out, store = copy
    shutil.copyfile(archive / VICTIM, out / VICTIM)
    (out / "extra").mkdir()
    shutil.copyfile(archive / "P0001/ST01/SE01/IM0001.dcm", out / "extra" / "copy.dcm")
    row = scan_file(archive / VICTIM)
    rc, text = check(out, store)
    assert rc == 1
    assert "LEAK: recorded identifiers outside (0400,0500) in 2 files:" in text and f"\n  {VICTIM}: " in text and "extra/copy.dcm" in text
    assert "1 file not written by this run" in text
    for label in ("patient name", "patient ID", "birth date", "study date", "accession number",
                  "UID x"):
        assert label in text
    family = row["patient_name"].split("^")[0].upper()
    assert family not in text.upper() and row["patient_id"] not in text  # values only with -D
    rc, debug = check(out, store, "-D")
    assert rc == 1 and family in debug.upper() and row["patient_id"] in debug
    # the original's UIDs stand where the new ones should: the mapping is broken too
    assert "UID INCONSISTENT" in text


def test_name_put_back_with_dumb_mode(copy: tuple[Path, Path], archive: Path,
                                      tmp_path: Path) -> None:
    out, store = copy
    name = scan_file(archive / VICTIM)["patient_name"]
    edited = tmp_path / "edited.dcm"
    assert anonpipe(["--dumb", "--replace", f"10,10={name}", str(out / VICTIM), str(edited)]) == 0
    os.replace(edited, out / VICTIM)
    rc, text = check(out, store)
    assert rc == 1 and "(0400,0500) in 1 file:" in text
    assert f"  {VICTIM}: patient name" in text and "UID INCONSISTENT" not in text


def test_gdcmanon_profile_leaves_dates(archive: Path, pki: Pki, tmp_path: Path) -> None:
    out, store = deidentify(archive, tmp_path, pki, "--profile", "gdcmanon")
    rc, text = check(out, store, "--limit", "3")
    assert rc == 1 and "(0400,0500) in 120 files:" in text and "study date" in text
    assert "... and 117 more" in text


def test_dates_kept_on_purpose_are_not_searched(archive: Path, pki: Pki, tmp_path: Path) -> None:
    out, store = deidentify(archive, tmp_path, pki, "--retain-long-full-dates")
    rc, text = check(out, store)
    assert rc == 0, text
    assert "not searched: study dates, kept (or shifted) on purpose by --retain-long-full-dates" \
        in text


def test_a_file_under_another_secret_breaks_uid_consistency(
        copy: tuple[Path, Path], archive: Path, pki: Pki, tmp_path: Path) -> None:
    out, store = copy
    other = tmp_path / "other.dcm"
    assert anonpipe(["-c", str(pki.cert), "-e", "--secret-file", str(tmp_path / "other-secret"), "--new-secret",
                     str(archive / VICTIM), str(other)]) == 0
    os.replace(other, out / VICTIM)
    rc, text = check(out, store)
    assert rc == 1 and "LEAK" not in text, text
    assert "UID INCONSISTENT" in text
    for label in ("Study Instance UID", "Series Instance UID", "Frame of Reference UID"):
        assert f"one original {label} has several new UIDs" in text
    assert f"\n    {VICTIM}\n" in text
    assert f"{VICTIM}: " in text.split("recorded replacements, in 1 file:")[1]


def test_input_finds_values_the_store_does_not_record(copy: tuple[Path, Path], archive: Path,
                                                      tmp_path: Path) -> None:
    out, store = copy
    address = str(pydicom.dcmread(archive / VICTIM).InstitutionAddress)
    edited = tmp_path / "edited.dcm"
    assert anonpipe(["--dumb", "--replace", f"8,81={address}", str(out / VICTIM),
                     str(edited)]) == 0
    os.replace(edited, out / VICTIM)
    assert check(out, store)[0] == 0  # the store records no addresses
    rc, text = check(out, store, "--input", str(archive))
    assert rc == 1 and f"  {VICTIM}: removed InstitutionAddress" in text


def test_identifier_in_an_output_path(copy: tuple[Path, Path], archive: Path) -> None:
    out, store = copy
    patient_id = scan_file(archive / VICTIM)["patient_id"]
    os.rename(out / "P0002", out / f"P0002-{patient_id}")
    rc, text = check(out, store)
    assert rc == 1 and "LEAK: recorded identifiers in the names of 40 output paths" in text  # every file under the folder
    assert patient_id not in text
    rc, text = check(out, store, "-D")
    assert f"P0002-{patient_id}/ST01/SE01/IM0001.dcm: patient ID" in text


def test_usage_errors(run: tuple[Path, Path], tmp_path: Path, archive: Path, pki: Pki,
                      capsys: pytest.CaptureFixture[str]) -> None:
    out, store = run
    cases = [
        ([str(out), "--store", str(tmp_path / "missing.sqlite")], "not found"),
        ([str(out)], "not found"),  # the default store of OUT: this run named its own
        ([str(tmp_path / "nowhere"), "--store", str(store)], "not a directory"),
        ([str(out), "--store", str(store), "--input", str(tmp_path / "x")], "not a directory"),
        ([str(out), "--bogus"], "unrecognized arguments"),
        ([str(out), "--store", str(archive / VICTIM)], "readable by other users"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert audit.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    shared = tmp_path / "shared.sqlite"
    shutil.copyfile(store, shared)
    os.chmod(shared, 0o644)
    assert audit.main([str(out), "--store", str(shared)]) == 2
    assert "chmod 600" in capsys.readouterr().err
    with Store(tmp_path / "busy.sqlite") as busy:  # a run holds the store
        busy.set_job_identity({"mode": "deidentify"})
        assert audit.main([str(out), "--store", str(busy.path)]) == 2
        assert "in use by a running anonpipe" in capsys.readouterr().err
    back, restore = tmp_path / "back", tmp_path / "restore.sqlite"
    assert anonpipe(["-k", str(pki.key), "-d", "-r", "-E", "--workers", "0", "--store",
                     str(restore), str(out), str(back)]) == 0
    assert audit.main([str(back), "--store", str(restore)]) == 2
    assert "holds no de-identification run" in capsys.readouterr().err


# --------------------------------------------------------------------------- the search


def _ids(uids: tuple[str, ...] = (), dates: tuple[str, ...] = (), text: tuple[str, ...] = (),
         names: tuple[str, ...] = ()) -> audit.Searcher:
    ids = audit.Identifiers()
    for u in uids:
        ids.add_uid(u)
    for d in dates:
        ids.add_date(d, "date")
    for t in text:
        ids.add_text(t, "id")
    for n in names:
        ids.add_text(n, "name", person=True)
    return audit.Searcher(ids)


def test_search_boundaries_and_minimum_lengths() -> None:
    s = _ids(uids=("1.2.840.1234.5", "1.2"), dates=("19450312",), text=("MR1234", "M", "12345"),
             names=("Lee^Anna^^Dr",))
    found = s.find(b"\x00\x001.2.840.1234.5\x00 DT 19450312101500 mr1234 ANNA LEE")
    assert found == {b"1.2.840.1234.5": "UID", b"19450312": "date", b"MR1234": "id",
                     b"ANNA": "name"}  # "Lee" and "Dr" are too short, "M" and "12345" too
    assert s.find(b"1.2.840.1234.56 1.2.840.1234.5.7 21.2.840.1234.5") == {}  # inside UIDs
    assert s.find(b"119450312 19450312.5 XMR1234 MR12345 HANNAH") == {}  # inside words
    assert s.find(b"LEE^ANNA^^DR") == {b"LEE^ANNA^^DR": "name"}


def _file(tmp_path: Path, name: str, syntax: str, payload: bytes) -> bytes:
    ds = Dataset()
    ds.PatientName = "ANON^X"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "2.25.1"
    item = Dataset()
    item.add_new(0x04000510, "UI", "1.2.840.10008.1.2.1")
    item.add_new(0x04000520, "OB", payload)
    ds.add_new(0x04000500, "SQ", DicomSequence([item]))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / name, enforce_file_format=True)
    return (tmp_path / name).read_bytes()


def test_encrypted_payload_is_cut_and_deflate_inflated(tmp_path: Path) -> None:
    s = _ids(names=("SMITH^JOHN",))
    plain = _file(tmp_path, "a.dcm", ExplicitVRLittleEndian, b"SMITH^JOHN")
    assert b"SMITH^JOHN" in plain and s.find(audit.searchable(plain)[0]) == {}
    _file(tmp_path, "b.dcm", DeflatedExplicitVRLittleEndian, b"x" * 4)
    ds = pydicom.dcmread(tmp_path / "b.dcm")
    ds.PatientName = "SMITH^JOHN"
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    leaky = (tmp_path / "c.dcm").read_bytes()
    assert b"SMITH" not in leaky  # the name hides in the compressed stream
    assert s.find(audit.searchable(leaky)[0]) == {b"SMITH^JOHN": "name"}


def _sr(path: Path, name: str, manufacturer: str) -> None:
    """A Comprehensive SR with a standard-scheme finding; its meta names no implementation
    version (the outputs' meta is the engine's to rebuild, not this test's subject)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.543.{abs(hash(name)) % 10**8}"
    ds.StudyInstanceUID = ds.SOPInstanceUID + ".1"
    ds.SeriesInstanceUID = ds.SOPInstanceUID + ".2"
    ds.PatientName, ds.PatientID, ds.Modality = name, "PID0001X", "SR"
    ds.Manufacturer = manufacturer
    ds.ValueType = "CONTAINER"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "F-01000", "SRT", "FINDING"
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "CODE"
    item.ConceptCodeSequence = DicomSequence([code])
    ds.ContentSequence = DicomSequence([item])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.543.1"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.preamble = b"\0" * 128
    ds.save_as(path, enforce_file_format=False)


def test_no_false_alarm_on_standard_codes_manufacturer_or_method_words(
        pki: Pki, tmp_path: Path) -> None:
    """"FINDING" (a standard code the engine keeps), a patient named like the scanner's
    Manufacturer, name parts equal to words of (0012,0063): none is a leak."""
    src = tmp_path / "in"
    _sr(src / "a" / "1.dcm", "FINDING^ANNA", "ACMESCAN")
    _sr(src / "b" / "2.dcm", "ACMESCAN^CONFIDENTIALITY", "ACMESCAN")
    out, store = deidentify(src, tmp_path, pki, "--output-names", "uid")
    rc, text = check(out, store, "--input", str(src))
    assert rc == 0, text
    planted = next(out.rglob("*.dcm"))
    ds = pydicom.dcmread(planted)
    ds.add_new(0x00400400, "LT", "seen by Anna")  # a real leak is still found
    ds.save_as(planted)
    rc, text = check(out, store, "--input", str(src))
    assert rc == 1 and "patient name" in text


def test_search_terms_of_names_in_other_character_sets() -> None:
    """Terms are the file's bytes and the decoded name in UTF-8 and Latin-1, upper-cased
    like the data (ASCII letters only)."""
    ids = audit.Identifiers()
    ids.add_text("M\xfcller^Anna", "patient name", person=True, charset="ISO_IR 100")
    ids.add_text("\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", "patient name", person=True,
                 charset="\\ISO 2022 IR 87")
    ids.add_text("J\xc3\xb6rg^Lee", "patient name", person=True, charset="ISO_IR 192")
    search = audit.Searcher(ids)
    for data in ("dr. müller".encode("latin-1"), "DR MüLLER".encode(),
                 "山田".encode(), b"x \x1b$B;3ED\x1b(B y", "jörg".encode()):
        assert search.find(b" " + data + b" "), data
    assert not search.find(b"MUELLERS JORGE")


def test_a_consistent_tree_leaves_nothing_per_file_in_memory(run: tuple[Path, Path]) -> None:
    """What the audit holds must not grow with the archive: the recorded UIDs are looked up
    in the store (not loaded), and UID pairs that match the recorded mapping are not kept."""
    out, store_path = run
    with Store(store_path, read_only=True) as store:
        ids = audit.collect_identifiers(store, audit.run_profile(store).compiled)
        assert ids.uids == {} and ids.recorded is not None
        assert ids.recorded_count == store.table_size("uids") > 120
        sop = next(row["sop"] for _, row in store.inventory() if row.get("sop"))
        assert ids.recorded([sop.encode(), b"1.2.3.4.5.6.7.8"]) == {sop.encode()}
        auditor = audit.Auditor(out, store, ids, audit.run_profile(store).compiled)
        findings = auditor.run()
    assert findings.files == 120 and findings.clean
    assert not findings.pairs and not findings.counts and not findings.recorded
