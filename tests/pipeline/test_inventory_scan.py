"""Pass 1's one-pass header scan gives the rows a field-by-field reading gives, whichever
way the file is read (whole in one call, or by the header reader), with the listing's
stat or its own."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from tasks import inventory
from tasks.dicomio import read_header
from tasks.eligibility import Refusal, refusals
from tasks.filemeta import preamble_data
from tasks.inventory import (
    FILE_FIELDS,
    TOP_FIELDS,
    WHOLE_BELOW,
    ScanBatch,
    pack_row,
    replaced_tags,
    scan_batch,
    scan_file,
)
from tests.conftest import PYDICOM_FILES


def _reference_row(path: Path, replaced: frozenset[int]) -> dict[str, Any]:
    """A readable file's row read the plain way: one lookup per field, every check run."""
    st = path.stat()
    df = read_header(path, private_runs=True)
    row: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                           "ts": df.transfer_syntax}
    for name, tag in TOP_FIELDS.items():
        row[name] = df.top_text(tag) or None
    refused = refusals(df)
    row["deidentified"] = any(why.deidentified for why in refused)
    row["dicomdir"] = Refusal.DICOMDIR in refused
    if preamble_data(df.raw_prefix) is not None:
        row["preamble"] = True
    every: set[str] = set()
    mapped: set[str] = set()
    inventory._collect_uids(df, df.elements, replaced, every, mapped)
    row["replace"] = sorted(mapped)
    kept = every - mapped - {row["sop_class"]}
    if kept:
        row["kept_uids"] = sorted(kept)
    other = inventory._other_ids(df)
    if other:
        row["other_ids"] = other
    return row


def _reference_pack(rel: str, row: dict[str, Any]) -> tuple[Any, ...]:
    head = {k: v for k, v in row.items() if k not in FILE_FIELDS}
    replace = set(row["replace"])
    named = [name for name in inventory.NAMED_UIDS if row.get(name) in replace]
    head["replaced"] = named
    extra = sorted(replace - {row[name] for name in named})
    return (rel, row["size"], row["mtime_ns"], row.get("sop"), row.get("study"),
            json.dumps(head, sort_keys=True, separators=(",", ":")),
            json.dumps(extra, separators=(",", ":")) if extra else None, None, None)


def _corpus(archive: Path) -> list[Path]:
    return (sorted(p for p in PYDICOM_FILES.glob("*.dcm") if p.stat().st_size < 3_000_000)
            + sorted(archive.rglob("*.dcm"))[:12])


@pytest.mark.parametrize("profile", ["basic", "gdcmanon"])
def test_rows_equal_a_field_by_field_reading(archive: Path, profile: str) -> None:
    replaced = replaced_tags(profile)
    compared = small = 0
    for path in _corpus(archive):
        row = scan_file(path, replaced)
        if "error_kind" in row:
            continue
        reference = _reference_row(path, replaced)
        assert row == reference, path.name
        st = path.stat()
        assert scan_file(str(path), replaced, (st.st_size, st.st_mtime_ns)) == reference
        assert pack_row("r", row) == _reference_pack("r", reference), path.name
        compared += 1
        small += st.st_size < WHOLE_BELOW
    assert compared > 50 and small > 10


def test_a_batch_packs_the_rows_of_its_files(archive: Path) -> None:
    """Heads of consecutive files (shared or not) encode as each file's own would."""
    paths = sorted(archive.rglob("*.dcm"))[:8] + sorted(archive.rglob("*.dcm"))[:2]
    rels = tuple(str(p.relative_to(archive)) for p in paths)
    stats = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    replaced = replaced_tags()
    result = scan_batch(ScanBatch(7, str(archive), rels, replaced, stats))
    assert result["errors"] == 0 and result["bytes"] == sum(s for s, _ in stats)
    assert result["rows"] == [_reference_pack(rel, _reference_row(p, replaced))
                              for rel, p in zip(rels, paths, strict=True)]
    parts = ScanBatch(7, str(archive), rels[:2], replaced, stats[:2]).one_per_file()
    assert [(b.rels, b.listed) for b in parts] == [(rels[:1], stats[:1]), (rels[1:2], stats[1:2])]


def test_a_file_changed_since_listed_is_read_as_it_is(archive: Path, tmp_path: Path) -> None:
    src = min(archive.rglob("*.dcm"))
    path = tmp_path / "x.dcm"
    path.write_bytes(src.read_bytes())
    st = path.stat()
    row = scan_file(path, listed=(st.st_size - 10, st.st_mtime_ns - 5))  # grew since
    assert (row["size"], row["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert "error_kind" not in row and row["sop"] == scan_file(src)["sop"]
    gone = scan_file(tmp_path / "gone.dcm", listed=(100, 1))
    assert gone["error_kind"] == "Unreadable" and gone["error"] == "no such file or directory"


def _with_pixels(declared: int, present: int) -> bytes:
    """A small Explicit VR LE file whose Pixel Data declares ``declared`` bytes and holds
    ``present``."""
    def el(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    meta_body = el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0")
    meta = el(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta_body))) + meta_body
    body = (el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0")
            + el(0x0008, 0x0018, b"UI", b"1.2.3.4.5\0") + el(0x0010, 0x0010, b"PN", b"Doe^J ")
            + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, declared) + b"\0" * present)
    return b"\0" * 128 + b"DICM" + meta + body


@pytest.mark.parametrize("present", [64, WHOLE_BELOW + 64])
def test_pixel_data_cut_short_is_found_either_way(tmp_path: Path, present: int) -> None:
    whole, cut = tmp_path / "whole.dcm", tmp_path / "cut.dcm"
    whole.write_bytes(_with_pixels(present, present))
    cut.write_bytes(_with_pixels(present + 100, present))
    assert "error_kind" not in scan_file(whole) and scan_file(whole)["sop"] == "1.2.3.4.5"
    row = scan_file(cut)
    assert row["error_kind"] == "DicomFormatError"
    assert row["error"] == (f"truncated: element (7FE0,0010) declares {present + 100} bytes, "
                            f"only {present} remain")


@pytest.mark.parametrize(("present", "declared", "kept"), [
    (64, 100, 10),  # a small file, read whole
    (WHOLE_BELOW - 400, 300, 150),  # the padding's header inside the header read's buffer
    (3 * WHOLE_BELOW, 100, 10),  # ... past it: read from the file
])
def test_an_element_after_the_pixel_data_cut_short_is_found(
        tmp_path: Path, present: int, declared: int, kept: int) -> None:
    """The elements after Pixel Data are checked from what the header read holds, or
    read from the file past it: the same answer."""
    padding = struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, declared)
    whole, cut = tmp_path / "whole.dcm", tmp_path / "cut.dcm"
    whole.write_bytes(_with_pixels(present, present) + padding + b"\0" * declared)
    cut.write_bytes(_with_pixels(present, present) + padding + b"\0" * kept)
    assert (cut.stat().st_size >= WHOLE_BELOW) == (present > 64)
    assert "error_kind" not in scan_file(whole)
    row = scan_file(cut)
    assert row["error"] == (f"truncated: element (FFFC,FFFC) declares {declared} bytes, "
                            f"only {kept} remain")


def test_a_fifo_listed_as_a_file_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    row = scan_file(fifo, listed=(1000, 1))
    assert row["error_kind"] == "Unreadable" and row["error"] == "not a regular file"
