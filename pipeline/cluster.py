"""Where batches run: inline, a local dask cluster, an existing scheduler, or a job queue.

``open_client(job)`` yields a :class:`Backend`; the runner asks it for a :class:`Pool` sized
to the work and iterates a sliding :class:`Window` of outcomes, without knowing which kind
of cluster it got (STYLE.md 10).  Why the window: a few batches per worker in flight,
refilled as results arrive and each future dropped once consumed, keeps the scheduler's
memory flat and means a lost worker only costs its in-flight batches (FACTS.md).

Why lazy: a local cluster costs about a second to start and each worker imports the
project, so the default local dask cluster is started only for a pass of at least
``job.tuning.inline_below`` files, and then in the background while the driver works inline
(``job.tuning.inline_while_starting``).  A smaller pass runs inline when it is tiny, and on the
process pool below when it holds at least ``job.tuning.processes_from`` files or
``job.tuning.processes_from_bytes`` bytes (a 2,000-file run would otherwise spend most of its
time starting dask, or use one core of two).  A local pool of one worker is no pool at
all: ``--workers 1`` (or one core) runs inline (:attr:`Backend.one_local_worker`).  An
explicit ``--scheduler`` or job-queue ``--cluster`` is always used, and waited for (the
user chose where the work runs).  Every dask cluster started here speaks TLS with
credentials made for the run (pipeline.tls); worker jobs on a batch system are submitted,
waited for and replaced by pipeline.jobqueue.

Local processes (``job.local_pool == "processes"``, the command line's default): a
``concurrent.futures`` pool of spawned interpreters that import only ``tasks``.  Why: a
dask LocalCluster costs ~0.7 s of wall time and ~2 CPU-seconds to import distributed,
start the scheduler and the nannies and spawn its workers (measured on 2 cores); the
process pool starts in ~0.1 s, so it pays off from a few hundred files instead of
~10,000, and its per-task cost is a pickle over a pipe (no scheduler).  What it does not
have: a dashboard, and a crash of one worker breaks the whole pool (the pool is rebuilt
and the in-flight batches re-run, so the blame falls on every in-flight batch, and the
runner's file-by-file quarantine finds the culprit).  ``--local-pool dask``,
``--dashboard`` and ``--cluster local`` give a dask LocalCluster (of two workers or more).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pipeline.job import TreeJob
from pipeline.jobqueue import JOBQUEUE_KINDS, JobQueue, make_cluster, remove_tls_files
from pipeline.tls import check_scheduler_address, configured_security, run_security
from tasks.builtin import config_dir
from tasks.errors import UsageError

P = TypeVar("P")
PER_WORKER_IN_FLIGHT = 3
#: a pass of known size is cut into at least this many batches per worker, so the last
#: batches do not leave workers idle (a batch costs ~1 ms of overhead; see balanced_batch)
BATCHES_PER_WORKER = 8
PARENT_POLL_SECONDS = 0.5  # a pool worker checks this often that its driver is alive
MIN_BATCH_FILES = 20
CONFIG_DIR = config_dir("cluster")  # built-in cluster definitions (tasks.builtin)
KINDS = ("local", "scheduler", *JOBQUEUE_KINDS)


@dataclass(slots=True)
class Outcome(Generic[P]):
    """One finished payload: its result dict, or the exception that failed the task."""

    payload: P
    result: dict[str, Any] | None
    error: BaseException | None = None


class Window(Protocol[P]):
    """Iterating yields outcomes as they finish; submission is lazy and bounded."""

    def __iter__(self) -> Iterator[Outcome[P]]: ...

    def start(self) -> None:
        """Submit the first payloads now (before iterating), where workers exist."""

    def stop(self) -> None:
        """Submit nothing more; in-flight payloads still finish and are yielded."""

    def resubmit(self, payloads: Iterable[P]) -> None:
        """Run these one at a time, alone, before the rest of the source.

        For a batch whose task failed, file by file: with nothing else in flight, a
        worker's death can only be blamed on the file that runs.
        """


class Pool(Protocol):
    kind: str

    @property
    def dashboard(self) -> str | None: ...

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any
             ) -> Window[P]: ...

    def workers_alive(self) -> int: ...


def balanced_batch(limit: int, files: int | None, workers: int) -> int:
    """Files per batch for a pass of ``files`` on ``workers``: ``limit`` for large or
    unknown passes, smaller for a pass that ``limit`` would cut into too few batches to
    keep every worker busy to the end (2,000 files in batches of 200 on 2 workers leave
    one worker idle for up to a batch, ~5 % of the pass)."""
    if files is None or workers <= 1:
        return limit
    share = -(-files // (workers * BATCHES_PER_WORKER))
    return max(1, min(limit, max(share, MIN_BATCH_FILES)))


# --------------------------------------------------------------------------- inline


class _InlineWindow(Generic[P]):
    def __init__(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P],
                 args: tuple[Any, ...]) -> None:
        self.fn, self.source, self.args = fn, iter(payloads), args
        self.pending: deque[P] = deque()
        self.stopped = False
        self.exhausted = False

    def start(self) -> None:
        """Nothing to submit: the driver runs each payload as it is iterated."""

    def stop(self) -> None:
        self.stopped = True

    def resubmit(self, payloads: Iterable[P]) -> None:
        self.pending.extend(payloads)

    def __iter__(self) -> Iterator[Outcome[P]]:
        yield from self._run(lambda: True)

    def _run(self, going: Callable[[], bool]) -> Iterator[Outcome[P]]:
        """Run payloads in the driver while ``going()`` and not stopped."""
        while not self.stopped and going():
            if self.pending:
                payload = self.pending.popleft()
            else:
                try:
                    payload = next(self.source)
                except StopIteration:
                    self.exhausted = True
                    return
            try:
                yield Outcome(payload, self.fn(payload, *self.args))
            except Exception as exc:  # noqa: BLE001 - same contract as a failed dask task
                yield Outcome(payload, None, exc)


class InlinePool:
    """No dask: the driver runs each batch itself (``--workers 0`` and small runs)."""

    kind = "inline"
    dashboard: str | None = None

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any
             ) -> _InlineWindow[P]:
        return _InlineWindow(fn, payloads, args)

    def workers_alive(self) -> int:
        return 0


# --------------------------------------------------------------------------- windows


class _SlidingWindow(Generic[P]):
    """What the dask and process-pool windows share: the source, the quarantine queue and
    the refill rule; a subclass says how to submit, how many may be in flight and how
    outcomes come back (``__iter__``)."""

    def __init__(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P],
                 args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.source = iter(payloads)
        self.pending: deque[P] = deque()  # resubmitted: run alone
        self.in_flight: dict[Any, Any] = {}  # future -> what the subclass needs back
        self.stopped = False
        self.exhausted = False

    def start(self) -> None:
        self._fill()

    def stop(self) -> None:
        self.stopped = True

    def resubmit(self, payloads: Iterable[P]) -> None:
        self.pending.extend(payloads)

    def _submit(self, payload: P) -> None:
        raise NotImplementedError

    def _limit(self) -> int:
        raise NotImplementedError

    def _fill(self) -> None:
        if self.stopped:
            return
        if self.pending:  # quarantine: one at a time, once the others have drained
            if not self.in_flight:
                self._submit(self.pending.popleft())
            return
        limit = self._limit()
        while len(self.in_flight) < limit and not self.exhausted:
            try:
                payload = next(self.source)
            except StopIteration:
                self.exhausted = True
                return
            self._submit(payload)


# --------------------------------------------------------------------------- dask


class _DaskWindow(_SlidingWindow[P]):
    def __init__(self, pool: DaskPool, fn: Callable[..., dict[str, Any]],
                 payloads: Iterable[P], args: tuple[Any, ...]) -> None:
        from distributed import as_completed

        super().__init__(fn, payloads, args)
        self.pool = pool
        self.completed = as_completed(loop=pool.client.loop)

    def _submit(self, payload: P) -> None:
        future = self.pool.client.submit(self.fn, payload, *self.args, pure=False,
                                         retries=self.pool.retries)
        self.in_flight[future] = payload
        self.completed.add(future)

    def _limit(self) -> int:
        return max(2, PER_WORKER_IN_FLIGHT * max(self.pool.workers_alive(), 1))

    def _next(self) -> Any:
        """The next finished future, asking the pool meanwhile whether to give up (as
        ``as_completed`` itself waits: on its condition, 0.1 s at a time)."""
        completed = self.completed
        while not completed.has_ready():
            self.pool.check()
            with completed.thread_condition:
                completed.thread_condition.wait(timeout=0.1)
        return next(completed)

    def __iter__(self) -> Iterator[Outcome[P]]:
        self._fill()
        while self.in_flight:
            future = self._next()
            payload = self.in_flight.pop(future)
            try:
                outcome: Outcome[P] = Outcome(payload, future.result())
            except Exception as exc:  # noqa: BLE001 - raised after its retries, or KilledWorker
                outcome = Outcome(payload, None, exc)
            future.release()  # dropped once consumed: never re-run after a worker loss
            del future
            self._fill()  # keep the workers busy while the driver journals
            yield outcome
            self._fill()


class DaskPool:
    """Batches go to dask workers through a distributed ``Client``."""

    kind = "dask"

    def __init__(self, client: Any, retries: int, description: str,
                 dashboard: bool = True, check: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.check = check  # raises when the run must stop (no worker jobs for too long)
        self.retries = retries
        self.description = description
        self._alive = (0.0, 0)
        # a scheduler without a dashboard still has a link (to the default port): shown
        # only where one is served
        self.dashboard: str | None = (
            client.dashboard_link if dashboard and importlib.util.find_spec("bokeh") else None)

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any
             ) -> _DaskWindow[P]:
        return _DaskWindow(self, fn, payloads, args)

    def workers_alive(self) -> int:
        """Workers the scheduler knows (asked at most once a second: it is an RPC)."""
        checked, count = self._alive
        now = time.monotonic()
        if now - checked >= 1.0:
            try:
                count = len(self.client.nthreads())
            except Exception:  # noqa: BLE001 - a scheduler that went away counts as none
                count = 0
            self._alive = (now, count)
        return count


class _HybridWindow(_InlineWindow[P]):
    """Inline while the local cluster starts in the background, then the dask window.

    Why: a local cluster takes about a second to start and each worker another to import
    the project; the driver would otherwise sit idle for it.  The start is asked for by
    the first payload, not before: a pass whose source turns out empty (a rerun with
    nothing left to scan or write) starts no cluster.
    """

    def __init__(self, backend: Backend, fn: Callable[..., dict[str, Any]],
                 payloads: Iterable[P], args: tuple[Any, ...]) -> None:
        super().__init__(fn, _first_starts(payloads, backend.start_in_background), args)
        self.backend = backend
        self.dask: _DaskWindow[P] | None = None

    def start(self) -> None:
        """Nothing yet: the driver works inline until the cluster is up."""

    def stop(self) -> None:
        self.stopped = True
        if self.dask is not None:
            self.dask.stop()

    def resubmit(self, payloads: Iterable[P]) -> None:
        (self.dask.pending if self.dask is not None else self.pending).extend(payloads)

    def __iter__(self) -> Iterator[Outcome[P]]:
        yield from self._run(lambda: not self.backend.ready())
        if self.stopped or self.exhausted:  # stopped, or the source ran out inline
            return
        pool = self.backend.started
        assert pool is not None
        self.dask = pool.imap(self.fn, self.source, *self.args)
        self.dask.pending.extend(self.pending)
        self.pending.clear()
        yield from self.dask


def _first_starts(payloads: Iterable[P], start: Callable[[], None]) -> Iterator[P]:
    """``payloads``, calling ``start`` once, when the first of them is taken."""
    iterator = iter(payloads)
    for payload in iterator:
        start()
        yield payload
        yield from iterator
        return


class _StartingPool:
    """The pool of a local cluster that is still starting (see :class:`_HybridWindow`)."""

    kind = "dask"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def dashboard(self) -> str | None:
        pool = self.backend.started
        return pool.dashboard if pool is not None else None

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any
             ) -> _HybridWindow[P]:
        return _HybridWindow(self.backend, fn, payloads, args)

    def workers_alive(self) -> int:
        pool = self.backend.started
        return pool.workers_alive() if pool is not None else 0


# --------------------------------------------------------------------------- processes


def _worker_init(driver: int) -> None:
    """In each pool process: Ctrl-C is the driver's to handle (it stops the pool), and a
    worker whose driver died (killed: no shutdown) exits instead of waiting forever on a
    queue nobody feeds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(3)

    threading.Thread(target=watch, name="anonpipe-parent-watch", daemon=True).start()


