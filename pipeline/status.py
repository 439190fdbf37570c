"""``anonpipe-status``: how far a run got and what it could not write, from its store alone.

Why from the store: a run on a cluster node or in another terminal journals every finished
batch there, so its progress can be read anywhere the store is, while it runs (no lock is
taken: each query sees the batches committed so far) or after it ended.  Nothing is
written.  Counts use the run's five outcomes (``pipeline.outcomes``); paths only with
``-D`` (they may hold names), else the failed list of the latest run is named.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import outcomes
from pipeline.exits import Exit, of_argparse
from tasks.errors import AnonpipeError, UsageError

MAX_REASONS = 10
MAX_PATHS = 100


def run_holds(store: Path) -> bool:
    """Whether a run has the store open now (it holds the exclusive lock of its lock file)."""
    try:
        fd = os.open(store.with_name(store.name + ".lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def status(store: Any, running: bool, debug: bool = False) -> list[str]:
    """The lines ``anonpipe-status`` prints for an opened (read-only) store."""
    identity = store.job_identity() or {}
    mode = identity.get("mode")
    run = store.last_run(mode) if mode else None
    files = store.table_size("files")
    lines = []
    if run is None:
        return [f"no run recorded; inventory: {files:,} files"]
    state = "running" if running else str(run.get("status"))
    if state == "running" and not running:
        state = "interrupted (rerun the same command to resume)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(run.get("started", 0))))
    lines.append(f"{mode} run started {started}: {state}")
    counts = {name: 0 for name in outcomes.OUTCOMES}
    reasons: dict[tuple[str, str, str], int] = {}
    for status_, kind, reason, n in store.journal_outcomes():
        name = outcomes.outcome(status_, kind, reason)
        name = outcomes.WRITTEN if name == outcomes.ALREADY_DONE else name  # journal: done
        counts[name] += n
        if name in outcomes.NOT_WRITTEN:
            key = (name, str(kind), reason or "")
            reasons[key] = reasons.get(key, 0) + n
    settled = sum(counts.values())
    share = f" ({settled / files:.0%})" if files else ""
    lines.append(f"files found by pass 1: {files:,}; settled: {settled:,}{share}")
    lines.append(", ".join(f"{name} {counts[name]:,}" for name in
                           (outcomes.WRITTEN, *outcomes.NOT_WRITTEN)))
    for (name, kind, reason), n in sorted(reasons.items(), key=lambda kv: -kv[1])[:MAX_REASONS]:
        lines.append(f"  {name}: {kind}: {reason} ({n:,})")
    if len(reasons) > MAX_REASONS:
        lines.append(f"  {len(reasons) - MAX_REASONS:,} more reasons")
    if run.get("seconds") is not None:
        lines.append(f"wall time: {float(run['seconds']):,.1f} s")
    if debug:
        for i, rel in enumerate(store.failed_paths()):
            if i >= MAX_PATHS:
                lines.append("  ... more in the failed list")
                break
            lines.append(f"  not written: {rel}")
    elif run.get("failed_list"):
        lines.append(f"files not written (paths, 0600): {run['failed_list']}")
    if run.get("report"):
        lines.append(f"report: {run['report']}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anonpipe-status",
        description="Progress and failures of a running or finished anonpipe run, read from "
        "its store (nothing is written).",
        epilog="example: anonpipe-status /data/out  (or the --store file of the run)",
        allow_abbrev=False,
    )
    parser.add_argument("store", metavar="STORE_OR_OUT",
                        help="the run's store (--store) or its output folder")
    parser.add_argument("-D", "--debug", action="store_true",
                        help="list the paths of the files not written (may show names)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when the run wrote every file so far, 1 when some were not written, 2 usage."""
    from pipeline.crosswalk import store_of
    from pipeline.store import Store

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return of_argparse(exc.code)
    try:
        store = store_of(Path(args.store))
        running = run_holds(store)
        with Store(store, read_only=True, wait=False) as opened:
            lines = status(opened, running, args.debug)
            unwritten = bool(opened.journal_errors(limit_per_kind=1))
    except UsageError as exc:
        print(f"anonpipe-status: {exc}", file=sys.stderr)
        return Exit.USAGE
    except (AnonpipeError, OSError) as exc:
        print(f"anonpipe-status: {exc}", file=sys.stderr)
        return Exit.FAILED
    print("\n".join(lines))
    return Exit.FAILED if unwritten else Exit.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
