"""Pools and their sliding windows: how batches reach workers and outcomes come back.

A :class:`Pool` (inline, a local process pool, dask) hands out a :class:`Window` over a
stream of payloads; the runner iterates outcomes without knowing which kind of pool it got
(pipeline.cluster chooses, pipeline.tiers says which for which pass).  Why a window: a few
batches per worker in flight, refilled as results arrive and each future dropped once
consumed, keeps the scheduler's memory flat and means a lost worker only costs its
in-flight batches.

Quarantine is the window's too: a payload whose task failed (it raised after its retries,
or its worker died) and that ``split`` cuts into several parts is not yielded; its parts
run one at a time, alone, once the others have drained, so a worker's death can only be
blamed on the file that runs.  A stopped window quarantines nothing (what is in flight
still finishes and is yielded, failures included).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from pipeline import collector
from pipeline.jobqueue import WorkersUnavailable, connected_workers
from pipeline.localworkers import LocalWorkers, Task, WorkerDied

P = TypeVar("P")
PER_WORKER_IN_FLIGHT = 3
#: seconds a dask result is waited for before the pool is asked whether the run must stop
RESULT_WAIT = 1.0
#: a pass of known size is cut into at least this many batches per worker, so the last
#: batches do not leave workers idle (a batch costs ~1 ms of overhead; see balanced_batch)
BATCHES_PER_WORKER = 8
#: near a pass's end a batch holds at most 1/TAPER of each worker's share of the files left
TAPER = 2
PARENT_POLL_SECONDS = 0.5  # a pool worker checks this often that its driver is alive
MIN_BATCH_FILES = 20


#: cuts a failed payload into the parts to re-run alone (one part: no quarantine)
Split = Callable[[P], Sequence[P]]


class Outcome(Generic[P]):
    """One finished payload: its result dict, or the exception that failed the task."""

    __slots__ = ("error", "payload", "result")

    def __init__(self, payload: P, result: dict[str, Any] | None,
                 error: BaseException | None = None) -> None:
        self.payload = payload
        self.result = result
        self.error = error


def task_failure(error: BaseException) -> str:
    """Why a task failed, for a report line: the exception's type only (a task's message
    may name a patient's file), or how its worker died."""
    if isinstance(error, WorkerDied):
        return str(error)
    return type(error).__name__


class Window(Protocol[P]):
    """Iterating yields outcomes as they finish; submission is lazy and bounded."""

    def __iter__(self) -> Iterator[Outcome[P]]: ...

    def start(self) -> None:
        """Submit the first payloads now (before iterating), where workers exist."""

    def stop(self) -> None:
        """Submit nothing more; in-flight payloads still finish and are yielded."""


class Pool(Protocol):
    kind: str

    @property
    def dashboard(self) -> str | None: ...

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any,
             split: Split[P] | None = None) -> Window[P]:
        """Outcomes of ``fn(payload, *args)``; a failed payload that ``split`` cuts into
        several parts is quarantined (module docstring)."""

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


