"""Real clusters: a LocalCluster and an external ``dask scheduler`` + ``dask worker`` give
the inline run's bytes; a worker killed mid-run loses nothing; job scripts for SLURM/PBS."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.cluster import Backend, open_client, print_job_script
from pipeline.clusterconfig import load_cluster_config
from pipeline.job import RunSummary
from pipeline.pools import DaskPool
from pipeline.runner import run_tree
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.errors import UsageError
from tests.conftest import BIN, REPO
from tests.pipeline.conftest import FILES, SECRET, deid_job, tree_digest
from tests.pipeline.slowop import PoisonDeidentify, SlowDeidentify


def test_local_cluster_matches_inline(archive: Path, reference: dict[str, str],
                                      tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=2, inline_below=0, batch_files=7,
                   scan_batch_files=16, inline_while_starting=False)
    summary = run_tree(job)
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(tmp_path / "out") == reference
    assert summary.report_path is not None
    assert "local cluster of 2 workers" in summary.report_path.read_text()


def test_driver_works_inline_while_the_cluster_starts(archive: Path, reference: dict[str, str],
                                                      tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=2, inline_below=0, batch_files=3,
                   scan_batch_files=3)
    summary = run_tree(job)
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(tmp_path / "out") == reference


def test_a_file_that_keeps_killing_workers_is_reported(archive: Path, reference: dict[str, str],
                                                       tmp_path: Path) -> None:
    import dask

    op = PoisonDeidentify(Deidentify(DeidentifySettings(secret=SECRET)),
                          "P0002/ST01/SE02/IM0004.dcm")
    job = deid_job(archive, tmp_path / "out", operation=op, workers=2, inline_below=0,
                   inline_while_starting=False, batch_files=10, retries=0,
                   continue_on_error=True)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        summary = run_tree(job)
    assert summary.errors == [("P0002/ST01/SE02/IM0004.dcm", "WorkerLost",
                               "processing task failed: KilledWorker")]
    assert (summary.done, summary.failed) == (FILES - 1, 1)
    produced = tree_digest(tmp_path / "out")
    assert produced == {k: v for k, v in reference.items() if k != summary.errors[0][0]}


def test_small_runs_stay_inline(archive: Path, tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=2)  # 120 files < inline_below=500
    with open_client(job) as backend:
        assert backend.pool(FILES).kind == "inline" and backend.started is None
    assert "inline" in run_tree(job).report_path.read_text()  # type: ignore[union-attr]


@pytest.mark.parametrize("local_pool", ["dask", "processes"])
def test_one_local_worker_is_the_driver(archive: Path, reference: dict[str, str],
                                        tmp_path: Path, local_pool: str) -> None:
    """``--workers 1`` on a local pool starts no worker process, however big the pass:
    the driver's own work is the one worker, with the same bytes."""
    job = deid_job(archive, tmp_path / "out", workers=1, inline_below=0, processes_from=0,
                   local_pool=local_pool)
    with open_client(job) as backend:
        backend.prestart(None, None, ("tasks.deidentify",))
        assert backend.placement.one_local_worker
        assert [backend.pool(n).kind for n in (None, 10**6, FILES)] == ["inline"] * 3
        assert backend.started is None and backend.describe() == "inline (no dask)"
    summary = run_tree(job)
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(tmp_path / "out") == reference
    report = json.loads(summary.report_path.read_text())  # type: ignore[union-attr]
    assert "inline" in json.dumps(report) and "local cluster" not in json.dumps(report)
    assert not Backend(deid_job(archive, tmp_path / "b", workers=2)).placement.one_local_worker


def _scheduler_address(scheduler_file: Path, proc: subprocess.Popen[bytes],
                       timeout: float = 30) -> str:
    """The address a ``--port 0`` scheduler listens on, from its scheduler file: the OS
    picks the port at bind time, so no other socket can take it before the scheduler."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        with contextlib.suppress(OSError, ValueError, KeyError):  # not yet (fully) written
            return str(json.loads(scheduler_file.read_text())["address"])
        time.sleep(0.1)
    raise TimeoutError(f"dask scheduler wrote no address to {scheduler_file}")


def _stop_groups(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the process groups a test started (its own only), the last started first."""
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):  # killed by the test already
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class TlsScheduler:
    """A TLS dask scheduler, and the dask configuration that holds its client credentials."""

    address: str
    config: dict[str, str]


