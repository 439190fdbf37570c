"""Progress rendering with an injected console and clock: deterministic text, counts only."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from pipeline.progress import MAX_SAMPLES, RunProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=160, color_system=None), buffer


def test_live_bars_show_rates_errors_and_workers() -> None:
    console, buffer = _console(terminal=True)
    clock = Clock()
    with RunProgress(console, verbosity=1, clock=clock) as progress:
        assert progress.live
        progress.begin("pass 2 deidentify", total=100)
        clock.now += 2.0
        progress.set_workers(2)
        progress.advance(files=50, nbytes=10_000_000, errors=3)
        stats = progress.end()
    text = buffer.getvalue()
    assert "pass 2 deidentify" in text and "50/50" in text
    assert "25 files/s" in text and "5.0 MB/s" in text
    assert "not written 3" in text and "workers 2" in text and "0:00:02" in text
    assert (stats.files, stats.bytes, stats.errors, stats.seconds) == (50, 10_000_000, 3, 2.0)


def _last_frame(buffer: io.StringIO) -> str:
    """The last drawn line of the bar (frames start with rich's erase-line code)."""
    frames = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|[\r\n]", "", frame)
              for frame in buffer.getvalue().split("\x1b[2K")]
    return [frame for frame in frames if "pass 2" in frame][-1]


def test_an_80_column_bar_is_one_line_with_elapsed_time_and_latest_kind() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80, color_system=None)
    clock = Clock()
    with RunProgress(console, verbosity=1, clock=clock) as progress:
        progress.begin("pass 2 deidentify", total=2006)
        clock.now += 2.0
        progress.advance(files=1500, nbytes=10_000_000, errors=3)
        progress.set_latest("DicomFormatError")
        assert progress._progress is not None
        progress._progress.refresh()
        frame = _last_frame(buffer)
        progress.end()
        clock.now += 60.0  # the pass has ended: its rate and elapsed time stay as they were
        progress._progress.refresh()
        final = _last_frame(buffer)
    for line in (frame, final):
        text = line.rstrip()
        assert len(text) <= 80, text
        assert "pass 2 deidentify" in text and "750/s" in text and "0:00:02" in text
        assert "✗3 DicomFormatError" in text
    assert "1500/2006" in frame and "1500/1500" in final


def test_plain_lines_at_an_interval_when_not_a_terminal() -> None:
    console, buffer = _console(terminal=False)
    clock = Clock()
    with RunProgress(console, verbosity=1, clock=clock, interval=5.0,
                     timestamp=lambda: "2026-01-02 03:04:05") as progress:
        assert not progress.live
        progress.begin("pass 1 scan", total=1000)
        clock.now += 1.0
        progress.advance(files=100, nbytes=1_000_000)
        assert buffer.getvalue() == ""
        clock.now += 4.0
        progress.advance(files=400, nbytes=4_000_000, errors=1)
        clock.now += 5.0
        progress.advance(files=500, nbytes=5_000_000)
        progress.end()
    lines = buffer.getvalue().splitlines()
    assert lines == [
        ("2026-01-02 03:04:05 pass 1 scan: … 500/1,000 files, 100 files/s, 1.0 MB/s, "
         "1 not written, workers -, 5.0 s, ETA 5 s"),
        ("2026-01-02 03:04:05 pass 1 scan: … 1,000/1,000 files, 100 files/s, 1.0 MB/s, "
         "1 not written, workers -, 10.0 s, ETA 0 s"),
        ("2026-01-02 03:04:05 pass 1 scan: finished 1,000/1,000 files, 100 files/s, 1.0 MB/s, "
         "1 not written, workers -, 10.0 s"),
    ]


def test_plain_lines_come_while_nothing_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal a line is written every interval even when no batch finishes
    (workers still starting): a batch job's log never looks hung."""
    monkeypatch.setenv("ANONPIPE_PROGRESS_SECONDS", "0.05")
    console, buffer = _console(terminal=False)
    with RunProgress(console, verbosity=1) as progress:
        assert progress.interval == 0.05 and progress.ticking
        progress.count_workers = lambda: 7  # asked afresh: a lost worker shows at once
        progress.begin("pass 2 deidentify", total=2_000_000)
        progress.advance(files=1)
        deadline = time.monotonic() + 30
        while buffer.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = buffer.getvalue().splitlines()
    assert len(lines) >= 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d pass 2 deidentify: … "
                        r"1/2,000,000 files, [\d,]+ files/s, .* not written, workers 7, .*ETA .*",
                        lines[0]), lines[0]


def test_eta_reads_in_hours_and_minutes() -> None:
    console, buffer = _console(terminal=False)
    clock = Clock()
    with RunProgress(console, verbosity=1, clock=clock, interval=1.0,
                     timestamp=lambda: "T") as progress:
        progress.begin("pass 2 deidentify", total=100_000)
        clock.now += 10.0
        progress.set_workers(3)
        progress.advance(files=100)
        clock.now += 10.0
        progress.advance(files=9_900)
    first, second = buffer.getvalue().splitlines()[:2]
    assert first.endswith("workers 3, 10.0 s, ETA 2 h 46 min")
    assert second.endswith("ETA 3 min 00 s")


def test_quiet_levels_and_debug_messages() -> None:
    console, buffer = _console(terminal=False)
    with RunProgress(console, verbosity=1, clock=Clock()) as progress:
        progress.begin("pass 1 scan")
        progress.advance(files=10)
        progress.message("P0001/secret-name.dcm: DicomFormatError", level=3)
        progress.message("a warning", level=1)
        progress.end()
    text = buffer.getvalue()
    assert "secret-name" not in text and "a warning" in text
    assert text.count("pass 1 scan") == 1  # the clock stood still: the final line only


def test_timeline_is_bounded() -> None:
    console, _ = _console(terminal=False)
    clock = Clock()
    with RunProgress(console, verbosity=0, clock=clock) as progress:
        progress.begin("pass 2 deidentify")
        for _ in range(3 * MAX_SAMPLES):
            clock.now += 1.0
            progress.advance(files=1)
        stats = progress.end()
    assert len(stats.timeline) <= MAX_SAMPLES + 1
    assert stats.timeline[0][1] == 0 and stats.timeline[-1][1] == 3 * MAX_SAMPLES