def tapered_batch(size: int, left: int | None, workers: int) -> int:
    """Files for the next batch of a pass cut into ``size``-file batches, ``left`` files
    (about) still to hand out: ``size`` until the end nears, then smaller, down to
    :data:`MIN_BATCH_FILES`, so the workers run out of work together.  Without it the
    last batch ran alone: on a 960-slice CT series in 60-slice batches, one of 2 workers
    sat idle for 10-51 ms at the end of pass 2 (4 runs; benchmarks/README.md)."""
    if left is None or workers <= 1:
        return size
    return max(1, min(size, max(-(-left // (TAPER * workers)), MIN_BATCH_FILES)))


# --------------------------------------------------------------------------- windows, inline


class _WindowBase(Generic[P]):
    """What every window holds: the source, the quarantine queue, the stop flag."""

    def __init__(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P],
                 args: tuple[Any, ...], split: Split[P] | None) -> None:
        self.fn, self.args, self.split = fn, args, split
        self.source = iter(payloads)
        self.pending: deque[P] = deque()  # quarantined: run alone
        self.stopped = False
        self.exhausted = False

    def stop(self) -> None:
        self.stopped = True

    def _quarantined(self, payload: P, error: BaseException | None) -> bool:
        """Whether a failed ``payload`` is cut into parts to run alone (not yielded)."""
        if error is None or self.split is None or self.stopped:
            return False
        parts = self.split(payload)
        if len(parts) <= 1:
            return False
        self.pending.extend(parts)
        return True


class _InlineWindow(_WindowBase[P]):
    def start(self) -> None:
        """Nothing to submit: the driver runs each payload as it is iterated."""

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
                if not self._quarantined(payload, exc):
                    yield Outcome(payload, None, exc)


class InlinePool:
    """No dask: the driver runs each batch itself (``--workers 0`` and small runs)."""

    kind = "inline"
    dashboard: str | None = None

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any,
             split: Split[P] | None = None) -> _InlineWindow[P]:
        return _InlineWindow(fn, payloads, args, split)

    def workers_alive(self) -> int:
        return 0


# --------------------------------------------------------------------------- sliding windows


class _SlidingWindow(_WindowBase[P]):
    """What the dask and process-pool windows share: the refill rule; a subclass says how
    to submit, how many may be in flight and how outcomes come back (``__iter__``)."""

    def __init__(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P],
                 args: tuple[Any, ...], split: Split[P] | None) -> None:
        super().__init__(fn, payloads, args, split)
        self.in_flight: dict[Any, Any] = {}  # future or task -> what the subclass needs back

    def start(self) -> None:
        self._fill()

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
                 payloads: Iterable[P], args: tuple[Any, ...], split: Split[P] | None) -> None:
        from distributed import as_completed

        super().__init__(fn, payloads, args, split)
        self.pool = pool
        self.completed = as_completed(loop=pool.client.loop)

    def _submit(self, payload: P) -> None:
        self.pool.check()  # a closed client refuses the task with its own error
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

    def _result(self, future: Any) -> dict[str, Any]:
        """``future.result()``, asking the pool every :data:`RESULT_WAIT` seconds whether
        to give up.  Why: the result of a finished task stays on its worker until it is
        fetched; a worker lost before that has the task run again, which needs a worker,
        and an unbounded ``result()`` would wait for one for ever."""
        while True:
            try:
                return future.result(timeout=RESULT_WAIT)  # type: ignore[no-any-return]
            except TimeoutError:
                if future.status == "error":
                    raise  # the task's own TimeoutError, not the wait's
                self.pool.check()

    def __iter__(self) -> Iterator[Outcome[P]]:
        self._fill()
        while self.in_flight:
            future = self._next()
            payload = self.in_flight.pop(future)
            try:
                outcome: Outcome[P] = Outcome(payload, self._result(future))
            except WorkersUnavailable:
                raise  # the run stops: no outcome of this batch is known
            except Exception as exc:  # noqa: BLE001 - raised after its retries, or KilledWorker
                outcome = Outcome(payload, None, exc)
            future.release()  # dropped once consumed: never re-run after a worker loss
            del future
            if self._quarantined(payload, outcome.error):
                self._fill()
                continue
            self._fill()  # keep the workers busy while the driver journals
            yield outcome
            self._fill()


class DaskPool:
    """Batches go to dask workers through a distributed ``Client``."""

    kind = "dask"

    def __init__(self, client: Any, retries: int, description: str,
                 dashboard: bool = True, worker_timeout: float | None = None,
                 waiting: Callable[[], str] | None = None) -> None:
        self.client = client
        self.retries = retries
        self.description = description
        #: --worker-timeout: how long the run waits with no worker connected (None: ever)
        self.worker_timeout = worker_timeout
        #: why there is no worker, for the line that stops the run (a job queue's state);
        #: default: the pool's description
        self.waiting = waiting or (lambda: description)
        self._alive = (0.0, 0)
        self._none_since: float | None = None
        # a scheduler without a dashboard still has a link (to the default port): shown
        # only where one is served
        self.dashboard: str | None = (
            client.dashboard_link if dashboard and importlib.util.find_spec("bokeh") else None)

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any,
             split: Split[P] | None = None) -> _DaskWindow[P]:
        return _DaskWindow(self, fn, payloads, args, split)

    def check(self) -> None:
        """Raise :class:`WorkersUnavailable` when no result can come any more.

        The client closes itself when it cannot reach the scheduler again (20 s by
        default): the futures in flight then never finish, and a run that waited for them
        would wait for ever.  With ``worker_timeout``, a scheduler that is there but has
        had no worker for that long (lost jobs not replaced) stops the run too."""
        if self.client.status in ("closing", "closed"):
            raise WorkersUnavailable(f"lost the connection to the {self.description}: the "
                                     "run stops; rerun the same command to resume")
        if self.worker_timeout is not None:
            now = time.monotonic()
            if self.workers_alive():
                self._none_since = None
            elif self._none_since is None:
                self._none_since = now
            elif now - self._none_since >= self.worker_timeout:
                raise WorkersUnavailable(
                    f"no worker for {self.worker_timeout:g} s ({self.waiting()}): the run "
                    "stops; rerun the same command to resume")

    def workers_alive(self) -> int:
        """Workers the scheduler knows (asked at most once a second: it is an RPC)."""
        checked, count = self._alive
        now = time.monotonic()
        if now - checked >= 1.0:
            count = connected_workers(self.client)
            self._alive = (now, count)
        return count


