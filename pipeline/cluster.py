"""Where batches run: the backend of one run, which starts and stops its clusters.

``open_client(job)`` yields a :class:`Backend`; the runner asks it for a pool sized to the
work (pipeline.pools) and iterates a sliding window of outcomes, without knowing which kind
of cluster it got.  Which pool for which pass is the tier policy (pipeline.tiers); the
cluster configurations are pipeline.clusterconfig.

Why lazy: a local cluster costs about a second to start and each worker imports the
project, so the default local dask cluster is started only for a pass that wants it, and
then in the background while the driver works inline (``Tuning.inline_while_starting``).
An explicit ``--scheduler`` or job-queue ``--cluster`` is reached when the run starts, and
waited for (the user chose where the work runs).  Every dask cluster started here speaks
TLS with credentials made for the run (pipeline.tls); worker jobs on a batch system are
submitted, waited for and replaced by pipeline.jobqueue.

Local processes (``job.local_pool == "processes"``, the command line's default): worker
processes of our own (pipeline.localworkers), forked from the driver right after its
imports when the run will want them (pipeline.earlypool), else started afresh.  Why: a
dask LocalCluster costs ~0.7 s of wall time and ~2 CPU-seconds to import distributed,
start the scheduler and the nannies and spawn its workers (measured on 2 cores); the
process pool starts in a few milliseconds, so it pays off from a few hundred files
instead of ~10,000, and its per-task cost is a pickle over a pipe (no scheduler).  What
it does not have: a dashboard.  A worker that dies fails the batch it ran, which is
re-run and, failing again, cut into files run alone (the window's quarantine), and is
replaced.  ``--local-pool dask``, ``--dashboard`` and ``--cluster local`` give a dask
LocalCluster (of two workers or more).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.job import TreeJob
from pipeline.pools import DaskPool, InlinePool, Pool, ProcessPool, StartingPool
from pipeline.tiers import Pass, Placement, Tier
from pipeline.writeback import share_this_machine
from tasks.errors import UsageError

if TYPE_CHECKING:  # the configurations are read only for a cluster named (Backend)
    from pipeline.clusterconfig import ClusterConfig


def print_job_script(name: str, driver_command: list[str] | None = None) -> str:
    """The batch script a job-queue cluster would submit (``--print-job-script``), or with
    ``driver_command`` the script that runs that whole command as a job (``--driver``)."""
    from pipeline.clusterconfig import load_cluster_config
    from pipeline.jobqueue import JOBQUEUE_KINDS, driver_script, make_cluster, remove_tls_files
    from pipeline.tls import run_security

    config = load_cluster_config(name)
    if driver_command is not None:
        return driver_script(config, driver_command, Path.cwd())
    if config.kind not in JOBQUEUE_KINDS:
        raise UsageError(f"cluster {name!r} is of kind {config.kind}, not a job queue: "
                         "it has no job script")
    import tempfile

    # as submitted: with TLS, whose certificates are made for each run (the paths shown
    # are those of this printing's, removed again)
    with tempfile.TemporaryDirectory(prefix="anonpipe-tls-") as folder:
        cluster = make_cluster(config, run_security(), Path(folder))
        try:
            return str(cluster.job_script())
        finally:
            cluster.close()
            remove_tls_files(cluster, Path(folder))


#: dask settings of a LocalCluster nobody watches (no dashboard): no worker profiler (a stack
#: sample every 10 ms that only the dashboard shows), and the event-loop tick monitor,
#: system monitor and memory monitor woken every 1-2 s instead of every 20-500 ms.  An idle
#: 2-worker cluster then spends 0.05 instead of 0.08 CPU-s per second (benchmarks/README.md);
#: a worker over its memory limit is still paused or restarted, within a second.
LEAN_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def _lean_local_cluster(options: dict[str, Any], dashboard: bool, security: Any = None
                        ) -> Any:
    """A LocalCluster without what nobody looks at: unless ``dashboard``, no dashboard
    (its HTTP server still answers health checks, on a free port) and the quieter
    :data:`LEAN_DASK_CONFIG`.  Why: on 2 cores the dashboard (bokeh) costs ~0.3 s of
    start-up and ~0.4 s of CPU (benchmarks/README.md), and every CPU-second the driver
    spends is one the workers lack.  Workers inherit the driver's dask config through
    their nannies.  ``security``: TLS for every connection (pipeline.tls); the dashboard
    listens on 127.0.0.1 only."""
    import dask
    from distributed import LocalCluster

    if security is not None:
        options = {**options, "security": security}
    if not dashboard:
        options = {**options, "dashboard_address": "127.0.0.1:0",
                   "scheduler_kwargs": {"dashboard": False,
                                        **(options.get("scheduler_kwargs") or {})}}
    settings = {} if dashboard else LEAN_DASK_CONFIG
    with dask.config.set(settings):
        return LocalCluster(**options)


# --------------------------------------------------------------------------- backend


class Backend:
    """Hands out pools; starts dask only when a pass needs it, and stops it at exit."""

    def __init__(self, job: TreeJob, say: Callable[[str], None] | None = None) -> None:
        self.job = job
        self.say = say or _to_stderr  # lines about the cluster (workers waited for, lost, replaced)
        self.config: ClusterConfig | None = None
        if job.cluster:  # the configurations (and dask's) only for a cluster named
            from pipeline.clusterconfig import load_cluster_config

            self.config = load_cluster_config(job.cluster)
        self.placement = Placement.of(job, self.config)
        self._stack = contextlib.ExitStack()
        self._dask: DaskPool | None = None
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._processes: ProcessPool | None = None
        self.inline = InlinePool()

    @property
    def shares_machine(self) -> bool:
        """Whether the workers write through this machine's page cache (pipeline.writeback):
        no scheduler named and no job queue."""
        return share_this_machine(self.job.scheduler,
                                  self.config.kind if self.config is not None else None)

    def local_workers(self) -> int:
        """How many workers a local pool would have: ``--workers``, the cluster config's,
        or one per core."""
        return self.placement.local_workers

    def pool(self, expected_files: int | None, expected_bytes: int | None = None) -> Pool:
        """The pool for a pass of ``expected_files`` (None: unknown, assume large) holding
        ``expected_bytes`` (None: count files only): the tier policy's choice."""
        tier = self.placement.tier(Pass(expected_files, expected_bytes, self._dask is not None))
        if tier is Tier.INLINE:
            return self.inline
        if tier is Tier.PROCESSES:
            return self._process_pool()
        if self.ready():
            assert self._dask is not None
            return self._dask
        if self.placement.explicit or not self.job.tuning.inline_while_starting:
            self._join()
            return self._start()
        return StartingPool(self)  # the cluster starts with the pass's first payload

    def planned_workers(self, pool: Pool) -> int:
        """How many workers ``pool`` has or will have (for batch sizing)."""
        if isinstance(pool, ProcessPool):
            return pool.workers
        if pool.kind == "inline":
            return 1
        return pool.workers_alive() or self.local_workers()

    def _process_pool(self) -> ProcessPool:
        if self._processes is None:
            from pipeline import earlypool  # it lists the input as pass 1 does (a cycle)

            workers, retries = self.local_workers(), self.job.tuning.retries
            self._processes = (earlypool.take(workers, retries)
                               or ProcessPool(workers, retries))
        return self._processes

    def prestart(self, expected_files: int | None, expected_bytes: int | None,
                 modules: tuple[str, ...]) -> None:
        """Start local worker processes now, importing ``modules``, when a later pass will
        want them (pass 1 may run inline while pass 2 needs workers: large images)."""
        if self._processes is None and self.placement.prestart(
                Pass(expected_files, expected_bytes)):
            self._process_pool().warm_up(modules)

    @property
    def started(self) -> DaskPool | None:
        return self._dask

    def start_in_background(self) -> None:
        if self._starter is None:
            self._starter = threading.Thread(target=self._start_quietly, daemon=True,
                                             name="anonpipe-cluster-start")
            self._starter.start()

    def _start_quietly(self) -> None:
        try:
            self._start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver thread by ready()
            self._start_error = exc

    def ready(self) -> bool:
        """The dask pool is up (a failed background start is raised here)."""
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            raise error
        return self._dask is not None

    def _join(self) -> None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None

    def _start(self) -> DaskPool:
        if self._dask is not None:
            return self._dask
        from distributed import Client

        job, config = self.job, self.config
        retries = job.tuning.retries
        if job.scheduler is not None or (config is not None and config.kind == "scheduler"):
            from pipeline.tls import check_scheduler_address, configured_security

            address = str(job.scheduler or (config.address if config else None))
            check_scheduler_address(address, job.insecure_scheduler)
            try:
                client = self._stack.enter_context(Client(
                    address, security=configured_security(), set_as_default=False,
                    timeout="20s"))
            except (OSError, TypeError, ValueError) as exc:
                raise UsageError(f"cannot reach dask scheduler {address}: {exc}") from None
            self._dask = DaskPool(client, retries, f"scheduler {address}",
                                  worker_timeout=job.worker_timeout)
        else:
            from pipeline.jobqueue import JOBQUEUE_KINDS

            if config is not None and config.kind in JOBQUEUE_KINDS:
                self._dask = self._jobs(config)
            else:
                self._dask = self._local(config, retries)
        return self._dask

    def _jobs(self, config: ClusterConfig) -> DaskPool:
        """Worker jobs on a batch system, with TLS whose certificates are written for the
        jobs (0600, in a private folder removed at the end) where the nodes see them: the
        config's ``shared_temp_directory``, else the state folder."""
        import tempfile

        from distributed import Client

        from pipeline.jobqueue import JobQueue, make_cluster, remove_tls_files
        from pipeline.state import state_dir
        from pipeline.tls import run_security

        job = self.job
        shared = Path(os.path.expandvars(str(config.options.get("shared_temp_directory")
                                             or state_dir()))).expanduser()
        shared.mkdir(mode=0o700, parents=True, exist_ok=True)
        tls_dir = Path(tempfile.mkdtemp(prefix="anonpipe-tls-", dir=shared))  # 0700
        security = run_security()
        workers = job.workers if job.workers else (config.workers or 1)
        queue = JobQueue(config, workers, self.say, job.worker_timeout)
        try:
            made = make_cluster(config, security, tls_dir, job.dashboard)
        except BaseException:
            remove_tls_files(None, tls_dir)
            raise
        self._stack.callback(remove_tls_files, made, tls_dir)  # once the cluster is closed
        cluster = self._stack.enter_context(made)
        queue.submit(cluster)
        client = self._stack.enter_context(Client(cluster, security=security,
                                                  set_as_default=False))
        self._stack.callback(queue.stop)
        queue.wait(client)
        queue.watch(client)
        return DaskPool(client, job.tuning.retries, f"{config.kind} cluster {config.name}",
                        dashboard=job.dashboard is not None,
                        worker_timeout=job.worker_timeout, waiting=queue.queue_state)

    def connect(self) -> None:
        """Reach the scheduler or submit the worker jobs the user named, now: a refusal
        or a timeout is then reported before anything is written."""
        if self.job.scheduler is not None or (
                self.config is not None and self.config.kind != "local"):
            self._start()

    def _local(self, config: ClusterConfig | None, retries: int) -> DaskPool:
        import logging

        from distributed import Client

        from pipeline.tls import run_security

        options: dict[str, Any] = {"threads_per_worker": 1, "processes": True}
        if self.job.dashboard is not None:
            options["dashboard_address"] = self.job.dashboard
        if config is not None:
            options.update(config.options)
        dashboard = options.get("dashboard_address") is not None  # asked, or configured
        n = self.local_workers()
        options["n_workers"] = n
        options.setdefault("silence_logs", logging.ERROR)
        security = run_security()
        cluster = self._stack.enter_context(_lean_local_cluster(options, dashboard, security))
        client = self._stack.enter_context(Client(cluster, security=security,
                                                  set_as_default=False))
        return DaskPool(client, retries, f"local cluster of {n} workers", dashboard=dashboard)

    def describe(self) -> str:
        if self._processes is not None:
            return f"local processes ({self._processes.workers} workers)"
        if self._dask is not None:
            return self._dask.description
        if self._starter is not None:
            return "inline (the local cluster was still starting)"
        return "inline (no dask)"

    def close(self) -> None:
        self._join()  # a cluster still starting is let finish, then stopped with the rest
        if self._processes is not None:
            self._processes.close()
        if "distributed" in sys.modules:  # a cluster, or a client, may be in the stack
            quiet_distributed()
        self._stack.close()
        self._dask = None


