"""Live progress of the two passes: rich bars on a terminal, plain log lines elsewhere.

Not on a terminal (a batch job's log, a CI log, a pipe), a timestamped line comes every
``interval`` seconds (30 by default, ``$ANONPIPE_PROGRESS_SECONDS``), also while nothing
finishes: a multi-hour job log whose last line is an hour old looks hung, one whose last
line says "0 files/s, workers 0" says why.
The console and the clock are injected so tests render deterministic text.
What is shown is counts only - files, bytes, rates, errors, workers - never a file name or
a header value: paths may carry patient names.  Messages with PHI are passed at level
DEBUG (3) and only shown with ``-D``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:  # rich is imported when something is shown (~20 ms of start-up otherwise)
    from rich.console import Console
    from rich.progress import Progress

ERROR, WARNING, INFO, DEBUG = 0, 1, 2, 3
MAX_SAMPLES = 2000
SAMPLE_EVERY = 0.25  # seconds between timeline samples
PLAIN_INTERVAL = 30.0  # seconds between two progress lines when not on a terminal
INTERVAL_ENV = "ANONPIPE_PROGRESS_SECONDS"


def plain_interval() -> float:
    """``$ANONPIPE_PROGRESS_SECONDS`` if it is a positive number, else 30."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return PLAIN_INTERVAL
    return value if value > 0 else PLAIN_INTERVAL


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 05 min``: an ETA a person reads at a glance."""
    if seconds < 100:
        return f"{seconds:,.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _wall_time() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class PassStats:
    """What one pass did, for the summary and the report."""

    __slots__ = ("bytes", "errors", "files", "name", "seconds", "skipped", "started",
                 "timeline", "total")

    def __init__(self, name: str, *, started: float = 0.0, total: int | None = None) -> None:
        self.name = name
        self.files = 0
        self.bytes = 0
        self.errors = 0
        self.skipped = 0
        self.started = started
        self.seconds = 0.0
        self.total = total
        self.timeline: list[tuple[float, int, int]] = []  # (t, files, bytes)

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


@functools.cache
def _columns() -> tuple[type, type]:
    """The two custom columns (classes made on first use: rich is imported lazily)."""
    from rich.progress import ProgressColumn, Task
    from rich.table import Column
    from rich.text import Text

    class _RateColumn(ProgressColumn):
        """files/s (and MB/s when wide) over the pass; fixed once the pass ends (the task
        is stopped, so its elapsed time stops growing)."""

        def __init__(self, narrow: bool = False) -> None:
            super().__init__(table_column=Column(no_wrap=True, overflow="crop"))
            self.narrow = narrow

        def render(self, task: Task) -> Text:
            elapsed = task.elapsed or 0.0
            if elapsed <= 0:
                return Text("- files/s", style="progress.data.speed")
            files = task.completed / elapsed
            if self.narrow:
                return Text(f"{files:,.0f}/s", style="progress.data.speed")
            mb = task.fields.get("bytes", 0) / 1e6 / elapsed
            return Text(f"{files:,.0f} files/s {mb:,.1f} MB/s", style="progress.data.speed")

    class _StateColumn(ProgressColumn):
        """Files not written so far and the latest one's outcome (or error kind)."""

        def __init__(self, narrow: bool = False) -> None:
            super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis"))
            self.narrow = narrow

        def render(self, task: Task) -> Text:
            errors = task.fields.get("errors", 0)
            latest = task.fields.get("latest")
            style = "red" if errors else "dim"
            if self.narrow:
                return Text(f"✗{errors:,}" + (f" {latest}" if latest and errors else ""),
                            style=style)
            return Text.assemble(
                (f"not written {errors:,}", style),
                (f" ({latest})" if latest and errors else "", "red"), "  ",
                (f"workers {task.fields.get('workers', '-')}", "dim"),
            )

    return _RateColumn, _StateColumn


