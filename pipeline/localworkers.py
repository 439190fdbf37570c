"""Local worker processes, each fed one task at a time over a pipe of its own.

What :class:`pipeline.pools.ProcessPool` runs its batches on.  A worker is forked from the
driver when the driver runs no other thread (it then starts with every module the driver
imported), else started afresh as ``python -m pipeline.localworkers`` (a fork copies only
the calling thread: a lock another thread held would stay held in the child).

Why not ``concurrent.futures.ProcessPoolExecutor``: the driver's imports are lighter
without it and ``multiprocessing``, starting two workers is two forks instead of an
executor's manager and feeder threads and semaphores (2.2 against 4.5 ms;
benchmarks/README.md, thirteenth round), and one dead worker broke its whole pool,
failing every task in flight.  Here a worker that dies fails only the task it ran
(:class:`WorkerDied`, which says how it died) and is replaced.

A task goes only to an idle worker, so the driver never writes to a worker that is itself
blocked writing a result: neither side can wait on the other.  Messages are a length (8
bytes) and a pickle: ``(fn, args)`` down, ``(ok, result or exception)`` up.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

_LENGTH = 8  # bytes of a message's length
#: seconds a worker whose pipe broke is given to end by itself (then it is killed)
EXIT_WAIT = 1.0
#: a task still waiting for a worker, running, or done
WAITING, RUNNING, DONE = range(3)


class WorkerDied(Exception):
    """The worker process running a task died before it answered (a crash, a signal, the
    out-of-memory killer): the message says how, never what the task held."""


class Task:
    """One submitted call: :meth:`result` returns its value or raises its exception."""

    __slots__ = ("args", "error", "fn", "pool", "state", "value")

    def __init__(self, pool: LocalWorkers, fn: Callable[..., Any], args: tuple[Any, ...]):
        self.pool = pool
        self.fn, self.args = fn, args
        self.state = WAITING
        self.value: Any = None
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self.state == DONE

    def result(self, timeout: float | None = None) -> Any:
        """The task's return value (waiting up to ``timeout`` seconds), or its exception."""
        if self.state != DONE and not self.pool.wait_any((self,), timeout):
            raise TimeoutError("the task did not finish in time")
        if self.error is not None:
            raise self.error
        return self.value


class _Worker:
    """The driver's end of one worker: its process, its two pipes, the task it runs."""

    __slots__ = ("ended", "pid", "popen", "results", "task", "tasks")

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None, tasks: int,
                 results: int) -> None:
        self.pid, self.popen = pid, popen
        self.tasks, self.results = tasks, results  # write end, read end (driver's side)
        self.task: Task | None = None
        self.ended: str | None = None  # how the process ended, once reaped

    def close_pipes(self) -> None:
        """Close the driver's ends (once: a number closed twice may be another file's)."""
        for fd in (self.tasks, self.results):
            if fd >= 0:
                os.close(fd)
        self.tasks = self.results = -1

    def reap(self, block: bool) -> str | None:
        """How the process ended ("exit code 3", "killed by SIGKILL"), None if running."""
        if self.ended is None:
            if self.popen is not None:
                code = self.popen.wait() if block else self.popen.poll()
            else:
                try:
                    pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): gone
                    self.ended = "ended"
                    return self.ended
                code = None if pid == 0 else os.waitstatus_to_exitcode(status)
            if code is not None:
                self.ended = _ended(code)
        return self.ended


