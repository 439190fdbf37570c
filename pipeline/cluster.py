"""Where batches run: inline, a local dask cluster, an existing scheduler, or a job queue.

``open_client(job)`` yields a :class:`Backend`; the runner asks it for a :class:`Pool` sized
to the work and iterates a sliding :class:`Window` of outcomes, without knowing which kind
of cluster it got (STYLE.md 10).  Why the window: a few batches per worker in flight,
refilled as results arrive and each future dropped once consumed, keeps the scheduler's
memory flat and means a lost worker only costs its in-flight batches (FACTS.md).

Why lazy: a local cluster costs about a second to start and each worker imports the
project; runs of fewer than ``job.inline_below`` files are faster inline, so a local
cluster is started only when a pass is big enough, and then in the background while the
driver works inline (``job.inline_while_starting``).  An explicit ``--scheduler`` or
``--cluster`` is always used, and waited for (the user chose where the work runs).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import yaml

from pipeline.job import TreeJob
from tasks.errors import UsageError

P = TypeVar("P")
PER_WORKER_IN_FLIGHT = 3
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "cluster"
JOBQUEUE_KINDS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "oar": "OARCluster",
    "htcondor": "HTCondorCluster",
}
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


# --------------------------------------------------------------------------- inline


class _InlineWindow(Generic[P]):
    def __init__(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P],
                 args: tuple[Any, ...]) -> None:
        self.fn, self.source, self.args = fn, iter(payloads), args
        self.pending: deque[P] = deque()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def resubmit(self, payloads: Iterable[P]) -> None:
        self.pending.extend(payloads)

    def __iter__(self) -> Iterator[Outcome[P]]:
        while not self.stopped:
            if self.pending:
                payload = self.pending.popleft()
            else:
                try:
                    payload = next(self.source)
                except StopIteration:
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


# --------------------------------------------------------------------------- dask


class _DaskWindow(Generic[P]):
    def __init__(self, pool: DaskPool, fn: Callable[..., dict[str, Any]],
                 payloads: Iterable[P], args: tuple[Any, ...]) -> None:
        from distributed import as_completed

        self.pool, self.fn, self.args = pool, fn, args
        self.source = iter(payloads)
        self.pending: deque[P] = deque()  # resubmitted: run alone
        self.in_flight: dict[Any, P] = {}
        self.completed = as_completed(loop=pool.client.loop)
        self.stopped = False
        self.exhausted = False

    def stop(self) -> None:
        self.stopped = True

    def resubmit(self, payloads: Iterable[P]) -> None:
        self.pending.extend(payloads)

    def _submit(self, payload: P) -> None:
        future = self.pool.client.submit(self.fn, payload, *self.args, pure=False,
                                         retries=self.pool.retries)
        self.in_flight[future] = payload
        self.completed.add(future)

    def _fill(self) -> None:
        if self.stopped:
            return
        if self.pending:  # quarantine: one at a time, once the others have drained
            if not self.in_flight:
                self._submit(self.pending.popleft())
            return
        limit = max(2, PER_WORKER_IN_FLIGHT * max(self.pool.workers_alive(), 1))
        while len(self.in_flight) < limit and not self.exhausted:
            try:
                payload = next(self.source)
            except StopIteration:
                self.exhausted = True
                return
            self._submit(payload)

    def __iter__(self) -> Iterator[Outcome[P]]:
        self._fill()
        while self.in_flight:
            future = next(self.completed)
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

    def __init__(self, client: Any, retries: int, description: str) -> None:
        self.client = client
        self.retries = retries
        self.description = description
        self._alive = (0.0, 0)
        self.dashboard: str | None = (
            client.dashboard_link if importlib.util.find_spec("bokeh") else None)

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


class _HybridWindow(Generic[P]):
    """Inline while the local cluster starts in the background, then the dask window.

    Why: a local cluster takes about a second to start and each worker another to import
    the project; the driver would otherwise sit idle for it.
    """

    def __init__(self, backend: Backend, fn: Callable[..., dict[str, Any]],
                 payloads: Iterable[P], args: tuple[Any, ...]) -> None:
        self.backend, self.fn, self.args = backend, fn, args
        self.source = iter(payloads)
        self.pending: deque[P] = deque()
        self.stopped = False
        self.dask: _DaskWindow[P] | None = None
        self.inline_payloads = 0

    def stop(self) -> None:
        self.stopped = True
        if self.dask is not None:
            self.dask.stop()

    def resubmit(self, payloads: Iterable[P]) -> None:
        (self.dask.pending if self.dask is not None else self.pending).extend(payloads)

    def __iter__(self) -> Iterator[Outcome[P]]:
        while not self.stopped and not self.backend.ready():
            if self.pending:
                payload = self.pending.popleft()
            else:
                try:
                    payload = next(self.source)
                except StopIteration:
                    return
            self.inline_payloads += 1
            try:
                yield Outcome(payload, self.fn(payload, *self.args))
            except Exception as exc:  # noqa: BLE001 - as in _InlineWindow
                yield Outcome(payload, None, exc)
        if self.stopped:
            return
        pool = self.backend.started
        assert pool is not None
        self.dask = pool.imap(self.fn, self.source, *self.args)
        self.dask.pending.extend(self.pending)
        self.pending.clear()
        yield from self.dask


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
            raise UsageError(f"unknown cluster {name!r}; known: {', '.join(known) or 'none'}")
    assert path is not None
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
    unknown = set(data) - {"kind", "options", "workers", "address", "description"}
    if unknown:
        raise UsageError(f"cluster config {path}: unknown keys {', '.join(sorted(unknown))}")
    return ClusterConfig(name, kind, dict(options), workers, address, path)


def _jobqueue_cluster(config: ClusterConfig) -> Any:
    import dask_jobqueue

    cls = getattr(dask_jobqueue, JOBQUEUE_KINDS[config.kind])
    options = dict(config.options)
    options.setdefault("silence_logs", logging.ERROR)
    # a random port: the default 8787 may be taken (and serves nothing without bokeh)
    options["scheduler_options"] = {"dashboard_address": ":0",
                                    **(options.get("scheduler_options") or {})}
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cluster config {config.source}: {exc}") from None


def print_job_script(name: str) -> str:
    """The batch script a job-queue cluster would submit (``--print-job-script``)."""
    config = load_cluster_config(name)
    if config.kind not in JOBQUEUE_KINDS:
        raise UsageError(f"cluster {name!r} is of kind {config.kind}, not a job queue: "
                         "it has no job script")
    cluster = _jobqueue_cluster(config)
    try:
        return str(cluster.job_script())
    finally:
        cluster.close()


# --------------------------------------------------------------------------- backend


class Backend:
    """Hands out pools; starts dask only when a pass needs it, and stops it at exit."""

    def __init__(self, job: TreeJob) -> None:
        self.job = job
        self.config = load_cluster_config(job.cluster) if job.cluster else None
        self._stack = contextlib.ExitStack()
        self._dask: DaskPool | None = None
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self.inline = InlinePool()

    @property
    def wants_dask(self) -> bool:
        return self.job.workers != 0 or self.job.scheduler is not None or self.config is not None

    @property
    def explicit(self) -> bool:
        """A scheduler or cluster the user named: used even for small runs."""
        return self.job.scheduler is not None or (
            self.config is not None and self.config.kind != "local")

    def pool(self, expected_files: int | None) -> Pool:
        """The pool for a pass of ``expected_files`` (None: unknown, assume large)."""
        if not self.wants_dask:
            return self.inline
        small = expected_files is not None and expected_files < self.job.inline_below
        if small and not self.explicit and self._dask is None:
            return self.inline
        if self.ready():
            assert self._dask is not None
            return self._dask
        if self.explicit or not self.job.inline_while_starting:
            self._join()
            return self._start()
        self._start_in_background()
        return _StartingPool(self)

    @property
    def started(self) -> DaskPool | None:
        return self._dask

    def _start_in_background(self) -> None:
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
        retries = job.retries
        if job.scheduler is not None or (config is not None and config.kind == "scheduler"):
            address = job.scheduler or (config.address if config else None)
            try:
                client = self._stack.enter_context(Client(address, set_as_default=False,
                                                          timeout="20s"))
            except OSError as exc:
                raise UsageError(f"cannot reach dask scheduler {address}: {exc}") from None
            self._dask = DaskPool(client, retries, f"scheduler {address}")
        elif config is not None and config.kind in JOBQUEUE_KINDS:
            cluster = self._stack.enter_context(_jobqueue_cluster(config))
            workers = job.workers if job.workers else (config.workers or 1)
            cluster.scale(n=workers)
            client = self._stack.enter_context(Client(cluster, set_as_default=False))
            self._dask = DaskPool(client, retries, f"{config.kind} cluster {config.name}")
        else:
            self._dask = self._local(config, retries)
        return self._dask

    def _local(self, config: ClusterConfig | None, retries: int) -> DaskPool:
        from distributed import Client, LocalCluster

        options: dict[str, Any] = {"threads_per_worker": 1, "processes": True}
        if config is not None:
            options.update(config.options)
        n = self.job.workers or (config.workers if config else None) or os.cpu_count() or 1
        options["n_workers"] = n
        options.setdefault("silence_logs", logging.ERROR)
        options.setdefault("dashboard_address", ":0")
        cluster = self._stack.enter_context(LocalCluster(**options))
        client = self._stack.enter_context(Client(cluster, set_as_default=False))
        return DaskPool(client, retries, f"local cluster of {n} workers")

    def describe(self) -> str:
        if self._dask is not None:
            return self._dask.description
        if self._starter is not None:
            return "inline (the local cluster was still starting)"
        return "inline (no dask)"

    def close(self) -> None:
        self._join()  # a cluster still starting is let finish, then stopped with the rest
        self._stack.close()
        self._dask = None


@contextlib.contextmanager
def open_client(job: TreeJob) -> Iterator[Backend]:
    """The cluster for one run; torn down (workers stopped) when the run ends."""
    backend = Backend(job)
    try:
        yield backend
    finally:
        backend.close()
