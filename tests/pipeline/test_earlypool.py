"""Worker processes started once the driver has read its options (pipeline.earlypool)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline import earlypool
from pipeline.cli import build_parser
from pipeline.cluster import Backend
from pipeline.job import PROCESSES_FROM, TreeJob
from pipeline.options import Run, build_run
from pipeline.pools import ProcessPool
from pipeline.scan import SIZED_BELOW, sized_stream
from pipeline.state import load_secret
from tasks.errors import UsageError
from tests.conftest import Pki, modules_loaded_by, pydicom_file
from tests.pipeline.conftest import deid_job


@pytest.fixture(autouse=True)
def _no_pool_left() -> Iterator[None]:
    yield
    earlypool.close()


def _run(tmp_path: Path, *argv: str) -> Run:
    """The run the command line builds (irreversible -e: no certificate needed)."""
    secret = ["--secret-file", str(tmp_path / "secret"), "--new-secret"]
    return build_run(build_parser().parse_args(["-e", "--irreversible", *secret, *argv]))


def _workers(tmp_path: Path, *argv: str) -> int | None:
    run = _run(tmp_path, *argv)
    assert isinstance(run, TreeJob)
    return earlypool._workers(run)


def _folder(root: Path, files: int, nested: bool = True) -> Path:
    for i in range(files):
        sub = root / (f"s{i % 3}" if nested else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(b"x")
    return root


@pytest.fixture
def big(tmp_path: Path) -> Path:
    return _folder(tmp_path / "big", PROCESSES_FROM)


def _alive(pool: ProcessPool) -> list[psutil.Process]:
    return [psutil.Process(pid) for pid in pool.pids()]


def test_the_pool_starts_only_for_runs_that_will_use_it(big: Path, tmp_path: Path) -> None:
    small = _folder(tmp_path / "small", PROCESSES_FROM - 1)
    out = str(tmp_path / "out")
    assert _workers(tmp_path, "-r", "--workers", "2", str(big), out) == 2
    assert _workers(tmp_path, "-r", "--workers", "2", str(small), out) is None
    # files below the top folder are counted only with -r
    assert _workers(tmp_path, "--workers", "2", str(big), out) is None
    for extra in (["--workers", "0"], ["--workers", "1"], ["--scan-only"], ["--dry-run"],
                  ["--scheduler", "tcp://127.0.0.1:1", "--insecure-scheduler"]):
        argv = ["-r", *extra, str(big), out]
        if "--workers" not in extra:
            argv = ["--workers", "2", *argv]
        assert _workers(tmp_path, *argv) is None, extra
    # --local-pool dask: the tier policy puts a pass of 256-4,999 files on local processes
    # (the backend starts them ahead of pass 2 too); a larger one goes to the LocalCluster
    assert _workers(tmp_path, "-r", "--workers", "2", "--local-pool", "dask", str(big), out) == 2
    with pytest.raises(UsageError):  # two modes: refused before any pool
        _run(tmp_path, "-d", "-r", "--workers", "2", str(big), out)
    single = _run(tmp_path, "-r", "--workers", "2", str(big / "s0" / "f0"), out)
    earlypool.start(single)  # single-file mode: no pool
    assert not isinstance(single, TreeJob) and earlypool._early is None


def test_pass_1_takes_over_the_listing_the_early_pool_looked_at(big: Path,
                                                                 tmp_path: Path) -> None:
    """The input is listed once: a file that appears between the early pool's look and
    pass 1 is not in this run's listing (it is in the next run's); another job's
    listing is never handed over."""
    out = str(tmp_path / "out")
    run = _run(tmp_path, "-r", "--workers", "2", str(big), out)
    other = _run(tmp_path, "-r", "--workers", "2", str(big), out)
    assert isinstance(run, TreeJob) and isinstance(other, TreeJob)
    assert earlypool._workers(run) == 2
    (big / "s0" / "late").write_bytes(b"x")
    stream, files, _ = sized_stream(run)
    assert files == PROCESSES_FROM and len(list(stream)) == PROCESSES_FROM
    assert sized_stream(run)[1] == PROCESSES_FROM + 1  # taken once: listed afresh
    earlypool._workers(run)
    assert sized_stream(other)[1] == PROCESSES_FROM + 1  # not run's listing
    earlypool._workers(run)
    earlypool.close()  # the run ended before its pass 1: its listing is not kept
    (big / "s0" / "later").write_bytes(b"x")
    assert sized_stream(run)[1] == PROCESSES_FROM + 2


def test_a_pass_of_a_few_thousand_files_is_sized_before_pass_1(tmp_path: Path) -> None:
    """Above the process pool's inline limit (256 files) the listing is still held whole
    up to SIZED_BELOW entries, so pass 1's batches are cut for the workers
    (``balanced_batch``); past it the stream is unsized, as before."""
    folder = _folder(tmp_path / "in", 700, nested=False)
    run = _run(tmp_path, "-r", "--workers", "2", str(folder), str(tmp_path / "o"))
    assert isinstance(run, TreeJob) and run.tuning.inline_below < 700 <= SIZED_BELOW
    assert sized_stream(run)[1:] == (700, 700)
    over = run._replace(tuning=run.tuning._replace(inline_below=10))
    assert sized_stream(over)[1] == 700  # SIZED_BELOW, not inline_below, bounds it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pipeline.scan.SIZED_BELOW", 50)
        unsized = run._replace(tuning=run.tuning._replace(inline_below=100))
        stream, files, nbytes = sized_stream(unsized)
        assert (files, nbytes) == (None, None) and len(list(stream)) == 700


def test_a_large_file_counts_by_its_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with (folder / "large").open("wb") as fh:
        fh.truncate(200 * 1024 * 1024)  # sparse: no disk used
    assert _workers(tmp_path, "--workers", "2", str(folder), str(tmp_path / "o")) == 2


def test_the_backend_takes_the_pool_started_early(big: Path, archive: Path,
                                                  tmp_path: Path) -> None:
    earlypool.start(_run(tmp_path, "-r", "--workers", "2", str(big), str(tmp_path / "o")))
    early = earlypool._early
    assert early is not None
    backend = Backend(deid_job(archive, tmp_path / "out", workers=2, local_pool="processes"))
    try:
        assert backend._process_pool() is early
        assert earlypool._early is None  # handed over: the backend closes it
        assert early.submit(_pid).result(timeout=60)["pid"] in {p.pid for p in _alive(early)}
    finally:
        backend.close()
    assert _alive(early) == []


def test_a_pool_of_another_size_or_not_taken_is_stopped(big: Path, tmp_path: Path) -> None:
    earlypool.start(_run(tmp_path, "-r", "--workers", "2", str(big), str(tmp_path / "o")))
    early = earlypool._early
    assert early is not None
    started = _alive(early)
    assert len(started) == 2
    assert earlypool.take(3, 0) is None  # the run wants three workers: a pool of its own
    assert _alive(early) == [] and not any(p.is_running() for p in started)

    earlypool.start(_run(tmp_path, "-r", "--workers", "2", str(big), str(tmp_path / "o")))
    again = earlypool._early
    assert again is not None
    started = _alive(again)
    assert len(started) == 2
    earlypool.close()  # the run failed before it wanted a pool
    assert earlypool._early is None
    assert not any(p.is_running() for p in started)


def _pid() -> dict[str, int]:
    import os

    return {"pid": os.getpid()}


def test_a_single_file_run_imports_no_listing_pool_or_store(tmp_path: Path, pki: Pki) -> None:
    """``anonpipe -c cert -e in out`` imports neither the listing and pools of a directory
    run nor the store or dask's configuration (they were a third of its time), nor what
    only -d, a mistyped option, a new secret or a preview image needs: a tree run of the
    same interpreter does import the first ones."""
    src = pydicom_file("CT_small.dcm")
    load_secret(tmp_path / "secret", create=True)  # a new secret's modules: not measured
    common = (f"from pipeline.cli import main\n"
              f"args = ['-c', {str(pki.cert)!r}, '-e', '--secret-file', "
              f"{str(tmp_path / 'secret')!r}]\n")
    single = modules_loaded_by(
        common + f"assert main(args + [{str(src)!r}, {str(tmp_path / 'out.dcm')!r}]) == 0\n")
    assert (tmp_path / "out.dcm").is_file()
    heavy = {"pipeline.earlypool", "pipeline.pools", "pipeline.scan", "pipeline.store",
             "pipeline.clusterconfig", "concurrent.futures.process", "multiprocessing",
             "sqlite3", "tasks.reidentify", "difflib", "tempfile"}
    assert "tasks.deidentify" in single and not heavy & single
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(src, folder / "a.dcm")
    tree = modules_loaded_by(
        common + f"assert main(args + ['-r', '--store', {str(tmp_path / 'store')!r}, "
        f"{str(folder)!r}, {str(tmp_path / 'outdir')!r}]) == 0\n")
    assert {"pipeline.earlypool", "pipeline.store", "sqlite3"} <= tree
    # its worker processes are the project's own (pipeline.localworkers); the cluster
    # configurations, TLS and what job queues run are read only for a cluster named
    assert not {"concurrent.futures", "multiprocessing", "pipeline.clusterconfig",
                "pipeline.tls", "subprocess"} & tree
