"""Local worker processes (``local_pool="processes"``, the command line's choice): same bytes
as inline, a file that kills its worker is isolated, small runs start no processes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.cluster import open_client
from pipeline.job import Mode, TreeJob
from pipeline.options import PROCESSES_INLINE_BELOW, build_run
from pipeline.pools import InlinePool, ProcessPool
from pipeline.runner import run_tree
from pipeline.store import Store
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.errors import UsageError
from tasks.model import Status
from tasks.profile import DEFAULT_PROFILE
from tests.conftest import REPO
from tests.pipeline.conftest import FILES, SECRET, deid_job, tree_digest
from tests.pipeline.slowop import PoisonDeidentify

POISON = "P0002/ST01/SE02/IM0004.dcm"


def test_process_pool_matches_inline(archive: Path, reference: dict[str, str],
                                     tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=2, local_pool="processes",
                   inline_below=0, batch_files=7, scan_batch_files=16)
    summary = run_tree(job)
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(tmp_path / "out") == reference
    assert summary.report_path is not None
    assert "local processes (2 workers)" in summary.report_path.read_text()
    with Store(job.store) as store:  # type: ignore[arg-type]
        assert store.journal_counts() == {Status.DONE.value: FILES}


def test_a_file_that_kills_its_worker_is_isolated(archive: Path, reference: dict[str, str],
                                                  tmp_path: Path) -> None:
    op = PoisonDeidentify(Deidentify(DeidentifySettings(secret=SECRET)), POISON)
    job = deid_job(archive, tmp_path / "out", operation=op, workers=2, local_pool="processes",
                   inline_below=0, batch_files=10, retries=0, continue_on_error=True)
    summary = run_tree(job)
    assert summary.errors == [
        (POISON, "WorkerLost", "processing task failed: its worker process died (exit code 13)")]
    assert (summary.done, summary.failed) == (FILES - 1, 1)
    produced = tree_digest(tmp_path / "out")
    assert produced == {k: v for k, v in reference.items() if k != POISON}


def test_a_crashed_batch_is_retried_before_it_is_split(tmp_path: Path) -> None:
    """A task the broken pool took down is re-run (``retries``) on a fresh pool."""
    pool = ProcessPool(2, retries=1)
    try:
        outcomes = list(pool.imap(_crash_once, [str(tmp_path / "flag"), "x", "y"]))
    finally:
        pool.close()
    assert [o.error for o in outcomes] == [None, None, None]
    assert sorted(o.result["value"] for o in outcomes if o.result) == ["ok", "x", "y"]
    assert pool.restarts >= 1


def _crash_once(flag: str) -> dict[str, str]:
    import os

    if flag.endswith("flag"):
        if not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(3)
        return {"value": "ok"}
    return {"value": flag}


#: in a pool worker: how many times a _Counted was unpickled there
_UNPICKLED = [0]


def _counted(value: int) -> _Counted:
    _UNPICKLED[0] += 1
    return _Counted(value)


class _Counted:
    """A task argument that counts its unpickling in the worker."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return _counted, (self.value,)


def _shared_seen(payload: int, shared: _Counted, flag: str) -> dict[str, int | str]:
    return {"payload": payload, "value": shared.value, "unpickled": _UNPICKLED[0],
            "flag": flag}


def test_a_window_unpickles_its_arguments_once_per_worker() -> None:
    """The operation of pass 2 is one object per worker for all the batches of a pass."""
    pool = ProcessPool(1, retries=0)
    try:
        first = [o.result for o in pool.imap(_shared_seen, range(6), _Counted(1), "a")]
        second = [o.result for o in pool.imap(_shared_seen, range(3), _Counted(2), "b")]
    finally:
        pool.close()
    assert first == [{"payload": n, "value": 1, "unpickled": 1, "flag": "a"} for n in range(6)]
    assert second == [{"payload": n, "value": 2, "unpickled": 2, "flag": "b"} for n in range(3)]


def test_small_runs_start_no_processes(archive: Path, tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=2, local_pool="processes",
                   inline_below=PROCESSES_INLINE_BELOW)
    assert FILES < PROCESSES_INLINE_BELOW
    with open_client(job) as backend:
        assert backend.pool(FILES).kind == "inline"
        assert backend.pool(PROCESSES_INLINE_BELOW).kind == "processes"
    assert "inline" in run_tree(job).report_path.read_text()  # type: ignore[union-attr]


def test_scan_only_through_the_pool(archive: Path, tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=2, local_pool="processes",
                   inline_below=0, scan_only=True, scan_batch_files=25)
    run_tree(job)
    with Store(job.store) as store:  # type: ignore[arg-type]
        counts = store.counts()
    assert counts["files"] == FILES and counts["unreadable"] == 0


