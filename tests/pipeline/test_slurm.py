"""anonpipe against a real single-node SLURM (tests/pipeline/slurm.py): worker jobs that
are submitted, lost, pending or refused, and a driver that is interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import dask
import pytest

from pipeline.clusterconfig import load_cluster_config
from pipeline.job import RunSummary
from pipeline.jobqueue import import_jobqueue
from pipeline.runner import run_tree
from pipeline.sample import generate_archive
from tasks.deidentify import Deidentify, DeidentifySettings
from tests.conftest import REPO
from tests.pipeline.conftest import FILES, SECRET, deid_job, tree_digest
from tests.pipeline.slowop import SlowDeidentify
from tests.pipeline.slurm import Slurm

RUN_TIMEOUT = 240  # seconds a whole run may take on a loaded machine (a hang fails the test)


def _config(folder: Path, name: str, workers: int = 2, driver: dict[str, object] | None = None,
            **options: object) -> Path:
    """A cluster config of single-core, single-worker jobs on the test SLURM."""
    values: dict[str, object] = {
        "queue": "debug", "cores": 1, "processes": 1, "memory": "1GiB",
        "walltime": "00:15:00", "job_name": name, "log_directory": str(folder / "logs"),
        "local_directory": str(folder / "work"), **options}
    path = folder / f"{name}.yaml"
    data = {"kind": "slurm", "workers": workers, "options": values, "driver": driver or {}}
    path.write_text(json.dumps(data))
    return path


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def _anonpipe(args: list[str], env: dict[str, str], cwd: Path,
              timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(args, env, cwd), capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, check=False)


def _env(slurm: Slurm) -> dict[str, str]:
    """The driver's environment: the test SLURM, the repository importable by the jobs."""
    return {**slurm.env, "PYTHONPATH": str(REPO), "COLUMNS": "200"}


def _jobs_named(slurm: Slurm, name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], env=slurm.env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.splitlines()


