"""Pass 1 begun while the driver starts (pipeline.headstart): its rows are pass 1's own, used
only for files unchanged since and for the same profile, and it never outlives the run."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline import headstart
from pipeline.cli import build_parser, main
from pipeline.scan import _Batcher
from pipeline.walk import iter_files
from tasks.inventory import PackedRow, ScanBatch, replaced_tags, scan_batch
from tests.pipeline.conftest import deid_job


@pytest.fixture(autouse=True)
def _none_left() -> Iterator[None]:
    yield
    headstart.close()


def _args(*argv: str) -> object:
    return build_parser().parse_args(list(argv))


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children()}


def _finished() -> None:
    """Wait until the running head start has scanned everything (it stays to be reaped)."""
    assert headstart._running is not None
    pid = headstart._running[0]
    deadline = time.monotonic() + 60
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _pass1_rows(root: Path, replaced: frozenset[int]) -> dict[str, PackedRow]:
    entries = [e for e in iter_files(root, recursive=True)]
    batch = ScanBatch(1, str(root), tuple(e.rel for e in entries), replaced,
                      tuple((e.size, e.mtime_ns) for e in entries))
    return {row[0]: row for row in scan_batch(batch)["rows"]}


def test_its_rows_are_those_of_pass_1(archive: Path, tmp_path: Path) -> None:
    headstart.start(_args("-e", "-r", str(archive), str(tmp_path / "out")))
    assert headstart._running is not None
    pid = headstart._running[0]
    _finished()
    replaced = replaced_tags()
    rows = headstart.collect(str(archive), True, False, replaced)
    assert rows == _pass1_rows(archive, replaced)
    assert len(rows) == 120
    with pytest.raises(ChildProcessError):  # reaped
        os.waitpid(pid, os.WNOHANG)


def test_rows_for_other_tags_or_another_listing_are_not_used(archive: Path,
                                                              tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    for asked, collected in (
            (("--retain-uids",), (str(archive), True, False, replaced_tags())),
            ((), (str(archive), False, False, replaced_tags())),
            ((), (str(archive.parent), True, False, replaced_tags()))):
        headstart.start(_args("-e", "-r", *asked, str(archive), out))
        _finished()
        assert headstart.collect(*collected) == {}


def test_only_files_unchanged_since_are_taken(tmp_path: Path, archive: Path) -> None:
    """A row is used for a file listed with the size and time it was read with; the file
    changed since, and any file it has no row for, is scanned."""
    src = tmp_path / "in"
    shutil.copytree(archive, src)
    replaced = replaced_tags()
    ahead = _pass1_rows(src, replaced)
    changed, missing = sorted(ahead)[:2]
    os.utime(src / changed, ns=(1, 1))
    del ahead[missing]
    taken: list[PackedRow] = []
    job = deid_job(src, tmp_path / "out")
    batcher = _Batcher(job, iter_files(src, recursive=True), replaced, 50,
                       ahead=dict(ahead), on_ahead=taken.extend)
    scanned = [rel for batch in batcher for rel in batch.rels]
    assert scanned == [changed, missing]
    assert sorted(row[0] for row in taken) == sorted(set(ahead) - {changed})


def test_a_failed_row_is_scanned_again(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "not-dicom").write_bytes(b"x" * 200)
    replaced = replaced_tags()
    ahead = _pass1_rows(src, replaced)
    assert ahead["not-dicom"][7] is not None  # an error kind
    batcher = _Batcher(deid_job(src, tmp_path / "out"), iter_files(src), replaced, 50,
                       ahead=ahead, on_ahead=lambda rows: pytest.fail("taken"))
    assert [rel for batch in batcher for rel in batch.rels] == ["not-dicom"]


def test_started_only_where_it_helps(archive: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    one = next(p for p in archive.rglob("*") if p.is_file())
    assert headstart.wanted(_args("-r", str(archive), out))
    assert headstart.wanted(_args("-e", "-i", str(archive), "-o", out))
    for argv in (("-d", str(archive), out), ("--dumb", str(archive), out),
                 ("-e", str(one), out), ("-e", "--scheduler", "tls://h:1", str(archive), out),
                 ("-e", "--files-from", "list", str(archive), out),
                 ("-e", "--explain", str(one)), ("-e",)):
        assert not headstart.wanted(_args(*argv)), argv


def _inventory(store: Path) -> list[tuple[object, ...]]:
    """The store's rows with their shared parts resolved (ids follow the insertion order)."""
    with sqlite3.connect(store) as db:
        return sorted(db.execute(
            "SELECT key, size, mtime_ns, sop, studies.uid, heads.value, uids, error_kind, "
            "error FROM files LEFT JOIN heads ON head = heads.id "
            "LEFT JOIN studies ON study = studies.id"))


