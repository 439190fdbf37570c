"""Local worker processes (pipeline.localworkers): tasks run in other processes and their
results and exceptions come back; a worker that dies fails only its own task, says how it
died and is replaced; closing lets running tasks finish and leaves no process; workers
whose driver was killed go away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline.localworkers import LocalWorkers, WorkerDied
from tests.conftest import REPO


def _pid(value: int) -> dict[str, int]:
    return {"value": value, "pid": os.getpid()}


def _fail(message: str) -> None:
    raise ValueError(message)


def _sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _die(how: str) -> None:
    if how == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(7)


def _close_pipes_and_hang() -> None:
    os.closerange(3, 4096)  # the worker's pipes among them: the driver sees them close
    time.sleep(60)


def _unpicklable() -> object:
    return lambda: None


@pytest.fixture
def workers() -> Iterator[LocalWorkers]:
    pool = LocalWorkers(2)
    yield pool
    pool.close()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_results_and_exceptions_come_back_from_other_processes(workers: LocalWorkers) -> None:
    tasks = [workers.submit(_pid, n) for n in range(6)]
    results = [task.result(timeout=60) for task in tasks]
    assert [r["value"] for r in results] == list(range(6))
    assert {r["pid"] for r in results} <= set(workers.pids()) and os.getpid() not in {
        r["pid"] for r in results}
    failing = workers.submit(_fail, "no such file")
    with pytest.raises(ValueError, match="no such file"):
        failing.result(timeout=60)
    assert workers.alive() == 2  # (forked, or spawned beside the test runner's threads)


@pytest.mark.parametrize(("how", "said"), [("signal", "killed by SIGKILL"),
                                           ("exit", "exit code 7")])
def test_a_dead_worker_fails_its_own_task_only_and_is_replaced(
        workers: LocalWorkers, how: str, said: str) -> None:
    workers.submit(_pid, 0).result(timeout=60)  # both workers started
    before = set(workers.pids())
    assert len(before) == 2
    slow = workers.submit(_sleep_then_pid, 0.5)
    dying = workers.submit(_die, how)
    with pytest.raises(WorkerDied, match=f"its worker process died \\({said}\\)"):
        dying.result(timeout=60)
    assert slow.result(timeout=60) in before  # the other worker's task was not touched
    assert workers.restarts == 1 and workers.alive() == 2
    assert len(set(workers.pids()) - before) == 1  # one new process
    assert workers.submit(_pid, 1).result(timeout=60)["value"] == 1


def test_a_worker_alive_with_its_pipe_closed_is_stopped(workers: LocalWorkers) -> None:
    hung = workers.submit(_close_pipes_and_hang)
    started = time.monotonic()
    with pytest.raises(WorkerDied, match="closed its pipe"):
        hung.result(timeout=60)
    assert time.monotonic() - started < 30  # stopped after a short wait, not its minute
    assert workers.restarts == 1 and workers.alive() == 2


def test_an_answer_that_cannot_be_sent_is_an_error_of_its_task(workers: LocalWorkers) -> None:
    with pytest.raises(RuntimeError, match="result cannot be sent back"):
        workers.submit(_unpicklable).result(timeout=60)
    assert workers.submit(_pid, 2).result(timeout=60)["value"] == 2
    assert workers.restarts == 0


def test_wait_any_returns_finished_tasks_or_nothing_at_its_timeout(
        workers: LocalWorkers) -> None:
    slow = workers.submit(_sleep_then_pid, 2)
    assert workers.wait_any([slow], timeout=0.05) == []
    fast = workers.submit(_pid, 3)
    assert workers.wait_any([slow, fast]) == [fast]
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.01)
    assert slow.result(timeout=60) in workers.pids()


def test_close_finishes_running_tasks_cancels_waiting_ones_and_stops_every_worker() -> None:
    pool = LocalWorkers(1)
    running = pool.submit(_sleep_then_pid, 0.3)
    waiting = pool.submit(_pid, 4)
    pids = pool.pids()
    pool.close()
    assert running.done() and running.result() == pids[0]
    with pytest.raises(RuntimeError, match="closed"):
        waiting.result()
    assert not any(_running(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(_pid, 5)


_DRIVER = """
import sys, time
from pipeline.pools import ProcessPool
pool = ProcessPool(2, retries=0)
pool.warm_up(())
print(" ".join(map(str, pool.pids())), flush=True)
time.sleep(60)
"""


def test_workers_of_a_killed_driver_go_away(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert driver.stdout is not None
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 2 and all(_running(pid) for pid in pids)
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.1)
    gone = [pid for pid in pids if not _running(pid)]
    for pid in set(pids) - set(gone):  # stop what is left, by PID, before failing
        os.kill(pid, signal.SIGKILL)
    assert gone == pids
