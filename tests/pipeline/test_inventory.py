"""Pass-1 rows: header facts, every UID at any depth, flags, and errors as rows."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.inventory import ScanBatch, pack_row, prepare_head, scan_batch, scan_file, unpack_row
from tests.conftest import Pki


def test_row_of_a_sample_file(archive: Path) -> None:
    row = scan_file(archive / "P0001/ST01/SE01/IM0002.dcm")
    assert row["size"] == (archive / "P0001/ST01/SE01/IM0002.dcm").stat().st_size
    assert row["ts"] == "1.2.840.10008.1.2.1"
    assert row["sop_class"] == "1.2.840.10008.5.1.4.1.1.2"
    for key in ("patient_id", "patient_name", "birth_date", "study", "series", "sop",
                "frame_of_reference"):
        assert row[key], key
    assert row["deidentified"] is False and row["dicomdir"] is False
    previous = scan_file(archive / "P0001/ST01/SE01/IM0001.dcm")["sop"]
    # nested: ReferencedImageSequence > ReferencedSOPInstanceUID of the previous slice
    assert previous in row["replace"] and previous not in row.get("kept_uids", ())
    assert row["sop_class"] not in row["replace"] + row.get("kept_uids", [])
    assert row["kept_uids"] and not set(row["kept_uids"]) & set(row["replace"])
    assert {row["study"], row["series"], row["sop"], row["frame_of_reference"]} <= set(
        row["replace"])


def test_errors_are_rows(tmp_path: Path) -> None:
    (tmp_path / "text.dcm").write_bytes(b"hello, not DICOM at all")
    (tmp_path / "empty.dcm").write_bytes(b"")
    rows = scan_batch(ScanBatch(1, str(tmp_path), ("text.dcm", "empty.dcm", "gone.dcm")))
    assert isinstance(rows, dict) and rows["batch_id"] == 1
    assert (rows["errors"], rows["bytes"]) == (3, len(b"hello, not DICOM at all"))
    got = {rel: unpack_row(size, mtime, sop, None if head is None else prepare_head(json.loads(head)), uids,
                           kind, error)
           for rel, size, mtime, sop, _study, head, uids, kind, error in rows["rows"]}
    assert got["text.dcm"]["error_kind"] == "DicomFormatError"
    assert got["empty.dcm"] == {"size": 0, "mtime_ns": got["empty.dcm"]["mtime_ns"],
                                "error_kind": "DicomFormatError", "error": "empty file"}
    assert got["gone.dcm"]["error_kind"] == "Unreadable"


def test_deidentified_outputs_are_flagged(archive: Path, tmp_path: Path, pki: Pki) -> None:
    from tasks.crypto import load_certificate

    src = archive / "P0001/ST01/SE01/IM0001.dcm"
    irreversible = Deidentify(DeidentifySettings(secret=b"k" * 32))
    irreversible(src, tmp_path / "a.dcm")
    reversible = Deidentify(DeidentifySettings(
        secret=b"k" * 32, encryptor=EnvelopeEncryptor(certificates=(load_certificate(pki.cert),))))
    reversible(src, tmp_path / "b.dcm")
    assert scan_file(tmp_path / "b.dcm")["deidentified"] is True
    row = scan_file(tmp_path / "a.dcm")
    assert row["sop"] != scan_file(src)["sop"]


def test_a_packed_row_unpacks_to_the_scanned_row(archive: Path) -> None:
    """What the store keeps per file is the scan's row, nothing lost (pack_row/unpack_row)."""
    for src in sorted(archive.rglob("*.dcm"))[:6]:
        row = scan_file(src)
        rel, size, mtime, sop, study, head, uids, kind, error = pack_row("x", row)
        assert (rel, study, kind) == ("x", row["study"], None) and head is not None
        assert sop not in head  # the file's own UID is not repeated in the shared part
        assert unpack_row(size, mtime, sop, prepare_head(json.loads(head)), uids, kind,
                          error) == row
