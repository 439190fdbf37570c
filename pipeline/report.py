"""The run report: one JSON file per run in the state folder, and the summary table.

Why JSON in the state folder (mode 0600), and why failing files are listed by their path
(relative to the input) only with ``-D``: paths may carry patient names, and the report is
meant to be shared (the notebook plots it); without ``-D`` each kind of error lists its
reasons and counts.  Rerunning the same command with ``-D`` skips the files done and lists
the failures with their paths.  The secret appears as its fingerprint only.  ``notebooks/run_report.ipynb`` plots this file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported by summary_table, when a summary is shown
    from rich.console import Group

from pipeline.job import RunSummary, TreeJob
from pipeline.progress import DEBUG, PassStats
from pipeline.state import state_dir

REPORT_VERSION = 1
MAX_REASONS = 5  # reasons per kind of error in the summary table


def _pass(stats: PassStats) -> dict[str, Any]:
    return {
        "name": stats.name,
        "files": stats.files,
        "skipped": stats.skipped,
        "errors": stats.errors,
        "bytes": stats.bytes,
        "started": round(stats.started, 3),
        "seconds": round(stats.seconds, 3),
        "files_per_second": round(stats.files_per_second, 1),
        "mb_per_second": round(stats.mb_per_second, 2),
        "timeline": stats.timeline,
    }


def build_report(
    job: TreeJob,
    run_id: str,
    started: float,
    summary: RunSummary,
    passes: list[PassStats],
    findings: dict[str, Any] | None,
    errors: dict[str, tuple[int, list[tuple[str, str]]]],
    backend: str,
    store: Path,
    stopped_early: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything worth keeping about one run, as plain JSON values."""
    debug = job.verbosity >= DEBUG
    options = {
        "mode": job.mode,
        # folder names may carry patient names (PS3.15 E.1.1): the roots only with -D
        **({"input": str(job.input), "output": str(job.output)} if debug else {}),
        "recursive": job.recursive,
        "continue_on_error": job.continue_on_error,
        "profile": job.profile,
        "root_uid": job.root_uid,
        "workers": job.workers,
        "scheduler": job.scheduler,
        "cluster": job.cluster,
        "scan_only": job.scan_only,
        "dry_run": job.dry_run,
        "batch_files": job.batch_files,
        "batch_bytes": job.batch_bytes,
        **job.report_options,
    }
    wall = sum(p.seconds for p in passes)
    return {
        "version": REPORT_VERSION,
        "run_id": run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "options": options,
        "secret_fingerprint": job.secret_fingerprint or None,
        "store": str(store),
        "backend": backend,
        "stopped_early": stopped_early,
        "counts": {
            "done": summary.done,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "bytes_in": summary.bytes_in,
            "bytes_out": summary.bytes_out,
            # Clean Pixel Data: files cleaned by a region rule (and no OCR box), by OCR,
            # checked with nothing to blank, refused because OCR still read text
            "pixels": {"rule": summary.pixels.get("rule", 0), "ocr": summary.pixels.get("ocr", 0),
                       "checked": summary.pixels.get("checked", 0),
                       "refused_after_verification": errors.get("BurnedInTextError", (0, []))[0]},
        },
        "findings": findings,
        "passes": [_pass(p) for p in passes],
        "seconds": round(wall, 3),
        "errors": {kind: _errors(count, rows, debug)
                   for kind, (count, rows) in errors.items()},
        **(extra or {}),
    }


def _errors(count: int, rows: list[tuple[str, str]], paths: bool) -> dict[str, Any]:
    """One kind of error: its count, its reasons, and with ``-D`` the files (PHI: paths)."""
    reasons: dict[str, int] = {}
    for _path, reason in rows:
        reasons[reason] = reasons.get(reason, 0) + 1
    entry: dict[str, Any] = {"count": count, "reasons": reasons}
    if paths:
        entry["files"] = [{"path": p, "reason": r} for p, r in rows]
    else:
        entry["paths"] = "withheld: they may hold patient names (rerun with -D to list them)"
    return entry


def write_report(report: dict[str, Any], folder: Path | None = None) -> Path:
    """Write ``report`` as ``reports/run-<id>.json`` (0600) and return its path."""
    folder = folder or state_dir() / "reports"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"run-{report['run_id']}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(report, fh, indent=1, default=str)
        fh.write("\n")
    return path


def summary_table(report: dict[str, Any]) -> Group:
    """Files done/skipped/failed by kind, bytes, wall time per pass, then the reasons.

    Counts and the engine's reasons only (they hold no values and no paths)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="anonpipe run", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("files", justify="right")
    table.add_column("MB", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("files/s", justify="right")
    for p in report["passes"]:
        table.add_row(p["name"], f"{p['files'] + p['skipped']:,}", f"{p['bytes'] / 1e6:,.1f}",
                      f"{p['seconds']:,.2f}", f"{p['files_per_second']:,.0f}")
    counts = report["counts"]
    table.add_section()
    table.add_row("done", f"{counts['done']:,}", f"{counts['bytes_out'] / 1e6:,.1f}", "", "")
    pixels = counts.get("pixels") or {}
    for how, label in (("rule", "  pixels cleaned by rule"), ("ocr", "  pixels cleaned by OCR")):
        if pixels.get(how):
            table.add_row(label, f"{pixels[how]:,}", "", "", "")
    table.add_row("skipped", f"{counts['skipped']:,}", "", "", "")
    table.add_row("failed", f"{counts['failed']:,}", "", "", "",
                  style="red" if counts["failed"] else None)
    for kind, entry in sorted(report["errors"].items()):
        table.add_row(f"  {kind}", f"{entry['count']:,}", "", "", "")
    lines: list[Text] = []
    for kind, entry in sorted(report["errors"].items()):
        reasons = sorted((entry.get("reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        for reason, n in reasons[:MAX_REASONS]:
            lines.append(Text(f"{kind} ({n:,}): {reason}"))
        if len(reasons) > MAX_REASONS:
            lines.append(Text(f"{kind}: {len(reasons) - MAX_REASONS:,} more reasons in the "
                              "report"))
    return Group(table, *lines)