def _tls_files(folder: Path) -> dict[str, Path]:
    """A CA certificate and a key pair signed by it, written 0600 (one pair serves the
    scheduler, the workers and the client, as ``Security.temporary()`` makes them)."""
    from distributed.security import Security

    made = Security.temporary()
    files = {}
    for name, value in (("ca", made.tls_ca_file), ("cert", made.tls_client_cert),
                        ("key", made.tls_client_key)):
        path = folder / f"{name}.pem"
        path.touch(mode=0o600)
        path.write_text(str(value))
        files[name] = path
    return files


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsScheduler]:
    """``dask scheduler`` and two single-threaded workers (with nannies), as processes,
    speaking TLS with certificates made for the test."""
    import dask

    logs = tmp_path_factory.mktemp("dask")
    tls = _tls_files(logs)
    tls_args = ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]),
                "--tls-key", str(tls["key"])]
    config = {"distributed.comm.tls.ca-file": str(tls["ca"]),
              "distributed.comm.tls.client.cert": str(tls["cert"]),
              "distributed.comm.tls.client.key": str(tls["key"])}
    scheduler_file = logs / "sched.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scheduler_log = open(logs / "scheduler.log", "w")  # noqa: SIM115 - closed below
    workers_log = open(logs / "workers.log", "w")  # noqa: SIM115 - closed below
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--protocol", "tls", *tls_args,
         "--scheduler-file", str(scheduler_file), "--no-dashboard"],
        stdout=scheduler_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)]
    try:
        address = _scheduler_address(scheduler_file, procs[0])
        assert address.startswith("tls://127.0.0.1:"), address
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
             *tls_args, "--no-dashboard", "--local-directory", str(logs)],
            stdout=workers_log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        from distributed import Client

        with dask.config.set(config), Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield TlsScheduler(address, config)
    finally:
        _stop_groups(procs)
        scheduler_log.close()
        workers_log.close()


def test_external_scheduler_matches_inline(scheduler: TlsScheduler, archive: Path,
                                           reference: dict[str, str], tmp_path: Path) -> None:
    import dask

    job = deid_job(archive, tmp_path / "out", tmp_path / "store.sqlite",
                   scheduler=scheduler.address, batch_files=9)
    with dask.config.set(scheduler.config):
        summary = run_tree(job)
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(tmp_path / "out") == reference
    # workers that may run elsewhere make each batch durable before returning it: no row
    # waits for this machine's writeback (pipeline.writeback)
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        assert conn.execute("SELECT count(*), count(epoch) FROM journal").fetchone() == (FILES, 0)


def test_a_worker_killed_mid_run_loses_nothing(scheduler: TlsScheduler, archive: Path,
                                                reference: dict[str, str],
                                                tmp_path: Path) -> None:
    import dask
    from distributed import Client

    out = tmp_path / "out"
    op = SlowDeidentify(Deidentify(DeidentifySettings(secret=SECRET)), 0.04)
    job = deid_job(archive, out, scheduler=scheduler.address, operation=op, batch_files=4)
    result: dict[str, RunSummary | BaseException] = {}

    def drive() -> None:
        try:
            result["summary"] = run_tree(job)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            result["summary"] = exc

    # the client and the victim's pid first: a handshake between the 20th file and the
    # kill could last as long as the rest of the run on a loaded machine
    with dask.config.set(scheduler.config), \
            Client(scheduler.address, timeout="30s", set_as_default=False) as client:
        pids = client.run(os.getpid)
        victim = min(pids.values())
        thread = threading.Thread(target=drive)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.rglob("*.dcm"))) < 20:
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)  # the worker process (its nanny restarts it)
        killed_at = len(list(out.rglob("*.dcm")))
        thread.join(timeout=120)
        assert not thread.is_alive()
        client.wait_for_workers(2, timeout=60)
    summary = result["summary"]
    assert isinstance(summary, RunSummary), summary
    assert killed_at < FILES, "the run ended before the worker was killed"
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(out) == reference