def _wait_gone(slurm: Slurm, name: str, timeout: float = 30) -> list[str]:
    """Jobs of ``name`` left after ``timeout`` (cancelled jobs take a moment to go)."""
    deadline = time.monotonic() + timeout
    while (left := _jobs_named(slurm, name)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.secret"
    path.touch(mode=0o600)
    path.write_text(SECRET.hex())
    return path


def test_the_test_slurm_runs_a_batch_job(slurm: Slurm) -> None:
    """The fixture's SLURM accepts a job and runs it on its node."""
    out = slurm.root / "hello.out"
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-o", str(out), "--wrap", "echo hello from $SLURM_JOB_ID"],
        env=slurm.env, capture_output=True, text=True, timeout=30, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 30
    while job_id in slurm.squeue() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.read_text() == f"hello from {job_id}\n"


def test_worker_jobs_give_the_local_runs_bytes(slurm: Slurm, archive: Path, tmp_path: Path,
                                               secret_file: Path) -> None:
    """Two worker jobs, TLS between them and the driver, no dashboard: the output equals
    an inline run's byte for byte, and no job is left in the queue."""
    env = _env(slurm)
    common = ["--irreversible", "--secret-file", str(secret_file), "-r"]
    local = _anonpipe([*common, "--workers", "0", str(archive), str(tmp_path / "local")],
                      env, tmp_path)
    assert local.returncode == 0, local.stderr
    config = _config(tmp_path, "anonpipe-equal")
    run = _anonpipe([*common, "--cluster", str(config), str(archive), str(tmp_path / "slurm")],
                    env, tmp_path)
    assert run.returncode == 0, run.stderr
    assert tree_digest(tmp_path / "slurm") == tree_digest(tmp_path / "local")
    assert len(tree_digest(tmp_path / "local")) == FILES
    assert "dashboard" not in run.stderr.lower()
    report = Path(run.stderr.rsplit("report: ", 1)[1].strip()).read_text()
    assert f"slurm cluster {config}" in report  # the report names where the work ran
    assert _wait_gone(slurm, "anonpipe-equal") == []
    scripts = list((tmp_path / "logs").glob("*.err")) + list((tmp_path / "logs").glob("*.out"))
    assert scripts, "the worker jobs wrote no log: they did not run"


def test_every_worker_job_cancelled_mid_run_is_replaced(
        slurm: Slurm, archive: Path, tmp_path: Path, reference: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``scancel`` of every worker job part-way: new jobs are submitted, the run finishes
    with every file and the inline run's bytes, and says workers were lost and replaced."""
    from rich.console import Console

    for key, value in _env(slurm).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    name = "anonpipe-lost"
    op = SlowDeidentify(Deidentify(DeidentifySettings(secret=SECRET)), 0.1)
    job = deid_job(archive, out, operation=op, cluster=str(_config(tmp_path, name)),
                   batch_files=4, verbosity=1, workers=None)
    log = StringIO()
    result: dict[str, RunSummary | BaseException] = {}

    def drive() -> None:
        try:
            result["summary"] = run_tree(job, console=Console(file=log, width=200))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            result["summary"] = exc

    import_jobqueue()  # dask_jobqueue sets a signal handler on import: main thread only
    # dask replaces a lost worker's job 15 s after the loss by default: 2 s here
    monkeypatch.setitem(dask.config.config["distributed"]["deploy"], "lost-worker-timeout",
                        "2s")
    thread = threading.Thread(target=drive)
    thread.start()
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and thread.is_alive() and \
            len(list(out.rglob("*.dcm"))) < 10:
        time.sleep(0.05)
    assert thread.is_alive(), result
    cancelled = [line.split()[0] for line in _jobs_named(slurm, name)]
    subprocess.run(["scancel", *cancelled], env=slurm.env, check=True, timeout=30)
    done_at_cancel = len(list(out.rglob("*.dcm")))
    thread.join(timeout=RUN_TIMEOUT)
    assert not thread.is_alive()
    summary = result["summary"]
    assert isinstance(summary, RunSummary), summary
    assert len(cancelled) == 2 and done_at_cancel < FILES
    assert (summary.done, summary.failed) == (FILES, 0)
    assert tree_digest(out) == reference
    text = log.getvalue()
    assert "lost 2 of 2 workers" in text or "lost 1 of 2 workers" in text, text
    # every worker was lost, so the run finished only on replacements; the last files
    # may be done before the second one joins
    assert re.search(r"workers replaced: [12]/2 connected", text), text
    later = {line.split()[0] for line in _jobs_named(slurm, name)}
    assert not later & set(cancelled)
    assert _wait_gone(slurm, name) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_driver_cancels_its_jobs(slurm: Slurm, tmp_path: Path, secret_file: Path,
                                                signum: int) -> None:
    """Ctrl-C or SIGTERM part-way: exit 130 or 143, a message, a report, no job left."""
    archive = tmp_path / "in"
    generate_archive(archive, patients=4, studies=2, series=3, instances=25, seed=3)
    name = f"anonpipe-{signal.Signals(signum).name.lower()}"
    out, store = tmp_path / "out", tmp_path / "run.store.sqlite"
    env = _env(slurm)
    args = ["--irreversible", "--secret-file", str(secret_file), "-r", "--store", str(store),
            "--cluster", str(_config(tmp_path, name)), str(archive), str(out)]
    proc = subprocess.Popen(_cli(args, env, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None and not (
                out.is_dir() and any(out.rglob("*.dcm"))):
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    assert "rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    reports = [line.split("report: ", 1)[1] for line in stderr.splitlines()
               if "report: " in line]
    assert reports, stderr
    report = json.loads(Path(reports[-1]).read_text())
    assert report["interrupted"] == signal.Signals(signum).name
    assert _wait_gone(slurm, name) == []


@pytest.mark.parametrize("case", ["bad partition", "no sbatch", "unconfigured"])
def test_a_refused_submission_is_one_line(slurm: Slurm, archive: Path, tmp_path: Path,
                                          secret_file: Path, case: str) -> None:
    """sbatch failing (no such partition, not installed, no configuration): one line
    naming the submit command and its stderr, exit 2, nothing written."""
    env = _env(slurm)
    options: dict[str, object] = {}
    if case == "bad partition":
        options["queue"] = "nosuchpartition"
    elif case == "no sbatch":
        env["PATH"] = str(tmp_path / "empty-bin")
    else:
        empty = tmp_path / "slurm.conf"
        empty.write_text("")
        env["SLURM_CONF"] = str(empty)
    out, store = tmp_path / "out", tmp_path / "run.store.sqlite"
    config = _config(tmp_path, "anonpipe-refused", **options)
    run = _anonpipe(["--irreversible", "--secret-file", str(secret_file), "-r", "--store",
                     str(store), "--cluster", str(config), str(archive), str(out)], env,
                    tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("anonpipe: cannot submit worker jobs: sbatch"), lines[0]
    expected = {"bad partition": "invalid partition", "no sbatch": "No such file",
                "unconfigured": "ClusterName needs to be specified"}[case]
    assert expected in lines[0]
    assert not out.exists() and not store.exists()
    assert _jobs_named(slurm, "anonpipe-refused") == []


def test_pending_jobs_are_explained_until_the_worker_timeout(
        slurm: Slurm, archive: Path, tmp_path: Path, secret_file: Path) -> None:
    """Jobs that cannot start yet: a line every few seconds with squeue's reason, then
    --worker-timeout stops the run (exit 1), the jobs cancelled and nothing written."""
    name = "anonpipe-pending"
    config = _config(tmp_path, name, workers=1, job_extra_directives=["--begin=now+3600"])
    out, store = tmp_path / "out", tmp_path / "run.store.sqlite"
    run = _anonpipe(["--irreversible", "--secret-file", str(secret_file), "-r", "--store",
                     str(store), "--cluster", str(config), "--worker-timeout", "8",
                     str(archive), str(out)], _env(slurm), tmp_path)
    assert run.returncode == 1, run.stderr
    waiting = [line for line in run.stderr.splitlines() if "waiting for workers" in line]
    assert waiting and waiting[0].endswith("waiting for workers: 0/1 (1 job pending: "
                                           "BeginTime)"), run.stderr
    assert "no worker connected within 8 s (1 job pending: BeginTime)" in run.stderr
    assert not out.exists() and not store.exists()
    assert _wait_gone(slurm, name) == []


def test_cluster_config_paths_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """``--cluster PATH.yaml`` is named in --help and in the error for an unknown name."""
    from pipeline.cli import main
    from tasks.errors import UsageError

    with pytest.raises(UsageError, match=r"--cluster PATH\.yaml"):
        load_cluster_config("nosuchcluster")
    assert main(["--help"]) == 0
    assert "--cluster NAME|PATH.yaml" in capsys.readouterr().out
    assert os.path.exists(REPO / "configs" / "cluster" / "slurm.yaml")


def test_the_driver_runs_as_a_job_of_its_own(slurm: Slurm, archive: Path, tmp_path: Path,
                                            secret_file: Path) -> None:
    """``--print-job-script --driver``: a script that sbatch accepts, whose job runs the
    whole command, submitting its worker job from inside; the output is the inline run's."""
    env = _env(slurm)
    common = ["--irreversible", "--secret-file", str(secret_file), "-r"]
    local = _anonpipe([*common, "--workers", "0", str(archive), str(tmp_path / "local")],
                      env, tmp_path)
    assert local.returncode == 0, local.stderr
    # the node has 2 cores: one for the driver job, one for its worker job
    config = _config(tmp_path, "anonpipe-from-driver", workers=1,
                     driver={"cores": 1, "memory": "1GiB", "walltime": "00:10:00"})
    printed = _anonpipe(["--print-job-script", "--driver", *common, "--cluster", str(config),
                         str(archive), "out"], env, tmp_path)
    assert printed.returncode == 0, printed.stderr
    script = printed.stdout
    assert script.startswith("#!/usr/bin/env bash\n") and "#SBATCH --cpus-per-task=1" in script
    assert "--print-job-script" not in script and "--driver" not in script
    (tmp_path / "driver.sh").write_text(script)
    submitted = subprocess.run(["sbatch", "--parsable", "driver.sh"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=30, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + RUN_TIMEOUT
    while job_id in slurm.squeue() and time.monotonic() < deadline:
        time.sleep(0.5)
    log = (tmp_path / f"anonpipe-driver-{job_id}.log").read_text()
    assert "report: " in log, log
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "local")
    assert _wait_gone(slurm, "anonpipe-from-driver") == []


def test_workers_lost_for_good_stop_the_run_at_the_worker_timeout(
        slurm: Slurm, tmp_path: Path, secret_file: Path) -> None:
    """The worker job is cancelled mid-run and its replacement cannot start (partition
    down): after --worker-timeout the run stops (exit 1) with a report, no job left."""
    archive = tmp_path / "in"
    generate_archive(archive, patients=4, studies=2, series=3, instances=25, seed=5)
    name = "anonpipe-gone"
    out, store = tmp_path / "out", tmp_path / "run.store.sqlite"
    # dask closes a lost worker's job (and so replaces it) 15 s after the loss by default,
    # in case it comes back: 2 s here
    env = {**_env(slurm), "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "2s"}
    args = ["--irreversible", "--secret-file", str(secret_file), "-r", "--store", str(store),
            "--worker-timeout", "8", "--cluster", str(_config(tmp_path, name, workers=1)),
            str(archive), str(out)]
    proc = subprocess.Popen(_cli(args, env, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    partition = ["scontrol", "update", f"PartitionName={slurm.partition}"]
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None and not (
                out.is_dir() and any(out.rglob("*.dcm"))):
            time.sleep(0.02)
        subprocess.run([*partition, "State=DOWN"], env=env, check=True, timeout=30)
        subprocess.run(["scancel", "--name", name], env=env, check=True, timeout=30)
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        subprocess.run([*partition, "State=UP"], env=env, check=True, timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    assert "lost 1 of 1 workers" in stderr
    assert "anonpipe: no worker for 8 s (1 job pending: PartitionDown): the run stops; " \
           "rerun the same command to resume" in stderr, stderr
    report = json.loads(Path(stderr.split("report: ", 1)[1].split()[0]).read_text())
    assert report["interrupted"] == "no workers"
    assert _wait_gone(slurm, name) == []