def test_a_run_gives_the_same_inventory_and_outputs(archive: Path, tmp_path: Path) -> None:
    """A run with the head start (2 cores) and one without (1 core: ``taskset``) store the
    same rows and write the same files; neither leaves a process behind."""
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        pytest.fail("needs 2 cores and taskset (util-linux)")
    argv = ["-e", "--irreversible", "-r", "--secret-file", str(tmp_path / "secret")]
    before = _children()
    assert main([*argv, "--new-secret", "--store", str(tmp_path / "a.sqlite"), str(archive),
                 str(tmp_path / "a")]) == 0
    assert _children() <= before
    one_core = ["taskset", "-c", "0", sys.executable, "-m", "pipeline.cli", *argv]
    subprocess.run([*one_core, "--store", str(tmp_path / "b.sqlite"), str(archive),
                    str(tmp_path / "b")], check=True, capture_output=True)
    assert _inventory(tmp_path / "a.sqlite") == _inventory(tmp_path / "b.sqlite")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    assert len(files) > 120
    for rel in files:
        a, b = tmp_path / "a" / rel, tmp_path / "b" / rel
        assert a.is_dir() == b.is_dir() and (a.is_dir() or a.read_bytes() == b.read_bytes())


def test_a_run_that_fails_early_stops_it(archive: Path, tmp_path: Path) -> None:
    """A missing certificate ends the run after the head start was forked: it is stopped
    and reaped on the way out."""
    before = _children()
    started = []
    real_start = headstart.start

    def start(args: object) -> None:
        real_start(args)  # type: ignore[arg-type]
        started.append(headstart._running)

    headstart.start = start  # type: ignore[assignment]
    try:
        code = main(["-e", "-r", "-c", str(tmp_path / "no-such.pem"), "--secret-file",
                     str(tmp_path / "secret"), "--new-secret", str(archive),
                     str(tmp_path / "o")])
    finally:
        headstart.start = real_start  # type: ignore[assignment]
    assert code != 0 and headstart._running is None
    assert started and started[0] is not None  # it had been forked
    with pytest.raises(ChildProcessError):
        os.waitpid(started[0][0], os.WNOHANG)
    assert _children() <= before


@pytest.mark.parametrize(("files", "workers", "sizes"), [
    (600, 2, [500, 50, 50]), (100, 2, [50, 50]), (100, 3, [34, 34, 32]), (30, 2, [30]),
    (100, 1, [100]), (1000, 2, [500, 500])])
def test_what_the_listing_leaves_is_shared_by_the_workers(
        tmp_path: Path, files: int, workers: int, sizes: list[int]) -> None:
    """Full batches as the listing goes, then the rest cut into one batch per worker
    (none under 20 files): what a head start leaves is often a few hundred files."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:04d}").write_bytes(b"x")
    batcher = _Batcher(deid_job(src, tmp_path / "out"), iter_files(src), replaced_tags(), 500,
                       workers=workers)
    batches = list(batcher)
    assert [len(b.rels) for b in batches] == sizes
    assert [rel for b in batches for rel in b.rels] == [f"f{i:04d}" for i in range(files)]