@contextlib.contextmanager
def _plain_cluster(logs: Path, workers: int = 2) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A ``dask scheduler`` and its ``dask worker`` (plain tcp) of one test's own, each in
    its own process group: the test may kill them; the rest are stopped at the end."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(logs / "cluster.log", "w")  # noqa: SIM115 - closed below
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--scheduler-file", str(logs / "sched.json"), "--no-dashboard"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)]
    try:
        address = _scheduler_address(logs / "sched.json", procs[0])
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nworkers", str(workers), "--nthreads",
             "1", "--no-dashboard", "--local-directory", str(logs)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        from distributed import Client

        with Client(address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address, procs
    finally:
        _stop_groups(procs)
        log.close()


def _run_in_thread(job: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            result["summary"] = run_tree(job)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertions
            result["summary"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    return thread, result


def _stack_of(thread: threading.Thread) -> str:
    """Where ``thread`` waits: what a test that found it still running says."""
    import traceback

    frame = sys._current_frames().get(thread.ident or -1)
    return "".join(traceback.format_stack(frame)) if frame is not None else "(ended)"


def _wait_for_outputs(out: Path, count: int, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 60
    while (time.monotonic() < deadline and thread.is_alive()
           and len(list(out.rglob("*.dcm"))) < count):
        time.sleep(0.05)
    assert thread.is_alive(), "the run ended before the cluster was broken"


def test_a_scheduler_killed_mid_run_stops_the_run(archive: Path, reference: dict[str, str],
                                                  tmp_path: Path) -> None:
    """The client closes itself 20 s after it lost the scheduler: the batches in flight
    can never finish, so the run stops (it waited for ever before), with a report, and
    the same command resumes it."""
    from pipeline.jobqueue import WorkersUnavailable

    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    op = SlowDeidentify(Deidentify(DeidentifySettings(secret=SECRET)), 0.05)
    with _plain_cluster(tmp_path / "cluster") as (address, procs):
        job = deid_job(archive, out, store, scheduler=address, insecure_scheduler=True,
                       operation=op, batch_files=2)
        thread, result = _run_in_thread(job)
        _wait_for_outputs(out, 10, thread)
        os.killpg(procs[0].pid, signal.SIGKILL)  # the scheduler
        killed = time.monotonic()
        thread.join(timeout=120)
        assert not thread.is_alive(), _stack_of(thread)  # waiting for a scheduler gone
        stopped_after = time.monotonic() - killed
    error = result["summary"]
    assert isinstance(error, WorkersUnavailable), error
    assert str(error) == (f"lost the connection to the scheduler {address}: the run stops; "
                          "rerun the same command to resume")
    assert stopped_after < 60
    written = len(list(out.rglob("*.dcm")))
    assert 10 <= written < FILES
    # the same operation inline: the rest, after the files journaled as written
    rerun = run_tree(deid_job(archive, out, store, operation=op))
    assert (rerun.done + rerun.already_done, rerun.failed) == (FILES, 0)
    # outputs whose batch's result was on its way when the scheduler died are not
    # journaled: written again
    assert 0 < rerun.already_done <= written
    assert tree_digest(out) == reference


def test_no_worker_left_stops_the_run_at_the_worker_timeout(
        archive: Path, tmp_path: Path) -> None:
    """A scheduler still there whose workers are all gone: --worker-timeout stops the run."""
    from pipeline.jobqueue import WorkersUnavailable

    out = tmp_path / "out"
    op = SlowDeidentify(Deidentify(DeidentifySettings(secret=SECRET)), 0.1)
    with _plain_cluster(tmp_path / "cluster") as (address, procs):
        job = deid_job(archive, out, scheduler=address, insecure_scheduler=True,
                       operation=op, batch_files=2, worker_timeout=3.0)
        thread, result = _run_in_thread(job)
        _wait_for_outputs(out, 10, thread)
        os.killpg(procs[1].pid, signal.SIGKILL)  # every worker, and their nanny
        thread.join(timeout=90)
        assert not thread.is_alive(), _stack_of(thread)  # waiting for workers gone
    error = result["summary"]
    assert isinstance(error, WorkersUnavailable), error
    assert str(error) == (f"no worker for 3 s (scheduler {address}): the run stops; rerun "
                          "the same command to resume")


def test_a_result_lost_with_its_worker_does_not_hold_the_run(tmp_path: Path) -> None:
    """A task's result stays on its worker until the driver fetches it: a worker lost
    between the two has the task run again, which needs a worker.  With none left, the
    fetch gives way to --worker-timeout instead of waiting for ever (seen once as a SLURM
    run with 0 workers that did not stop)."""
    from distributed import Client

    from pipeline.jobqueue import WorkersUnavailable

    with _plain_cluster(tmp_path / "cluster", workers=1) as (address, procs), \
            Client(address, timeout="30s", set_as_default=False) as client:
        pool = DaskPool(client, 0, f"scheduler {address}", dashboard=False,
                        worker_timeout=2.0)
        window = pool.imap(sum, [])
        future = client.submit(sum, [1, 2], pure=False)
        deadline = time.monotonic() + 60
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert future.status == "finished"  # and its result not fetched
        os.killpg(procs[1].pid, signal.SIGKILL)  # the worker and its nanny
        started = time.monotonic()
        with pytest.raises(WorkersUnavailable, match=r"^no worker for 2 s \(scheduler "):
            window._result(future)
        assert time.monotonic() - started < 30


#: another process on the machine: connects without credentials, then with a CA and a
#: certificate of its own, and prints how each attempt ended
STRANGER = """
import sys
from distributed import Client
from distributed.security import Security

for security in (None, Security.temporary()):
    try:
        with Client(sys.argv[1], security=security, timeout="3s", set_as_default=False) as c:
            print("connected", c.run(lambda: 1))
    except Exception as exc:
        print("refused", type(exc).__name__)
"""


def _stranger_fails(address: str) -> list[str]:
    """How a stranger's two attempts on ``address`` ended (each must be refused)."""
    result = subprocess.run([sys.executable, "-c", STRANGER, address], capture_output=True,
                            text=True, timeout=120, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused ") for line in lines), lines
    return lines


def test_a_stranger_cannot_use_the_external_scheduler(scheduler: TlsScheduler) -> None:
    assert len(_stranger_fails(scheduler.address)) == 2


def test_a_stranger_cannot_use_the_runs_local_cluster(archive: Path, tmp_path: Path) -> None:
    """The local cluster of a run speaks TLS with a CA made for the run: another process
    on the machine cannot submit code to it, with or without certificates of its own;
    the dashboard (when asked for) listens on 127.0.0.1 only."""
    job = deid_job(archive, tmp_path / "out", workers=2, inline_below=0,
                   inline_while_starting=False, dashboard="127.0.0.1:0")
    with open_client(job) as backend:
        pool = backend.pool(None)
        assert isinstance(pool, DaskPool)
        address = pool.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:"), address
        assert len(_stranger_fails(address)) == 2
        assert pool.client.submit(sum, [1, 2]).result(timeout=30) == 3  # the run's own does
        http = pool.client.scheduler_info()["services"]["dashboard"]
        listening = {sock.laddr for sock in _listening_sockets() if sock.laddr[1] == http}
        assert listening and all(addr[0] == "127.0.0.1" for addr in listening), listening


def _listening_sockets() -> list[Any]:
    import psutil

    return [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN]


def test_a_plain_tcp_scheduler_is_refused_unless_insecure(archive: Path, tmp_path: Path
                                                         ) -> None:
    from pipeline.tls import check_scheduler_address

    out = tmp_path / "out"
    args = ["--irreversible", "--secret-file", str(tmp_path / "s.secret"), "--new-secret", "-r",
            "--scheduler", "tcp://127.0.0.1:1", str(archive), str(out)]
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True,
                            text=True, timeout=120, cwd=REPO, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("anonpipe: refusing the unencrypted scheduler "
                                    "tcp://127.0.0.1:1") and result.stderr.count("\n") == 1
    assert not out.exists() and not (tmp_path / "s.secret").exists()
    check_scheduler_address("tcp://127.0.0.1:1", insecure=True)  # the user accepts it
    with pytest.raises(UsageError, match="unknown scheme"):
        check_scheduler_address("http://127.0.0.1:1", insecure=True)


def test_print_job_script_slurm_and_pbs() -> None:
    slurm = print_job_script("slurm")
    assert slurm.startswith("#!/usr/bin/env bash") and "#SBATCH" in slurm
    assert "#SBATCH --cpus-per-task=8" in slurm and "distributed.cli.dask_worker" in slurm
    assert "--nthreads 1" in slurm and "--nworkers 8" in slurm
    assert "tls://" in slurm and "--tls-ca-file" in slurm  # as a run submits it
    pbs = print_job_script("pbs")
    assert "#PBS -q workq" in pbs and "#PBS -l walltime=04:00:00" in pbs
    assert "distributed.cli.dask_worker" in pbs
    with pytest.raises(UsageError, match="not a job queue"):
        print_job_script("local")


BAD_CONFIGS = [
    ("kind: nope\n", "kind 'nope' is not one of"),
    ("kind: slurm\noptions: [1, 2]\n", "'options' must be a mapping"),
    ("kind: scheduler\n", "needs an 'address'"),
    ("kind: local\nworkers: -1\n", "'workers' must be"),
    ("kind: local\nextra: 1\n", "unknown keys extra"),
    ("- a list\n", "expected a mapping"),
    # job-queue options are dask-jobqueue's own names
    ("kind: slurm\noptions: {quue: normal}\n",
     r"unknown option 'quue' for slurm \(did you mean queue\?\)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_bad_cluster_configs(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_cluster_config(str(path))


def test_jobqueue_options_in_dask_spelling(tmp_path: Path) -> None:
    """A job queue's options may be spelt as in dask-jobqueue's configuration (dashes)."""
    path = tmp_path / "dashes.yaml"
    path.write_text("kind: slurm\noptions: {job-extra-directives: [--qos=short], cores: 2}\n")
    config = load_cluster_config(str(path))
    assert config.options == {"job_extra_directives": ["--qos=short"], "cores": 2}


def test_unknown_cluster_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="known: .*pbs.*slurm"):
        load_cluster_config("nosuchcluster")
    with pytest.raises(UsageError, match="invalid cluster name"):
        load_cluster_config("../etc/passwd")


def test_cluster_config_local_applies(archive: Path, tmp_path: Path) -> None:
    job = deid_job(archive, tmp_path / "out", workers=None, cluster="local", inline_below=0,
                   inline_while_starting=False)
    backend = Backend(job)
    try:
        pool = backend.pool(None)
        assert pool.kind == "dask" and "local cluster" in backend.describe()
    finally:
        backend.close()


def _profiler_enabled(pool: object) -> list[bool]:
    """The workers' profiler setting; with it off the lean settings must all be there."""
    from pipeline.cluster import LEAN_DASK_CONFIG

    client = pool.client  # type: ignore[attr-defined]
    seen = list(client.run(lambda: {key: __import__("dask").config.get(key)
                                    for key in LEAN_DASK_CONFIG}).values())
    for settings in seen:
        lean = all(settings[key] == value for key, value in LEAN_DASK_CONFIG.items())
        assert lean == (not settings["distributed.worker.profile.enabled"])
    return [settings["distributed.worker.profile.enabled"] for settings in seen]


def test_local_dashboard_only_when_asked(archive: Path, tmp_path: Path) -> None:
    """No dashboard (nor the worker profiler that feeds it) by default; ``--dashboard``
    serves one, and the address handed to the progress display answers."""
    import urllib.request
    import warnings

    taken = socket.socket()  # dask's default dashboard port, taken: no warning about it
    with contextlib.suppress(OSError):
        taken.bind(("", 8787))
        taken.listen()
    plain = Backend(deid_job(archive, tmp_path / "a", workers=2, inline_below=0,
                             inline_while_starting=False))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool = plain.pool(None)
        assert [str(w.message) for w in caught if "dashboard" in str(w.message).lower()
                or "8787" in str(w.message)] == []
        assert pool.dashboard is None
        assert _profiler_enabled(pool) == [False, False]
    finally:
        plain.close()
        taken.close()
    shown = Backend(deid_job(archive, tmp_path / "b", workers=1, dashboard=":0"))
    try:
        pool = shown.pool(20)  # asked to watch: even a small pass, and one worker, get it
        assert pool.kind == "dask"
        assert pool.dashboard is not None and pool.dashboard.startswith("http://")
        assert _profiler_enabled(pool) == [True]
        with urllib.request.urlopen(pool.dashboard, timeout=30) as response:
            assert response.status == 200
    finally:
        shown.close()


def _echo(payload: int) -> dict[str, int]:
    return {"value": payload}


def test_a_pass_with_nothing_to_run_starts_no_cluster(archive: Path, tmp_path: Path) -> None:
    """The local cluster starts with a pass's first payload: a rerun with nothing left to
    scan or write pays no start-up; one payload is run inline while the cluster starts."""
    backend = Backend(deid_job(archive, tmp_path / "out", workers=2))
    try:
        pool = backend.pool(None)  # a big pass: the LocalCluster, once there is work
        assert list(pool.imap(_echo, [])) == []
        assert backend.started is None and backend.describe() == "inline (no dask)"
        outcomes = list(backend.pool(None).imap(_echo, [7]))
        assert [o.result for o in outcomes] == [{"value": 7}]
        assert backend.describe() != "inline (no dask)"  # asked to start by that payload
    finally:
        backend.close()


#: a run's backend with a local dask cluster, stopped; then what closing comms log
_STOPPING_CLUSTER = """
import logging, sys
from pathlib import Path
from pipeline.cluster import open_client
from pipeline.pools import DaskPool
from tests.pipeline.conftest import deid_job

job = deid_job(Path(sys.argv[1]), Path(sys.argv[2]), workers=2, inline_below=0,
               inline_while_starting=False)
with open_client(job) as backend:
    pool = backend.pool(None)
    assert isinstance(pool, DaskPool)
    assert pool.client.submit(sum, [1, 2]).result(timeout=30) == 3
print("stopped", flush=True)
try:
    raise OSError("stream closed")
except OSError:
    logging.getLogger("distributed.batched").info("Batched Comm Closed", exc_info=True)
    logging.getLogger("distributed.batched").error("Error in batched write", exc_info=True)
    logging.getLogger("distributed.client").warning("late warning")
    logging.getLogger("tornado.application").error("Exception in callback", exc_info=True)
"""


def test_a_stopping_cluster_prints_nothing_of_dask(archive: Path, tmp_path: Path) -> None:
    """Once a run's dask cluster stops, what its comms log as they close (a traceback
    each, after the cluster has put back the handlers it quieted; seen under an
    interrupted run's message) reaches no stderr, whichever of dask's loggers logs it.
    In a process of its own: dask's handler writes to the stderr of its import."""
    done = subprocess.run([sys.executable, "-c", _STOPPING_CLUSTER, str(archive),
                           str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)
    assert (done.returncode, done.stdout) == (0, "stopped\n"), done.stderr
    assert done.stderr == ""


def test_driver_job_scripts(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--print-job-script --driver``: the whole command as a PBS job; refused alone, for
    a cluster that is not a batch system, and for an input that does not exist."""
    from pipeline.cli import main

    assert main(["--print-job-script", "--driver", "--cluster", "pbs", "-r", "--irreversible",
                 str(archive), "out dir"]) == 0
    script = capsys.readouterr().out
    assert "#PBS -l select=1:ncpus=2:mem=4096MB" in script and "#PBS -q workq" in script
    assert script.rstrip().endswith(
        f"-m pipeline.cli --cluster pbs -r --irreversible {archive} 'out dir'")
    for args, message, status in (
            (["--driver", "--cluster", "pbs", str(archive), "out"], "goes with --print-job", 2),
            (["--print-job-script", "--driver", "--cluster", "local", str(archive), "out"],
             "sbatch or qsub scripts", 2),
            (["--print-job-script", "--driver", "--cluster", "slurm", "/nonexistent", "out"],
             "Could not find file", 1)):  # as gdcmanon: a missing input is exit 1
        assert main(args) == status
        assert message in capsys.readouterr().err
