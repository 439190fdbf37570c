"""Fuzz statistics: examples run and examples per second, printed in the terminal summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest


@dataclass
class FuzzStats:
    rows: list[tuple[str, int, float]] = field(default_factory=list)

    def record(self, target: str, examples: int, seconds: float) -> None:
        self.rows.append((target, examples, seconds))


_STATS = FuzzStats()


@pytest.fixture
def fuzz_stats() -> FuzzStats:
    return _STATS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _STATS.rows:
        return
    terminalreporter.section("fuzz targets")
    for target, examples, seconds in _STATS.rows:
        rate = examples / seconds if seconds else 0.0
        terminalreporter.write_line(
            f"{target:40s} {examples:7d} examples in {seconds:6.1f} s ({rate:6.0f}/s)")