def _import_modules(modules: tuple[str, ...]) -> dict[str, Any]:
    """A warm-up task: the imports a worker's first real task would otherwise wait for."""
    import importlib

    for name in modules:
        importlib.import_module(name)
    return {}


class _ProcessWindow(_SlidingWindow[P]):
    """The sliding window over a :class:`ProcessPool`.

    A task that raised, or that a broken pool (a worker died) took down, is re-run up to
    ``pool.retries`` times (as dask's ``retries`` and lost-worker re-runs do) before its
    outcome carries the error.  ``in_flight``: future -> (order, payload, attempt).
    """

    def __init__(self, pool: ProcessPool, fn: Callable[..., dict[str, Any]],
                 payloads: Iterable[P], args: tuple[Any, ...]) -> None:
        super().__init__(fn, payloads, args)
        self.pool = pool
        self.sequence = 0

    def _submit(self, payload: P, attempt: int = 0) -> None:
        future = self.pool.submit(self.fn, payload, *self.args)
        self.sequence += 1
        self.in_flight[future] = (self.sequence, payload, attempt)

    def _limit(self) -> int:
        return max(2, PER_WORKER_IN_FLIGHT * self.pool.workers)

    def __iter__(self) -> Iterator[Outcome[P]]:
        self._fill()
        while self.in_flight:
            done, _ = wait(list(self.in_flight), return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: self.in_flight[f][0]):
                _, payload, attempt = self.in_flight.pop(future)
                try:
                    outcome: Outcome[P] = Outcome(payload, future.result())
                except Exception as exc:  # noqa: BLE001 - a raising task or a dead worker
                    if attempt < self.pool.retries:
                        self._submit(payload, attempt + 1)
                        continue
                    outcome = Outcome(payload, None, exc)
                self._fill()  # keep the workers busy while the driver journals
                yield outcome
            self._fill()


