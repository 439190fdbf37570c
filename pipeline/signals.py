"""SIGTERM handled as Ctrl-C is, and the exit status of an interrupted run.

Why: ``timeout``, CI systems and SLURM itself (at a job's walltime, on ``scancel``) stop the
driver with SIGTERM, whose default action kills Python without unwinding: worker jobs would
stay in the queue and no report would say how far the run got.  Raised as an exception in
the main thread instead, it unwinds like Ctrl-C: the report is written, the cluster closed
(jobs cancelled), and the exit status is the shell's 128 + signal number (130, 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from pipeline.exits import interrupted


class Terminated(KeyboardInterrupt):
    """SIGTERM (or another stopping signal) received by the driver."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(exc: KeyboardInterrupt) -> int:
    """The signal behind an interruption: SIGINT for Ctrl-C."""
    return exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT)


def exit_status(exc: KeyboardInterrupt) -> int:
    """What a shell reports for a process killed by that signal."""
    return interrupted(signal_of(exc))


def signal_name(exc: KeyboardInterrupt) -> str:
    return signal.Signals(signal_of(exc)).name


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises :class:`Terminated` in the main thread, and Ctrl-C raises
    KeyboardInterrupt (whatever a library installed); the previous handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