def test_command_line_chooses_the_local_pool(archive: Path, tmp_path: Path) -> None:
    """The process pool by default; a dask LocalCluster with --dashboard or --local-pool dask."""
    base = ["-e", "--irreversible", "-r", "--secret-file", str(tmp_path / "secret"), "--new-secret"]
    job = build_run(build_parser().parse_args([*base, str(archive), str(tmp_path / "out")]))
    assert job.local_pool == "processes"  # type: ignore[union-attr]
    assert job.dashboard is None  # type: ignore[union-attr]
    job = build_run(build_parser().parse_args(
        [*base, "--dashboard", str(archive), str(tmp_path / "out")]))  # not taken as a value
    assert job.dashboard == "127.0.0.1:0" and job.input == archive  # type: ignore[union-attr]
    assert job.local_pool == "dask"  # type: ignore[union-attr]
    job = build_run(build_parser().parse_args(
        [*base, "--local-pool", "dask", str(archive), str(tmp_path / "out")]))
    assert job.local_pool == "dask"  # type: ignore[union-attr]
    for extra in (["--workers", "0"], ["--local-pool", "processes"]):
        with pytest.raises(UsageError, match="--dashboard shows a dask cluster"):
            build_run(build_parser().parse_args(
                [*base, "--dashboard", *extra, str(archive), str(tmp_path / "out")]))
    args: argparse.Namespace = build_parser().parse_args(
        [*base, "--local-pool", "processes", str(archive), str(tmp_path / "out")])
    job = build_run(args)
    assert job.local_pool == "processes"  # type: ignore[union-attr]
    assert job.tuning.inline_below == PROCESSES_INLINE_BELOW  # type: ignore[union-attr]
    args = build_parser().parse_args(
        ["-e", "--irreversible", "-r", "--secret-file", str(tmp_path / "secret"),
         "--new-secret", "--cluster", "local", str(archive), str(tmp_path / "out")])
    job = build_run(args)
    with open_client(job) as backend:  # type: ignore[arg-type]
        assert not backend.placement.local_processes  # --cluster local: a dask LocalCluster


def test_default_local_pool_by_pass_size(archive: Path, tmp_path: Path) -> None:
    """With the default local dask cluster: tiny passes inline, middling ones (by files or
    by bytes) on the process pool, big ones on dask; a named cluster config is not
    second-guessed."""
    job = deid_job(archive, tmp_path / "out", workers=2, inline_below=5000,
                   processes_from=256, processes_from_bytes=32 << 20)
    with open_client(job) as backend:
        assert backend.pool(100, 1 << 20).kind == "inline"
        assert backend.pool(2000, 50 << 20).kind == "processes"
        assert backend.pool(200, 100 << 20).kind == "processes"  # large images
        assert backend.started is None  # no dask started for any of them
    with open_client(deid_job(archive, tmp_path / "out", workers=2, cluster="local",
                              inline_below=5000)) as backend:
        assert backend.pool(2000, 50 << 20).kind == "inline"
    with open_client(deid_job(archive, tmp_path / "out", workers=2, inline_below=5000,
                              processes_from=None, processes_from_bytes=None)) as backend:
        assert backend.pool(2000, 50 << 20).kind == "inline"


def test_middling_run_on_processes_matches_inline(archive: Path, reference: dict[str, str],
                                                  tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=2, processes_from=50, batch_files=9,
                   scan_batch_files=20)  # 120 files: below inline_below, above 50
    summary = run_tree(job)
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(tmp_path / "out") == reference
    assert summary.report_path is not None
    assert "local processes (2 workers)" in summary.report_path.read_text()


def test_one_default_profile(archive: Path, tmp_path: Path) -> None:
    """Without --profile the command line, the operation, the job and its report all name
    the one default profile (tasks.profile.DEFAULT_PROFILE); -d has none."""
    base = ["-e", "--irreversible", "-r", "--secret-file", str(tmp_path / "secret"), "--new-secret"]
    job = build_run(build_parser().parse_args([*base, str(archive), str(tmp_path / "out")]))
    assert isinstance(job, TreeJob) and job.mode is Mode.DEIDENTIFY
    assert job.profile is not None and job.profile.name == DEFAULT_PROFILE
    assert job.report_options["profile"] == DEFAULT_PROFILE
    assert DeidentifySettings(secret=b"s").profile == DEFAULT_PROFILE
    made = deid_job(archive, tmp_path / "out2")
    assert made.profile is not None and made.profile.name == DEFAULT_PROFILE
    (tmp_path / "out2").mkdir()
    back = build_run(build_parser().parse_args(
        ["-d", "-p", "pw", "-r", str(tmp_path / "out2"), str(tmp_path / "back")]))
    assert isinstance(back, TreeJob) and back.mode is Mode.REIDENTIFY
    assert back.profile is None and back.secret is None and back.secret_fingerprint == ""


def _fails_on_three(payload: tuple[int, ...]) -> dict[str, int]:
    if 3 in payload:
        raise ValueError("three")
    return {"files": len(payload)}