class Starting(Protocol):
    """A dask pool being started in the background (pipeline.cluster.Backend)."""

    @property
    def started(self) -> DaskPool | None: ...

    def start_in_background(self) -> None: ...

    def ready(self) -> bool: ...


class _HybridWindow(_InlineWindow[P]):
    """Inline while the local cluster starts in the background, then the dask window.

    Why: a local cluster takes about a second to start and each worker another to import
    the project; the driver would otherwise sit idle for it.  The start is asked for by
    the first payload, not before: a pass whose source turns out empty (a rerun with
    nothing left to scan or write) starts no cluster.
    """

    def __init__(self, backend: Starting, fn: Callable[..., dict[str, Any]],
                 payloads: Iterable[P], args: tuple[Any, ...], split: Split[P] | None) -> None:
        super().__init__(fn, _first_starts(payloads, backend.start_in_background), args, split)
        self.backend = backend
        self.dask: _DaskWindow[P] | None = None

    def start(self) -> None:
        """Nothing yet: the driver works inline until the cluster is up."""

    def stop(self) -> None:
        self.stopped = True
        if self.dask is not None:
            self.dask.stop()

    def __iter__(self) -> Iterator[Outcome[P]]:
        yield from self._run(lambda: not self.backend.ready())
        if self.stopped or self.exhausted:  # stopped, or the source ran out inline
            return
        pool = self.backend.started
        assert pool is not None
        self.dask = pool.imap(self.fn, self.source, *self.args, split=self.split)
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


class StartingPool:
    """The pool of a local cluster that is still starting (see :class:`_HybridWindow`)."""

    kind = "dask"

    def __init__(self, backend: Starting) -> None:
        self.backend = backend

    @property
    def dashboard(self) -> str | None:
        pool = self.backend.started
        return pool.dashboard if pool is not None else None

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any,
             split: Split[P] | None = None) -> _HybridWindow[P]:
        return _HybridWindow(self.backend, fn, payloads, args, split)

    def workers_alive(self) -> int:
        pool = self.backend.started
        return pool.workers_alive() if pool is not None else 0


# --------------------------------------------------------------------------- processes