#: above every level ``logging`` defines (CRITICAL is 50): no record passes
_SILENT = 60
#: the roots of the loggers ``distributed`` prints to stderr through
_DASK_LOGGERS = ("distributed", "tornado", "bokeh")


def quiet_distributed() -> None:
    """From now on, nothing of ``distributed``'s logging reaches this process's stderr.

    Why, when a run's dask cluster stops: its comms close after the cluster has put back
    the log handlers it quieted (``silence_logs`` lasts as long as the cluster), and each
    logs its closing with a traceback (``Batched Comm Closed``, a lost peer's write): after
    an interrupt, or a lost job, the user would read tracebacks under the run's own
    message.  What the run has to say about its workers, it says itself.  Not undone: the
    comms may still close after this call returns.  The loggers are those ``distributed``
    configures at import (with tornado's, its event loop's), and any of their children
    given a level of its own (``distributed.client``)."""
    import logging  # only where dask ran: a local run does without (and its exit handler)

    for name in _DASK_LOGGERS:
        logging.getLogger(name).setLevel(_SILENT)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
                and name.partition(".")[0] in _DASK_LOGGERS):
            logger.setLevel(_SILENT)


def _to_stderr(text: str) -> None:
    print(f"anonpipe: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def open_client(job: TreeJob, say: Callable[[str], None] | None = None) -> Iterator[Backend]:
    """The cluster for one run; torn down (workers stopped, jobs cancelled) when the run
    ends.  A scheduler or job queue the user named is reached first (:meth:`Backend.connect`)."""
    backend = Backend(job, say or _to_stderr)
    try:
        backend.connect()
        yield backend
    finally:
        backend.close()