def _one_each(payload: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [(number,) for number in payload]


@pytest.mark.parametrize("kind", ["inline", "processes"])
def test_window_quarantines_a_failed_payload_part_by_part(kind: str) -> None:
    """A failed payload that ``split`` cuts is not yielded: its parts run alone and only
    the part at fault comes back failed; a stopped window quarantines nothing."""
    pool = InlinePool() if kind == "inline" else ProcessPool(2, retries=0)
    try:
        outcomes = list(pool.imap(_fails_on_three, [(1, 2), (3, 4), (5,)], split=_one_each))
        got = sorted((o.payload, o.error is not None) for o in outcomes)
        assert got == [((1, 2), False), ((3,), True), ((4,), False), ((5,), False)]
        window = pool.imap(_fails_on_three, [(3, 4)], split=_one_each)
        window.stop()
        if kind == "processes":
            window = pool.imap(_fails_on_three, [(3, 4)], split=_one_each)
            window.start()  # submitted, then stopped: what is in flight still comes back
            window.stop()
        assert [(o.payload, o.error is not None) for o in window] == (
            [((3, 4), True)] if kind == "processes" else [])
    finally:
        if isinstance(pool, ProcessPool):
            pool.close()


def test_tier_rules_by_pass_size(archive: Path, tmp_path: Path) -> None:
    """The tier table: tiny passes inline, middling ones on processes, large ones on the
    default dask cluster; the process pool from its own threshold; --workers 0 never."""
    from pipeline.tiers import Pass, Placement, Tier

    dask = Placement.of(deid_job(archive, tmp_path / "a", workers=2, local_pool="dask",
                                 inline_below=100, processes_from=10), None)
    assert [dask.tier(Pass(n)) for n in (5, 50, 500, None)] == [
        Tier.INLINE, Tier.PROCESSES, Tier.DASK, Tier.DASK]
    assert dask.tier(Pass(5, dask_started=True)) is Tier.DASK  # already up: used
    processes = Placement.of(deid_job(archive, tmp_path / "b", workers=2,
                                      local_pool="processes", inline_below=10), None)
    assert [processes.tier(Pass(n)) for n in (5, 50, None)] == [
        Tier.INLINE, Tier.PROCESSES, Tier.PROCESSES]
    assert processes.prestart(Pass(50)) and not processes.prestart(Pass(5))
    none = Placement.of(deid_job(archive, tmp_path / "c", workers=0), None)
    assert none.tier(Pass(None)) is Tier.INLINE
    watched = Placement.of(deid_job(archive, tmp_path / "d", workers=2, local_pool="dask",
                                    dashboard="127.0.0.1:0", processes_from=1), None)
    assert watched.explicit and watched.tier(Pass(5)) is Tier.DASK


def test_pool_workers_collect_cycles_less_often() -> None:
    """A worker freezes what its start-up allocated and collects every
    ``collector.YOUNG`` allocations (pipeline.collector)."""
    from pipeline import collector

    pool = ProcessPool(1, retries=0)
    try:
        found = pool.submit(_collector_settings).result(timeout=60)
    finally:
        pool.close()
    assert found["young"] == collector.YOUNG
    assert found["frozen"] > 1000  # the modules' objects, out of the collector's sight


def _collector_settings() -> dict[str, int]:
    import gc

    return {"young": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}


def test_the_driver_collects_nothing_while_it_starts() -> None:
    """Within ``collector.start_up`` (the driver's imports and options) the collector is
    off; after it, however the block ended, it has the run's settings and is on again if
    it was on."""
    import gc

    from pipeline import collector

    with collector.start_up():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_threshold()[0] == collector.YOUNG
    with pytest.raises(ValueError), collector.start_up():
        raise ValueError("refused options")
    assert gc.isenabled() and gc.get_threshold()[0] == collector.YOUNG
    gc.disable()  # a caller that runs without the collector keeps it off
    try:
        with collector.start_up():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_run_refused_at_its_options_leaves_the_collector_on(tmp_path: Path) -> None:
    """``main`` called in-process (as a library) on an input that does not exist: the run
    stops while it reads its options, and the collector is running when it returns."""
    import gc

    from pipeline.cli import main
    from pipeline.exits import Exit

    assert main(["-e", "--secret-file", str(tmp_path / "missing"), str(tmp_path / "in.dcm"),
                 str(tmp_path / "out.dcm")]) == Exit.FAILED
    assert gc.isenabled()


_START_METHOD = """
import threading
from pipeline.pools import ProcessPool, _import_modules

def method() -> str:
    pool = ProcessPool(1, retries=0)
    try:
        pool.submit(_import_modules, ()).result(timeout=60)
        return str(pool.start_method)
    finally:
        pool.close()

if __name__ == "__main__":
    alone = method()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        beside = method()
    finally:
        stop.set()
        other.join()
    print(alone, beside)
"""


def test_workers_are_forked_only_from_a_driver_of_one_thread(tmp_path: Path) -> None:
    """A fork copies the calling thread alone: with another thread running, the pool
    spawns its workers instead (a fresh process of its own script, so the test runner's
    threads do not count)."""
    script = tmp_path / "start_method.py"
    script.write_text(_START_METHOD)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fork", "spawn"]