def _worker_init(driver: int) -> None:
    """In each pool process: Ctrl-C is the driver's to handle (it stops the pool), and a
    worker whose driver died (killed: no shutdown) exits instead of waiting forever on a
    queue nobody feeds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    collector.settle()

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


#: the shared arguments of the window a pool worker last ran a task of: (key, arguments)
_SHARED: list[Any] = [None, ()]


def _with_shared(fn: Callable[..., dict[str, Any]], payload: Any, key: bytes,
                 pickled: bytes) -> dict[str, Any]:
    """``fn(payload, *args)`` in a pool worker, ``args`` unpickled once per window.

    Why: a pass-2 task's arguments are the operation, and an operation unpickled afresh
    for every batch starts with cold caches (its compiled profile's decisions, the
    recipients' keys) and costs its unpickling again; the tasks of one window share
    one, kept until a task of another window comes."""
    if _SHARED[0] != key:
        _SHARED[:] = key, pickle.loads(pickled)
    return fn(payload, *_SHARED[1])


class _ProcessWindow(_SlidingWindow[P]):
    """The sliding window over a :class:`ProcessPool`.

    A task that raised, or whose worker died running it, is re-run up to ``pool.retries``
    times (as dask's ``retries`` and lost-worker re-runs do) before its outcome carries
    the error.  ``in_flight``: task -> (order, payload, attempt).
    The window's arguments are pickled once, and unpickled once per worker
    (:func:`_with_shared`).
    """

    def __init__(self, pool: ProcessPool, fn: Callable[..., dict[str, Any]],
                 payloads: Iterable[P], args: tuple[Any, ...], split: Split[P] | None) -> None:
        super().__init__(fn, payloads, args, split)
        self.pool = pool
        self.sequence = 0
        self.pickled = pickle.dumps(args, pickle.HIGHEST_PROTOCOL) if args else b""
        self.key = hashlib.sha256(self.pickled).digest()

    def _submit(self, payload: P, attempt: int = 0) -> None:
        task = (self.pool.submit(_with_shared, self.fn, payload, self.key, self.pickled)
                if self.args else self.pool.submit(self.fn, payload))
        self.sequence += 1
        self.in_flight[task] = (self.sequence, payload, attempt)

    def _limit(self) -> int:
        return max(2, PER_WORKER_IN_FLIGHT * self.pool.workers)

    def __iter__(self) -> Iterator[Outcome[P]]:
        self._fill()
        while self.in_flight:
            done = self.pool.wait_any(list(self.in_flight))
            for task in sorted(done, key=lambda t: self.in_flight[t][0]):
                _, payload, attempt = self.in_flight.pop(task)
                try:
                    outcome: Outcome[P] = Outcome(payload, task.result())
                except Exception as exc:  # noqa: BLE001 - a raising task or a dead worker
                    if attempt < self.pool.retries:
                        self._submit(payload, attempt + 1)
                        continue
                    if self._quarantined(payload, exc):
                        continue
                    outcome = Outcome(payload, None, exc)
                self._fill()  # keep the workers busy while the driver journals
                yield outcome
            self._fill()


class ProcessPool:
    """Batches go to local worker processes (:mod:`pipeline.localworkers`).

    Forked when the driver runs no other thread yet (``pipeline.earlypool`` starts the
    pool right after the driver's imports): a forked worker starts with every module the
    driver imported, where a fresh one spends ~0.15 s of CPU importing them again (a
    third of a 960-slice CT series' CPU on 2 cores).  Started afresh otherwise (a worker
    replaced beside the progress display's or the writeback's thread), since a fork copies
    only the calling thread and a lock another one held stays held."""

    kind = "processes"
    dashboard: str | None = None

    def __init__(self, workers: int, retries: int) -> None:
        self.workers = workers
        self.retries = retries
        self._local: LocalWorkers | None = None
        self._restarts = 0  # of the workers closed before
        self._method: str | None = None

    @property
    def restarts(self) -> int:
        """Workers replaced after they died."""
        return self._restarts + (self._local.restarts if self._local is not None else 0)

    @property
    def start_method(self) -> str | None:
        """How the last worker started: "fork" or "spawn"."""
        return self._local.start_method if self._local is not None else self._method

    def _pool(self) -> LocalWorkers:
        if self._local is None:
            self._local = LocalWorkers(self.workers, _worker_init, (os.getpid(),))
        return self._local

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Task:
        return self._pool().submit(fn, *args)

    def wait_any(self, tasks: Sequence[Task]) -> list[Task]:
        """The finished tasks of ``tasks``, at least one (waited for)."""
        return self._pool().wait_any(tasks)

    def imap(self, fn: Callable[..., dict[str, Any]], payloads: Iterable[P], *args: Any,
             split: Split[P] | None = None) -> _ProcessWindow[P]:
        return _ProcessWindow(self, fn, payloads, args, split)

    def warm_up(self, modules: tuple[str, ...]) -> None:
        """Start every worker now and have it import ``modules`` (not waited for)."""
        for _ in range(self.workers):
            self.submit(_import_modules, modules)

    def workers_alive(self) -> int:
        return self._local.alive() if self._local is not None else 0

    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return self._local.pids() if self._local is not None else []

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._restarts += self._local.restarts
            self._method = self._local.start_method
            self._local = None
