"""Workers as batch jobs (dask-jobqueue): submitted, waited for, replaced, cancelled.

What a shared cluster does to a run, and what this module makes of it:

- a submission the batch system refuses (no configuration, no such partition, no ``sbatch``)
  is one line naming the submit command and its stderr, before anything is written;
- jobs that do not start are reported every few seconds with the queue's reason
  ("waiting for workers: 0/16 (2 jobs pending: Resources)") until ``--worker-timeout``;
- jobs that end (walltime, preemption, ``scancel``) are replaced: the cluster adapts with
  ``minimum == maximum == workers`` (``scale()`` alone never resubmits), their in-flight
  batches are re-run by dask, and a line says workers were lost and replaced;
- every job is cancelled when the run ends, however it ends (the cluster is closed by the
  backend's exit stack, also on Ctrl-C and SIGTERM: pipeline.signals).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import AnonpipeError, UsageError

if TYPE_CHECKING:
    from pipeline.clusterconfig import ClusterConfig

JOBQUEUE_KINDS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "oar": "OARCluster",
    "htcondor": "HTCondorCluster",
}
#: while no worker is connected: seconds before the first "waiting for workers" line, and
#: between the next ones
FIRST_WAIT_LINE = 2.0
WAIT_LINE_EVERY = 5.0
WATCH_EVERY = 1.0  # seconds between two counts of connected workers during the run
#: how a batch system lists the state of jobs and why they pend (ids are appended, joined
#: by commas); others get a count of the jobs submitted
STATUS_COMMANDS = {"slurm": ("squeue", "-h", "-o", "%T|%r", "-j")}
STATUS_TIMEOUT = 10.0

Say = Callable[[str], None]


class WorkersUnavailable(AnonpipeError):
    """No worker connected within ``--worker-timeout`` seconds."""


def connected_workers(client: Any) -> int:
    """Workers the scheduler knows; 0 when it does not answer (none can be counted on)."""
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 - a scheduler out of reach, a comm closing
        return 0


def import_jobqueue() -> Any:
    """``dask_jobqueue``, imported without letting it take Ctrl-C.

    Why: its ``runner`` module, imported by the package, replaces the SIGINT handler with
    ``sys.exit()`` (dask/dask-jobqueue#696): Ctrl-C would end the run with exit status 0,
    no message and no report.  The handler in place before the import is put back.
    """
    import signal

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    import dask_jobqueue

    if previous is not None:
        signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def make_cluster(config: ClusterConfig, security: Any = None, tls_dir: Path | None = None,
                 dashboard: str | None = None) -> Any:
    """The dask-jobqueue cluster of ``config`` (no job submitted yet).

    ``security``: TLS for the scheduler and the jobs, whose certificate files are written
    (0600) to ``tls_dir``, a folder the compute nodes see.  ``dashboard``: the address to
    serve the dashboard on, None for none (it would only cost the driver CPU).
    """
    import logging  # where a job queue runs: a local run does without (and its exit handler)

    jobqueue = import_jobqueue()
    cls = getattr(jobqueue, JOBQUEUE_KINDS[config.kind])
    options = dict(config.options)
    if config.config_name:  # what the options leave out: dask-jobqueue's section
        options["config_name"] = config.config_name
    options.setdefault("silence_logs", logging.ERROR)
    scheduler: dict[str, Any] = {"dashboard_address": dashboard or "127.0.0.1:0"}
    if dashboard is None:
        scheduler["dashboard"] = False
    options["scheduler_options"] = {**scheduler, **(options.get("scheduler_options") or {})}
    if security is not None:
        options["security"] = security
        options["shared_temp_directory"] = str(tls_dir)
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cluster config {config.source}: {exc}") from None


def remove_tls_files(cluster: Any, folder: Path) -> None:
    """Delete the certificate files written for the jobs, and their folder."""
    import shutil

    for name, value in list(vars(cluster).items()) if cluster is not None else ():
        if name.startswith("_job_") and hasattr(value, "close"):
            with contextlib.suppress(OSError):
                value.close()  # a NamedTemporaryFile: deleted on close
    shutil.rmtree(folder, ignore_errors=True)


async def _open_jobs(cluster: Any, jobs: int) -> None:
    """Submit ``jobs`` jobs and wait for the submissions, raising the first failure.

    Why not ``cluster.scale()``: it submits in a callback whose failure is only logged (a
    traceback per job) while the run waits forever for workers that will never come."""
    from distributed.core import Status

    while len(cluster.worker_spec) < jobs:
        cluster.worker_spec.update(cluster.new_worker_spec())
    try:
        await cluster._correct_state()
    except BaseException:
        for name, job in list(cluster.workers.items()):
            if getattr(job, "job_id", None) is None:  # never submitted: nothing to cancel
                job.status = Status.failed
                del cluster.workers[name]
                cluster.worker_spec.pop(name, None)
        raise


#: what the driver job asks for unless the cluster config's ``driver`` says otherwise: it
#: walks the tree, journals results in sqlite and submits batches (one or two cores; memory
#: for the store's cache and the report), and runs until the last batch is done
DRIVER_DEFAULTS = {"cores": 2, "memory": "4GiB"}
#: SIGTERM this many seconds before the driver job's walltime: time to cancel the worker
#: jobs and write the report (pipeline.signals)
DRIVER_GRACE_SECONDS = 120


def driver_script(config: ClusterConfig, command: list[str], cwd: Path) -> str:
    """A batch script that runs ``command`` (a whole anonpipe run) as a job of its own,
    from which the worker jobs of ``config`` are submitted (sbatch or qsub)."""
    import shlex

    from dask.utils import parse_bytes

    driver = {**DRIVER_DEFAULTS, **config.driver}
    options = config.options
    walltime = driver.get("walltime") or options.get("walltime")
    memory_mb = max(1, parse_bytes(str(driver["memory"])) // 2**20)
    queue, account = options.get("queue"), options.get("account")
    if config.kind == "slurm":
        head = ["#SBATCH --job-name=anonpipe-driver", "#SBATCH --ntasks=1",
                f"#SBATCH --cpus-per-task={driver['cores']}", f"#SBATCH --mem={memory_mb}M",
                f"#SBATCH --signal=B:TERM@{DRIVER_GRACE_SECONDS}",
                "#SBATCH --output=anonpipe-driver-%j.log"]
        head += [f"#SBATCH --time={walltime}"] if walltime else []
        head += [f"#SBATCH --partition={queue}"] if queue else []
        head += [f"#SBATCH --account={account}"] if account else []
        submit = "sbatch"
    elif config.kind == "pbs":
        head = ["#PBS -N anonpipe-driver", "#PBS -j oe",
                f"#PBS -l select=1:ncpus={driver['cores']}:mem={memory_mb}MB"]
        head += [f"#PBS -l walltime={walltime}"] if walltime else []
        head += [f"#PBS -q {queue}"] if queue else []
        head += [f"#PBS -A {account}"] if account else []
        submit = "qsub"
    else:
        raise UsageError(f"--driver writes sbatch or qsub scripts: cluster {config.name!r} "
                         f"is of kind {config.kind}")
    prologue = [str(line) for line in options.get("job_script_prologue") or []]
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# The anonpipe driver as a batch job: submit with `{submit} THIS_FILE`.  It",
        "# submits the worker jobs itself, replaces lost ones, cancels them when it ends",
        "# (also on SIGTERM at its walltime) and writes the report; rerun it to resume.",
        *head,
        "set -euo pipefail",
        *prologue,
        f"cd {shlex.quote(str(cwd))}",
        f"exec {shlex.join(command)}",
        "",
    ])


def _stderr_of(exc: RuntimeError) -> str:
    """The stderr dask-jobqueue quotes in a failed command's RuntimeError, on one line."""
    text = str(exc)
    tail = text.split("stderr:\n", 1)[1] if "stderr:\n" in text else text
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return " / ".join(lines) or "no message"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class JobQueue:
    """The worker jobs of one run: submission, the wait for workers, the watch for losses."""

    def __init__(self, config: ClusterConfig, workers: int, say: Say,
                 worker_timeout: float | None = None) -> None:
        self.config = config
        self.workers = workers
        self.say = say
        self.worker_timeout = worker_timeout
        self.cluster: Any = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def submit_command(self) -> str:
        return str(getattr(self.cluster.job_cls, "submit_command", None) or "the submit command")

    def submit(self, cluster: Any) -> None:
        """Submit the jobs and wait for the batch system's answer; then keep their number.

        A refusal is one line (exit 2): the command and what it printed on stderr."""
        self.cluster = cluster
        jobs = -(-self.workers // max(1, int(cluster._dummy_job.worker_processes)))
        try:
            cluster.sync(_open_jobs, cluster, jobs)
        except OSError as exc:  # no such command
            raise UsageError(f"cannot submit worker jobs: {self.submit_command}: "
                             f"{exc.strerror or exc}") from None
        except RuntimeError as exc:  # the command failed: dask-jobqueue quotes its stderr
            raise UsageError(f"cannot submit worker jobs: {self.submit_command} failed: "
                             f"{_stderr_of(exc)}") from None
        cluster.adapt(minimum=self.workers, maximum=self.workers)

    def job_ids(self) -> list[str]:
        jobs = list(getattr(self.cluster, "workers", {}).values())
        return [str(job.job_id) for job in jobs if getattr(job, "job_id", None)]

    def queue_state(self) -> str:
        """What the batch system says of the jobs: "2 jobs pending: Resources"."""
        ids = self.job_ids()
        command = STATUS_COMMANDS.get(self.config.kind)
        if not ids:
            return "no job in the queue"
        if command is None:
            return f"{_plural(len(ids), 'job')} submitted"
        import subprocess  # here only: every directory run imports this module (its errors)

        try:
            # not checked: squeue fails on an id it has already forgotten (an ended job),
            # and still lists the others
            out = subprocess.run([*command, ",".join(ids)], capture_output=True, text=True,
                                 timeout=STATUS_TIMEOUT, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return f"{_plural(len(ids), 'job')} submitted"
        states: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for line in out.splitlines():
            state, _, reason = line.partition("|")
            states[state.lower()] += 1
            if state == "PENDING" and reason and reason != "None":
                reasons[reason] += 1
        if not states:
            return "no job in the queue"
        parts = [f"{_plural(n, 'job')} {state}" for state, n in states.most_common()]
        why = ", ".join(reasons) if reasons else ""
        return ", ".join(parts) + (f": {why}" if why else "")

    def wait(self, client: Any) -> None:
        """Wait for a first worker, saying why there is none every few seconds."""
        started = time.monotonic()
        next_line = started + FIRST_WAIT_LINE
        while True:
            alive = len(client.nthreads())
            if alive:
                return
            now = time.monotonic()
            if self.worker_timeout is not None and now - started >= self.worker_timeout:
                raise WorkersUnavailable(
                    f"no worker connected within {self.worker_timeout:g} s "
                    f"({self.queue_state()}): the worker jobs are cancelled; nothing was "
                    "written")
            if now >= next_line:
                self.say(f"waiting for workers: {alive}/{self.workers} ({self.queue_state()})")
                next_line = now + WAIT_LINE_EVERY
            time.sleep(0.25)

    def watch(self, client: Any) -> None:
        """Say when workers are lost (their jobs ended) and when they are back."""
        self._watcher = threading.Thread(target=self._watch, args=(client,), daemon=True,
                                         name="anonpipe-worker-watch")
        self._watcher.start()

    def _watch(self, client: Any) -> None:
        """Only says what happens: the run is stopped by the pool's check, on the driver's
        thread (``pipeline.pools.DaskPool.check``, told ``queue_state`` for its line)."""
        previous = connected_workers(client)
        lost = False
        while not self._stop.wait(WATCH_EVERY):
            if client.status in ("closing", "closed"):
                return
            alive = connected_workers(client)
            if alive < previous:
                lost = True
                self.say(f"lost {previous - alive} of {self.workers} workers (their jobs "
                         "ended): their batches are re-run, replacement jobs are submitted")
            elif lost and alive > previous:  # each replacement as it connects
                lost = alive < self.workers
                self.say(f"workers replaced: {alive}/{self.workers} connected")
            previous = alive

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            with contextlib.suppress(RuntimeError):
                self._watcher.join(timeout=5)