class ProcessPool:
    """Batches go to a pool of local worker processes (spawned: no state of the driver)."""

    kind = "processes"
    dashboard: str | None = None

    def __init__(self, workers: int, retries: int) -> None:
        import multiprocessing

        self.workers = workers
        self.retries = retries
        self._context = multiprocessing.get_context("spawn")
        self._executor: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=self._context,
                                                 initializer=_worker_init,
                                                 initargs=(os.getpid(),))
        return self._executor

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Future[dict[str, Any]]:
        try:
            return self._pool().submit(fn, *args)
        except BrokenProcessPool:  # a worker died: the pool is unusable, start a new one
            self._shutdown()
            self.restarts += 1
            return self._pool().submit(fn, *args)

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any
             ) -> _ProcessWindow[P]:
        return _ProcessWindow(self, fn, payloads, args)

    def warm_up(self, modules: tuple[str, ...]) -> None:
        """Spawn every worker now and have it import ``modules`` (not waited for)."""
        for _ in range(self.workers):
            self.submit(_import_modules, modules)

    def workers_alive(self) -> int:
        executor = self._executor
        processes = getattr(executor, "_processes", None) if executor is not None else None
        return sum(1 for p in (processes or {}).values() if p.is_alive())

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        self._shutdown()


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ClusterConfig:
    """``configs/cluster/NAME.yaml``: what kind of cluster and its keyword arguments."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None  # workers to request (jobqueue scale(n=...), local n_workers)
    address: str | None = None  # kind "scheduler"
    source: Path | None = None
    driver: dict[str, Any] = field(default_factory=dict)  # the driver's own job (--driver)


def config_dirs() -> list[Path]:
    """Search order: ``$ANONPIPE_CONFIG_DIR/cluster``, the user's config, the project's."""
    dirs = []
    if os.environ.get("ANONPIPE_CONFIG_DIR"):
        dirs.append(Path(os.environ["ANONPIPE_CONFIG_DIR"]) / "cluster")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs.append(Path(base) / "anonpipe" / "cluster")
    dirs.append(CONFIG_DIR)
    return dirs


def load_cluster_config(name: str) -> ClusterConfig:
    """Read and validate a cluster config by name (or by path to a ``.yaml`` file)."""
    if name.endswith((".yaml", ".yml")):
        path: Path | None = Path(name)
        if not path.is_file():  # type: ignore[union-attr]
            raise UsageError(f"cluster config {name} does not exist")
    else:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"invalid cluster name {name!r} (letters, digits, - and _)")
        path = next((d / f"{name}.yaml" for d in config_dirs() if (d / f"{name}.yaml").is_file()),
                    None)
        if path is None:
            known = sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise UsageError(f"unknown cluster {name!r}; known: {', '.join(known) or 'none'} "
                             "(or the path of a cluster config: --cluster PATH.yaml)")
    assert path is not None
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read cluster config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"cluster config {path}: expected a mapping")
    kind = data.get("kind")
    if kind not in KINDS:
        raise UsageError(f"cluster config {path}: kind {kind!r} is not one of {', '.join(KINDS)}")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise UsageError(f"cluster config {path}: 'options' must be a mapping")
    workers = data.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise UsageError(f"cluster config {path}: 'workers' must be a whole number >= 0")
    address = data.get("address")
    if kind == "scheduler" and not address:
        raise UsageError(f"cluster config {path}: kind scheduler needs an 'address'")
    unknown = set(data) - {"kind", "options", "workers", "address", "description", "driver"}
    if unknown:
        raise UsageError(f"cluster config {path}: unknown keys {', '.join(sorted(unknown))}")
    driver = data.get("driver") or {}
    if not isinstance(driver, dict) or set(driver) - {"cores", "memory", "walltime"}:
        raise UsageError(f"cluster config {path}: 'driver' takes cores, memory and walltime")
    return ClusterConfig(name, kind, dict(options), workers, address, path, dict(driver))


def print_job_script(name: str, driver_command: list[str] | None = None) -> str:
    """The batch script a job-queue cluster would submit (``--print-job-script``), or with
    ``driver_command`` the script that runs that whole command as a job (``--driver``)."""
    config = load_cluster_config(name)
    if driver_command is not None:
        from pipeline.jobqueue import driver_script

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
        self.config = load_cluster_config(job.cluster) if job.cluster else None
        self._stack = contextlib.ExitStack()
        self._dask: DaskPool | None = None
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._processes: ProcessPool | None = None
        self.inline = InlinePool()

    @property
    def wants_dask(self) -> bool:
        return self.job.workers != 0 or self.job.scheduler is not None or self.config is not None

    def local_workers(self) -> int:
        """How many workers a local pool would have: ``--workers``, the cluster config's,
        or one per core."""
        return (self.job.workers or (self.config.workers if self.config else None)
                or os.cpu_count() or 1)

    @property
    def one_local_worker(self) -> bool:
        """A local pool of a single worker: the driver does that work itself.

        Why: one worker process cannot run beside another, so it would only add its start
        (~0.1 s, plus ~0.4 CPU-s to import dask) and the hand-over of every batch and
        result: 20,000 small files took 15.7 s and 0.55 ms of user CPU per file inline,
        against 22.6 s and 0.68 ms on a one-worker LocalCluster (one run each;
        benchmarks/README.md).  A scheduler, a job queue or a dashboard the user asked
        for still gets its cluster."""
        return self.wants_dask and not self.explicit and self.local_workers() == 1

    @property
    def local_processes(self) -> bool:
        """Local workers as a process pool rather than a dask LocalCluster."""
        return (self.job.local_pool == "processes" and self.job.scheduler is None
                and self.config is None)

    @property
    def default_local(self) -> bool:
        """The default local dask cluster: no scheduler, no cluster config named."""
        return (self.job.local_pool == "dask" and self.job.scheduler is None
                and self.config is None)

    def _middling(self, files: int | None, nbytes: int | None) -> bool:
        """Too small a pass for the default LocalCluster, big enough for local processes."""
        job = self.job
        if not self.default_local or files is None or files >= job.tuning.inline_below:
            return False
        return ((job.tuning.processes_from is not None and files >= job.tuning.processes_from)
                or (job.tuning.processes_from_bytes is not None and nbytes is not None
                    and nbytes >= job.tuning.processes_from_bytes))

    @property
    def explicit(self) -> bool:
        """A scheduler or cluster the user named, or a dashboard the user wants to watch:
        used even for small runs."""
        return self.job.scheduler is not None or self.job.dashboard is not None or (
            self.config is not None and self.config.kind != "local")

    def _small(self, files: int | None, nbytes: int | None) -> bool:
        job = self.job
        if files is None or files >= job.tuning.inline_below:
            return False
        return job.tuning.inline_below_bytes is None or nbytes is None or nbytes < job.tuning.inline_below_bytes

    def pool(self, expected_files: int | None, expected_bytes: int | None = None) -> Pool:
        """The pool for a pass of ``expected_files`` (None: unknown, assume large) holding
        ``expected_bytes`` (None: count files only)."""
        if not self.wants_dask or self.one_local_worker:
            return self.inline
        if self.local_processes:
            if self._small(expected_files, expected_bytes):  # even when prestarted for a
                return self.inline  # later pass: they are still booting
            return self._process_pool()
        below_cluster = expected_files is not None and expected_files < self.job.tuning.inline_below
        if below_cluster and not self.explicit and self._dask is None:
            if self._middling(expected_files, expected_bytes):
                return self._process_pool()
            return self.inline
        if self.ready():
            assert self._dask is not None
            return self._dask
        if self.explicit or not self.job.tuning.inline_while_starting:
            self._join()
            return self._start()
        return _StartingPool(self)  # the cluster starts with the pass's first payload

    def planned_workers(self, pool: Pool) -> int:
        """How many workers ``pool`` has or will have (for batch sizing)."""
        if isinstance(pool, ProcessPool):
            return pool.workers
        if pool.kind == "inline":
            return 1
        return pool.workers_alive() or self.local_workers()

    def _process_pool(self) -> ProcessPool:
        if self._processes is None:
            self._processes = ProcessPool(self.local_workers(), self.job.tuning.retries)
        return self._processes

    def prestart(self, expected_files: int | None, expected_bytes: int | None,
                 modules: tuple[str, ...]) -> None:
        """Start local worker processes now, importing ``modules``, when a later pass will
        want them (pass 1 may run inline while pass 2 needs workers: large images)."""
        if not self.wants_dask or self.one_local_worker or self._processes is not None:
            return
        if (self.local_processes and not self._small(expected_files, expected_bytes)) \
                or self._middling(expected_files, expected_bytes):
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
            address = str(job.scheduler or (config.address if config else None))
            check_scheduler_address(address, job.insecure_scheduler)
            try:
                client = self._stack.enter_context(Client(
                    address, security=configured_security(), set_as_default=False,
                    timeout="20s"))
            except (OSError, TypeError, ValueError) as exc:
                raise UsageError(f"cannot reach dask scheduler {address}: {exc}") from None
            self._dask = DaskPool(client, retries, f"scheduler {address}")
        elif config is not None and config.kind in JOBQUEUE_KINDS:
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

        from pipeline.state import state_dir

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
                        dashboard=job.dashboard is not None, check=queue.check)

    def connect(self) -> None:
        """Reach the scheduler or submit the worker jobs the user named, now: a refusal
        or a timeout is then reported before anything is written."""
        if self.job.scheduler is not None or (
                self.config is not None and self.config.kind != "local"):
            self._start()

    def _local(self, config: ClusterConfig | None, retries: int) -> DaskPool:
        from distributed import Client

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
        self._stack.close()
        self._dask = None


def _to_stderr(text: str) -> None:
    import sys

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