def _ended(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class LocalWorkers:
    """``count`` worker processes; each runs ``initializer(*initargs)`` once at start.

    Used from one driver thread.  :meth:`wait_any` is where results are read and waiting
    tasks handed out; a worker found dead there is replaced (``restarts`` counts them).
    """

    def __init__(self, count: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        self.count = count
        self.init = (initializer, initargs)
        self.workers: list[_Worker] = []
        self.waiting: deque[Task] = deque()
        self.restarts = 0
        self.start_method: str | None = None
        self.closed = False

    # ------------------------------------------------------------------ driver side

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        if self.closed:
            raise RuntimeError("the worker processes are closed")
        self._start_missing()
        task = Task(self, fn, args)
        self.waiting.append(task)
        self._hand_out()
        return task

    def wait_any(self, tasks: Collection[Task], timeout: float | None = None) -> list[Task]:
        """The tasks of ``tasks`` that are done, waiting until at least one is (or
        ``timeout`` seconds have passed: then the empty list)."""
        while True:
            done = [task for task in tasks if task.state == DONE]
            if done or not tasks:
                return done
            busy = {w.results: w for w in self.workers if w.task is not None}
            if not busy:
                raise RuntimeError("tasks are waiting but no worker runs any")
            ready, _, _ = select.select(list(busy), [], [], timeout)
            if not ready:
                return []
            for fd in ready:
                self._receive(busy[fd])
            self._hand_out()

    def alive(self) -> int:
        return len(self.pids())

    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [w.pid for w in self.workers if w.reap(block=False) is None]

    def close(self) -> None:
        """Let the running tasks finish, then stop every worker (waiting for them)."""
        self.closed = True
        for task in self.waiting:  # handed to no worker: cancelled
            task.state, task.error = DONE, RuntimeError("the worker processes were closed")
        self.waiting.clear()
        for worker in list(self.workers):
            if worker.task is not None:
                self.wait_any((worker.task,))
        for worker in self.workers:
            worker.close_pipes()  # end of input: the worker exits
        for worker in self.workers:
            worker.reap(block=True)
        self.workers.clear()

    def _hand_out(self) -> None:
        """Give waiting tasks to idle workers, in order."""
        refused: set[Task] = set()  # tasks a dead worker's pipe refused once already
        while self.waiting:
            idle = next((w for w in self.workers if w.task is None), None)
            if idle is None:
                return
            task = self.waiting.popleft()
            try:
                _send(idle.tasks, (task.fn, task.args))
            except BrokenPipeError:  # it died idle: its replacement takes the task
                how = self._replace(idle)
                if task in refused:  # twice: the workers die as they start
                    task.state, task.error = DONE, WorkerDied(
                        f"its worker process died before it started ({how})")
                else:
                    refused.add(task)
                    self.waiting.appendleft(task)
                continue
            task.state, idle.task = RUNNING, task

    def _receive(self, worker: _Worker) -> None:
        task = worker.task
        assert task is not None
        try:
            data = _read_message(worker.results)
        except (EOFError, OSError):
            worker.task = None
            how = self._replace(worker)
            task.state, task.error = DONE, WorkerDied(f"its worker process died ({how})")
            return
        worker.task = None
        task.state = DONE
        try:
            ok, value = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - e.g. an exception class that cannot be rebuilt
            task.error = RuntimeError(
                f"the task's answer cannot be read back ({type(exc).__name__})")
            return
        if ok:
            task.value = value
        else:
            task.error = value

    def _replace(self, worker: _Worker) -> str:
        """Stop ``worker`` (its pipe is broken) and start another; how it ended."""
        worker.close_pipes()
        how = worker.reap(block=False)
        deadline = time.monotonic() + EXIT_WAIT
        while how is None and time.monotonic() < deadline:  # its pipe closes as it exits
            time.sleep(0.005)
            how = worker.reap(block=False)
        if how is None:  # alive with its pipe closed (a task closed it): stopped here
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            worker.reap(block=True)
            how = "closed its pipe"
        self.workers.remove(worker)
        self.restarts += 1
        self._start_missing()
        return how

    def _start_missing(self) -> None:
        while len(self.workers) < self.count and not self.closed:
            self.workers.append(self._start())

    def _start(self) -> _Worker:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        if threading.active_count() == 1 and hasattr(os, "fork"):
            self.start_method = "fork"
            keep = (task_r, result_w)
            others = [fd for w in self.workers for fd in (w.tasks, w.results)]
            pid = os.fork()
            if pid == 0:  # the worker: never returns
                _forked(keep, [task_w, result_r, *others], self.init)
            os.close(task_r)
            os.close(result_w)
            return _Worker(pid, None, task_w, result_r)
        self.start_method = "spawn"
        import subprocess  # only here: ~3 ms of a directory run's start otherwise

        # the driver's import path (a test runner's or an embedding program's additions)
        path = os.pathsep.join(p for p in sys.path if p)
        popen = subprocess.Popen(
            [sys.executable, "-m", "pipeline.localworkers", str(task_r), str(result_w)],
            stdin=subprocess.DEVNULL, pass_fds=(task_r, result_w), close_fds=True,
            env={**os.environ, "PYTHONPATH": path})
        os.close(task_r)
        os.close(result_w)
        worker = _Worker(popen.pid, popen, task_w, result_r)
        try:
            _send(task_w, self.init)
        except BrokenPipeError:
            pass  # it died at once: found when its first task is handed out
        return worker


# ------------------------------------------------------------------ messages


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(_LENGTH, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def _read(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = os.read(fd, left)
        if not part:
            raise EOFError
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_message(fd: int) -> bytes:
    return _read(fd, int.from_bytes(_read(fd, _LENGTH), "little"))


def _receive(fd: int) -> Any:
    return pickle.loads(_read_message(fd))


# ------------------------------------------------------------------ worker side


def _forked(keep: tuple[int, int], others: list[int],
            init: tuple[Callable[..., None] | None, tuple[Any, ...]]) -> None:
    """A forked worker: its own pipe ends only (another worker's, held open here, would
    hide that worker's death from the driver), then serve until the driver closes."""
    code = 0
    try:
        for fd in others:
            os.close(fd)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the worker's, for its lifetime
        initializer, initargs = init
        if initializer is not None:
            initializer(*initargs)
        _serve(*keep)
    except BaseException:  # noqa: BLE001 - a worker must never return into the driver
        code = 1
    finally:
        os._exit(code)


def _serve(tasks: int, results: int) -> None:
    """Run tasks until the driver closes the pipe (or dies)."""
    while True:
        try:
            fn, args = _receive(tasks)
        except EOFError:
            return
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:  # noqa: BLE001 - the task's failure, sent back
            reply = (False, exc)
        try:
            _send(results, reply)
        except BrokenPipeError:
            return
        except Exception as exc:  # noqa: BLE001 - a result or error that does not pickle
            _send(results, (False, RuntimeError(
                f"the task's {'result' if reply[0] else 'exception'} cannot be sent back "
                f"({type(exc).__name__})")))


def _spawned(argv: list[str]) -> int:
    """A worker started afresh: the initializer comes first, then the tasks."""
    tasks, results = int(argv[0]), int(argv[1])
    try:
        initializer, initargs = _receive(tasks)
    except EOFError:
        return 0
    if initializer is not None:
        initializer(*initargs)
    _serve(tasks, results)
    return 0


if __name__ == "__main__":
    sys.exit(_spawned(sys.argv[1:]))
