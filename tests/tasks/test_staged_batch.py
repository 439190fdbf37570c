"""A pass-2 batch makes a few outputs, then writes them (tasks.batch, tasks.engine.Staged):
the same files as one at a time, rows in order, failures where they happened, nothing
written after the first failure when the batch stops on it, a bounded number of outputs
and bytes held, and every input closed whatever happens."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID

from tasks import batch as batch_module
from tasks.batch import STAGE_BYTES, STAGE_FILES, run_batch
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.engine import Staged
from tasks.model import Batch, Status, WorkItem, Written
from tasks.pixeltail import SPLIT_FROM
from tests.conftest import REPO, SECRET, pydicom_file

DONE, FAILED = Status.DONE.value, Status.FAILED.value
OPERATION = Deidentify(DeidentifySettings(secret=SECRET, allow_burned_in=True))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _items(tmp_path: Path, sources: list[Path]) -> list[WorkItem]:
    """Each source copied into ``in/`` as ``NN-name``, its output under ``out/``."""
    items = []
    for index, source in enumerate(sources):
        rel = f"S{index % 3}/{index:02d}-{source.name}"
        src = tmp_path / "in" / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, src)
        items.append(WorkItem(str(src), str(tmp_path / "out" / rel), rel, src.stat().st_size))
    return items


def _large_slices(tmp_path: Path, count: int) -> list[Path]:
    """512x512 CT slices of anonpipe-sample: large enough to keep their pixel data in the
    input until written."""
    archive = tmp_path / "large"
    subprocess.run([sys.executable, "-m", "pipeline.sample", str(archive), "--seed", "5",
                    "--patients", "1", "--studies", "1", "--series", "1", "--instances",
                    str(count), "--kind", "large-ct"], check=True, cwd=REPO,
                   capture_output=True)
    slices = sorted(archive.rglob("*.dcm"))
    assert len(slices) == count and all(p.stat().st_size > SPLIT_FROM for p in slices)
    return slices


def _document(path: Path, size: int) -> Path:
    """An Encapsulated PDF of ``size`` bytes or more: read whole (no Pixel Data)."""
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"), stop_before_pixels=True)
    for tag in [el.tag for el in ds if el.tag >> 16 in (0x0018, 0x0028, 0x0043, 0xFFFC)]:
        del ds[tag]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.104.1")
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 " + bytes(range(256)) * (size // 256 + 1)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_batch_writes_what_each_file_alone_writes(tmp_path: Path) -> None:
    """Small and large files, more than one stage of them, a missing file among them:
    every output is the one the operation alone writes, the rows keep the items' order,
    and no input is left open."""
    small = [pydicom_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
    sources = small * (STAGE_FILES // len(small) + 1) + _large_slices(tmp_path, 4)
    assert len(sources) > STAGE_FILES + 4
    items = _items(tmp_path, sources)
    missing = WorkItem(str(tmp_path / "in" / "gone.dcm"), str(tmp_path / "out" / "gone.dcm"),
                       "gone.dcm", 10)
    items.insert(5, missing)
    before = _open_descriptors()
    result = run_batch(Batch(1, tuple(items), str(tmp_path / "out"), sync=False), OPERATION)
    assert _open_descriptors() == before
    rows = result["rows"]
    assert [row["source"] for row in rows] == [item.rel for item in items]
    assert [row["status"] for row in rows] == [DONE] * 5 + [FAILED] + [DONE] * (len(items) - 6)
    assert rows[5]["error"] == "no such file" and not Path(missing.dst).exists()
    for item, row in zip(items, rows):
        if item is missing:
            continue
        alone = tmp_path / "alone" / item.rel
        alone.parent.mkdir(parents=True, exist_ok=True)
        assert OPERATION(item.src, alone) == row["bytes_out"]
        assert Path(item.dst).read_bytes() == alone.read_bytes(), item.rel
        assert isinstance(row["seconds"], float) and row["seconds"] > 0


def test_nothing_is_written_after_the_first_failure_when_the_batch_stops(
        tmp_path: Path) -> None:
    """With ``stop_on_error`` the files before the failure are written and listed, the
    ones after it (made already, in the same stage) are neither, and their inputs are
    closed; a refused write stops the batch as a refused read does."""
    items = _items(tmp_path, [pydicom_file("CT_small.dcm")] * 8)
    unreadable = WorkItem(items[3].src + ".none", items[3].dst + ".none", "none.dcm", 1)
    linked = tmp_path / "out" / items[6].rel  # an output name that is a link: refused
    linked.parent.mkdir(parents=True, exist_ok=True)
    linked.symlink_to(tmp_path / "elsewhere.dcm")
    for stop_at, batch_items in ((3, [*items[:3], unreadable, *items[3:6]]), (6, items)):
        for item in items[:6]:
            Path(item.dst).unlink(missing_ok=True)
        before = _open_descriptors()
        rows = run_batch(Batch(1, tuple(batch_items), str(tmp_path / "out"), sync=False),
                         OPERATION, stop_on_error=True)["rows"]
        assert _open_descriptors() == before
        assert [row["status"] for row in rows] == [DONE] * stop_at + [FAILED]
        assert all(Path(item.dst).exists() for item in batch_items[:stop_at])
        after = [item for item in batch_items[stop_at + 1:] if item.dst != str(linked)]
        assert after and not any(Path(item.dst).exists() for item in after)
    assert linked.is_symlink() and not (tmp_path / "elsewhere.dcm").exists()
    rows = run_batch(Batch(1, tuple(items), str(tmp_path / "out"), sync=False),
                     OPERATION)["rows"]
    assert [row["status"] for row in rows] == [DONE] * 6 + [FAILED, DONE]
    assert "symbolic link" in str(rows[6]["error"])


@dataclass(frozen=True, slots=True)
class _Watching:
    """The operation, noting at each file it makes how many outputs are on disk."""

    inner: Deidentify
    out: Path
    seen: list[int]

    def __call__(self, src: Path | str, dst: Path | str) -> int | Written:
        return self.inner(src, dst)

    def prepare(self, src: Path | str) -> Staged:
        self.seen.append(sum(1 for p in self.out.rglob("*") if p.is_file()))
        return self.inner.prepare(src)


def test_outputs_are_held_at_most_a_stage_of_files_or_of_bytes(tmp_path: Path) -> None:
    """Outputs are written every STAGE_FILES files, and at once after an output that holds
    STAGE_BYTES in memory (a large file read whole)."""
    count = 2 * STAGE_FILES + 3
    items = _items(tmp_path, [pydicom_file("CT_small.dcm")] * count)
    seen: list[int] = []
    watching = _Watching(OPERATION, tmp_path / "out", seen)
    run_batch(Batch(1, tuple(items), str(tmp_path / "out"), sync=False), watching)  # type: ignore[arg-type]
    assert seen == [index // STAGE_FILES * STAGE_FILES for index in range(count)]

    shutil.rmtree(tmp_path / "out")
    big = _document(tmp_path / "big.dcm", STAGE_BYTES)
    items = _items(tmp_path, [pydicom_file("CT_small.dcm"), big, pydicom_file("CT_small.dcm")])
    seen.clear()
    rows = run_batch(Batch(1, tuple(items), str(tmp_path / "out"), sync=False),
                     watching)["rows"]  # type: ignore[arg-type]
    assert [row["status"] for row in rows] == [DONE] * 3
    assert seen == [0, 0, 2]
    assert batch_module.STAGE_BYTES == STAGE_BYTES < Path(items[1].dst).stat().st_size
