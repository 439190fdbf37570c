"""Pass 1 reads again only the headers of files that changed since the last run with the same
store (a resumed or repeated run), and its inventory then equals a full scan's."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

import tasks.inventory
from pipeline.runner import run_tree
from pipeline.store import Store
from tasks.deidentify import Deidentify, DeidentifySettings
from tests.pipeline.conftest import FILES, SECRET, deid_job


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files whose header pass 1 reads (inline runs: same process)."""
    seen: list[str] = []
    real = tasks.inventory.scan_file

    def counting(path: Path | str, replaced: frozenset[int] | None = None,
                 listed: tuple[int, int] | None = None) -> dict[str, object]:
        seen.append(str(path))
        return real(path, replaced, listed)

    monkeypatch.setattr(tasks.inventory, "scan_file", counting)
    return seen


def _inventory(store_path: Path) -> dict[str, object]:
    with Store(store_path) as store:
        return {rel: row for rel, row in store.inventory()}


def test_a_repeated_run_reads_no_header_again(archive: Path, tmp_path: Path,
                                              scanned: list[str]) -> None:
    job = deid_job(archive, tmp_path / "out")
    run_tree(job)
    assert len(scanned) == FILES
    first = _inventory(job.store)  # type: ignore[arg-type]
    scanned.clear()
    summary = run_tree(job)
    assert scanned == [] and summary.skipped == FILES  # nothing read, nothing rewritten
    assert _inventory(job.store) == first  # type: ignore[arg-type]


def test_changed_added_and_deleted_files(archive: Path, tmp_path: Path,
                                         scanned: list[str]) -> None:
    """Only the changed and the new file are read; the deleted one leaves the inventory,
    and the result is the inventory a fresh store would hold."""
    source = tmp_path / "in"
    shutil.copytree(archive, source)
    job = deid_job(source, tmp_path / "out")
    run_tree(job)
    changed, gone = source / "P0001/ST01/SE01/IM0001.dcm", source / "P0002/ST02/SE02/IM0010.dcm"
    added = source / "P0001/ST01/SE01/IM0099.dcm"
    shutil.copy(source / "P0003/ST01/SE01/IM0003.dcm", added)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched
    gone.unlink()
    scanned.clear()
    summary = run_tree(job)
    assert sorted(Path(p).name for p in scanned) == ["IM0001.dcm", "IM0099.dcm"]
    assert summary.failed == 0
    incremental = _inventory(job.store)  # type: ignore[arg-type]
    assert "P0002/ST02/SE02/IM0010.dcm" not in incremental and len(incremental) == FILES
    fresh = deid_job(source, tmp_path / "out2", store=tmp_path / "fresh.sqlite")
    run_tree(fresh)
    assert incremental == _inventory(fresh.store)  # type: ignore[arg-type]


def test_another_profile_or_input_reads_every_header(archive: Path, tmp_path: Path,
                                                     scanned: list[str]) -> None:
    """Rows hold the UIDs under the profile's replaced tags, and paths of one input: a
    run with another profile, or another input folder with the same store, starts over."""
    store = tmp_path / "store.sqlite"
    run_tree(deid_job(archive, tmp_path / "out", store=store))
    scanned.clear()
    gdcmanon = Deidentify(DeidentifySettings(secret=SECRET, profile="gdcmanon"))
    run_tree(deid_job(archive, tmp_path / "out", store=store, operation=gdcmanon))
    assert len(scanned) == FILES
    other = tmp_path / "copy"
    shutil.copytree(archive, other)
    scanned.clear()
    run_tree(deid_job(other, tmp_path / "out", store=store, operation=gdcmanon,
                      force=True))  # a new journal: the outputs unknown
    assert len(scanned) == FILES


class _Ticking:
    """A clock that moves 40 s per reading (more than the 30 s between two plain progress
    lines): every progress update prints its line."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 40.0
        return self.now


def test_a_rerun_shows_its_progress_while_listing(archive: Path, tmp_path: Path,
                                                  scanned: list[str]) -> None:
    """Reused rows count as they are listed, not when the pass ends: a rerun of a big
    archive, which scans nothing, would otherwise show no progress until its listing ends."""
    job = deid_job(archive, tmp_path / "out", scan_only=True, scan_batch_files=20)
    run_tree(job)
    scanned.clear()
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200, color_system=None)
    run_tree(job._replace(verbosity=2), console=console, clock=_Ticking())
    assert scanned == []
    counts = [int(m.group(1)) for m in re.finditer(r"pass 1 scan: … (\d+)/", buffer.getvalue())]
    assert counts == list(range(20, FILES + 1, 20))