class RunProgress:
    """Both passes of one run.  Use as a context manager; ``begin``/``end`` each pass."""

    def __init__(
        self,
        console: Console | None = None,
        verbosity: int = 1,
        clock: Callable[[], float] = time.monotonic,
        live: bool | None = None,
        interval: float | None = None,
        timestamp: Callable[[], str] = _wall_time,
        ticking: bool | None = None,
    ) -> None:
        """``interval``: seconds between plain lines (None: :func:`plain_interval`);
        ``ticking``: a thread writes them even when nothing advances (default: with the
        real clock only, so tests with an injected clock stay deterministic)."""
        self._console = console
        self.verbosity = verbosity
        self.clock = clock
        if live is None:  # a console is only made (rich imported) when it may be used
            live = verbosity >= WARNING and self.console.is_terminal
        self.live = live
        self.interval = plain_interval() if interval is None else interval
        self.timestamp = timestamp
        self.ticking = (clock is time.monotonic) if ticking is None else ticking
        self._ticker: threading.Thread | None = None
        self._closed = threading.Event()
        self.origin = clock()
        self._progress: Progress | None = None
        self._task: Any = None
        self._stats: PassStats | None = None
        self._last_line = 0.0
        self._last_sample = -1.0
        self._workers = "-"
        self._latest: str | None = None
        #: asked by the ticker for a fresh count when nothing finishes (a lost worker job)
        self.count_workers: Callable[[], int] | None = None
        self._dashboard_shown: str | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.table import Column

            def fixed() -> Column:
                return Column(no_wrap=True, overflow="crop")

            rate_column, state_column = _columns()
            # one line per pass on an 80-column terminal: narrower than 120 columns, the
            # bar is short, the rate is files/s alone, no ETA and no workers; no cell wraps
            narrow = self.console.width < 120
            columns = [
                TextColumn("[bold]{task.description}", table_column=fixed()),
                BarColumn(bar_width=10 if narrow else 30, table_column=fixed()),
                MofNCompleteColumn(table_column=fixed()),
                TimeElapsedColumn(table_column=fixed()),
                *([] if narrow else [TimeRemainingColumn(table_column=fixed())]),
                rate_column(narrow),
                state_column(narrow),
            ]
            self._progress = Progress(
                *columns,
                console=self.console,
                get_time=self.clock,
                transient=False,
            )
            self._progress.start()
        elif self.ticking and self.verbosity >= WARNING:
            self._ticker = threading.Thread(target=self._tick, daemon=True,
                                            name="anonpipe-progress")
            self._ticker.start()
        return self

    def _tick(self) -> None:
        """Write the line that is due even when no batch finishes (waiting on workers)."""
        while not self._closed.wait(min(self.interval, 1.0)):
            stats = self._stats
            now = self.clock()
            if stats is not None and now - self._last_line >= self.interval:
                count = self.count_workers
                if count is not None:
                    # a pool that is closing: the last count stays
                    with contextlib.suppress(Exception):
                        self._workers = str(count())
                self._plain_line(stats, now)

    def _plain_line(self, stats: PassStats, now: float) -> None:
        self._last_line = now
        self.console.print(f"{self.timestamp()} {self._line(stats, now)}", highlight=False,
                           soft_wrap=True, markup=False)

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # ------------------------------------------------------------------ passes

    def begin(self, name: str, total: int | None = None) -> None:
        now = self.clock()
        self._stats = PassStats(name=name, started=now - self.origin, total=total)
        self._last_line = now
        self._last_sample = -1.0
        if self._progress is not None:
            self._task = self._progress.add_task(name, total=total, bytes=0, errors=0,
                                                 workers=self._workers, latest=None)
        self._latest = None
        self._sample(now, force=True)

    def advance(self, files: int = 0, nbytes: int = 0, errors: int = 0, skipped: int = 0) -> None:
        stats = self._stats
        if stats is None:
            return
        stats.files += files
        stats.bytes += nbytes
        stats.errors += errors
        stats.skipped += skipped
        now = self.clock()
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=stats.files + stats.skipped,
                                  bytes=stats.bytes, errors=stats.errors, workers=self._workers)
        elif self.verbosity >= WARNING and now - self._last_line >= self.interval:
            self._plain_line(stats, now)
        self._sample(now)

    def set_latest(self, kind: str) -> None:
        """The outcome (or error kind) of the latest file not written, for the live bar."""
        self._latest = kind
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, latest=kind)

    def set_workers(self, alive: int | None, dashboard: str | None = None) -> None:
        self._workers = "-" if alive is None else str(alive)
        if dashboard and dashboard != self._dashboard_shown:
            self._dashboard_shown = dashboard
            self.message(f"dask dashboard: {dashboard}", WARNING)

    def end(self, word: str = "finished") -> PassStats:
        stats = self._stats or PassStats(name="?")
        now = self.clock()
        stats.seconds = now - self.origin - stats.started
        self._sample(now, force=True)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=stats.files + stats.skipped,
                                  total=stats.files + stats.skipped, bytes=stats.bytes,
                                  errors=stats.errors, workers=self._workers)
            self._progress.stop_task(self._task)  # the rate and elapsed time stop with the pass
        elif self.verbosity >= WARNING:
            self.console.print(f"{self.timestamp()} {self._line(stats, now, final=word)}",
                               highlight=False, soft_wrap=True, markup=False)
        self._stats, self._task = None, None
        return stats

    def interrupt(self) -> list[PassStats]:
        """The pass under way when the run was interrupted (ended here), if any."""
        return [self.end("stopped at")] if self._stats is not None else []

    # ------------------------------------------------------------------ text

    def message(self, text: str, level: int = INFO) -> None:
        """A line above the bars (or in the log), shown from ``level`` on."""
        if level <= self.verbosity:
            target = self._progress.console if self._progress is not None else self.console
            target.print(text, highlight=False, soft_wrap=True, markup=False)

    def _line(self, stats: PassStats, now: float, final: str = "") -> str:
        elapsed = max(now - self.origin - stats.started, 1e-9)
        total = f"/{stats.total:,}" if stats.total is not None else ""
        eta = ""
        seen = stats.files + stats.skipped
        if not final and stats.total and seen:
            eta = f", ETA {_duration(max(stats.total - seen, 0) * elapsed / seen)}"
        head = final or "…"
        latest = f" (latest: {self._latest})" if self._latest and stats.errors else ""
        return (
            f"{stats.name}: {head} {seen:,}{total} files, "
            f"{stats.files / elapsed:,.0f} files/s, {stats.bytes / 1e6 / elapsed:,.1f} MB/s, "
            f"{stats.errors:,} not written{latest}, workers {self._workers}, "
            f"{elapsed:,.1f} s{eta}"
        )

    def _sample(self, now: float, force: bool = False) -> None:
        stats = self._stats
        if stats is None or (not force and now - self._last_sample < SAMPLE_EVERY):
            return
        self._last_sample = now
        stats.timeline.append((round(now - self.origin, 3), stats.files + stats.skipped,
                               stats.bytes))
        if len(stats.timeline) > MAX_SAMPLES:
            del stats.timeline[1:-1:2]  # halve the resolution, keep both ends
