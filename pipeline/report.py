"""The run report: one JSON file per run in the state folder, the summary table, and the
list of the files not written.

Why JSON in the state folder (mode 0600), and why failing files are listed by their path
(relative to the input) only with ``-D``: paths may carry patient names, and the report is
meant to be shared (the notebook plots it); without ``-D`` each outcome lists its reasons
and counts.  The paths of the files not written go to a separate list beside the report,
``run-<id>.failed.tsv`` (0600, as protected as the store), which ``--files-from`` reads
back.  Counts use the five outcomes of ``pipeline.outcomes``: the table, the reason lines
and the report give the same numbers.  The secret appears as its fingerprint only.
``notebooks/run_report.ipynb`` plots this file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported by summary_table, when a summary is shown
    from rich.console import Group

from pipeline import outcomes
from pipeline.job import RunSummary, TreeJob
from pipeline.progress import DEBUG, PassStats
from pipeline.state import state_dir

REPORT_VERSION = 2  # 2: counts by outcome (pipeline.outcomes), reasons as a list
MAX_REASONS = 5  # reasons per outcome in the summary table

Reasons = dict[tuple[str, str, str], int]  # (outcome, kind, reason) -> files


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


def reports_dir() -> Path:
    return state_dir() / "reports"


def failed_list_path(run_id: str, folder: Path | None = None) -> Path:
    """``run-<id>.failed.tsv`` beside the run's report."""
    return (folder or reports_dir()) / f"run-{run_id}.failed.tsv"


def study_list_path(run_id: str, folder: Path | None = None) -> Path:
    """``run-<id>.studies.tsv``: the per-study summary (old and new identifiers, 0600)."""
    return (folder or reports_dir()) / f"run-{run_id}.studies.tsv"


def plan_path(run_id: str, folder: Path | None = None) -> Path:
    """``run-<id>.plan.tsv``: where ``--dry-run`` writes its plan without ``--plan``."""
    return (folder or reports_dir()) / f"run-{run_id}.plan.tsv"


def private_open(path: Path, mode: str = "w") -> Any:
    """A text file created 0600 (in a 0700 folder when it makes the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode, encoding="utf-8", errors="surrogateescape")


class FailedList:
    """The files a run did not write: ``path<TAB>outcome<TAB>kind: reason`` per line,
    written as they come (memory stays flat); the file exists only once a line does."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._fh: Any = None
        self.lines = 0

    def add(self, rel: str, outcome: str, kind: str, reason: str) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self._fh = private_open(self.path)
        self._fh.write(f"{one_line(rel)}\t{outcome}\t{kind}: {one_line(reason)}\n")
        self.lines += 1

    def close(self) -> Path | None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        return self.path if self.lines else None


def one_line(text: str) -> str:
    """A path or reason as one TSV field (no tab, no line break)."""
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def build_report(
    job: TreeJob,
    run_id: str,
    started: float,
    summary: RunSummary,
    passes: list[PassStats],
    findings: dict[str, Any] | None,
    reasons: Reasons,
    backend: str,
    store: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything worth keeping about one run, as plain JSON values."""
    debug = job.verbosity >= DEBUG
    options = {
        "mode": job.mode.value,
        # folder names may carry patient names (PS3.15 E.1.1): the roots only with -D
        **({"input": str(job.input), "output": str(job.output)} if debug else {}),
        "recursive": job.recursive,
        "continue_on_error": job.continue_on_error,
        "profile": job.profile.name if job.profile is not None else None,
        "root_uid": job.root_uid,
        "workers": job.workers,
        "scheduler": job.scheduler,
        "cluster": job.cluster,
        "scan_only": job.scan_only,
        "dry_run": job.dry_run,
        "batch_files": job.tuning.batch_files,
        "batch_bytes": job.tuning.batch_bytes,
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
        "stopped_early": summary.stopped_early,
        "preview": summary.preview,
        "counts": {
            "written": summary.done,
            "already_done": summary.already_done,
            "not_dicom": summary.not_dicom,
            "refused": summary.refused,
            "failed": summary.failed,
            "bytes_in": summary.bytes_in,
            "bytes_out": summary.bytes_out,
            # files found that a stopped run never reached (they have no outcome yet)
            "not_attempted": _not_attempted(summary, findings),
            # Clean Pixel Data: files cleaned by a region rule (and no OCR box), by OCR,
            # checked with nothing to blank, refused because OCR still read text
            "pixels": {"rule": summary.pixels.get("rule", 0), "ocr": summary.pixels.get("ocr", 0),
                       "checked": summary.pixels.get("checked", 0),
                       "refused_after_verification": sum(
                           n for (_, kind, _), n in reasons.items() if kind == "BurnedInTextError")},
        },
        "failed_list": None if summary.failed_list is None else str(summary.failed_list),
        "study_list": None if summary.study_list is None else str(summary.study_list),
        "findings": findings,
        "passes": [_pass(p) for p in passes],
        "seconds": round(wall, 3),
        "reasons": [{"outcome": o, "kind": k, "reason": r, "files": n}
                    for (o, k, r), n in sorted(reasons.items(),
                                               key=lambda kv: (kv[0][0], -kv[1], kv[0]))],
        "files": ([{"path": p, "kind": k, "reason": r} for p, k, r in summary.errors]
                  if debug else "withheld: they may hold patient names (see failed_list)"),
        **(extra or {}),
    }


def _not_attempted(summary: RunSummary, findings: dict[str, Any] | None) -> int:
    if summary.preview or not findings:
        return 0
    settled = (summary.done + summary.already_done + summary.not_dicom + summary.refused
               + summary.failed)
    return max(int(findings.get("files") or 0) - settled, 0)


def write_report(report: dict[str, Any], folder: Path | None = None) -> Path:
    """Write ``report`` as ``reports/run-<id>.json`` (0600) and return its path."""
    path = (folder or reports_dir()) / f"run-{report['run_id']}.json"
    with private_open(path) as fh:
        json.dump(report, fh, indent=1, default=str)
        fh.write("\n")
    return path


def reason_lines(report: dict[str, Any]) -> list[str]:
    """``outcome: kind: reason (files)``, the commonest first, at most ``MAX_REASONS`` per
    outcome (the report has them all); per outcome they add up to its count.  Then the
    files a stopped run never reached, so the counts add up to the files found."""
    lines: list[str] = []
    by_outcome: dict[str, list[dict[str, Any]]] = {}
    for entry in report.get("reasons", []):
        by_outcome.setdefault(entry["outcome"], []).append(entry)
    for name in outcomes.NOT_WRITTEN:
        entries = sorted(by_outcome.get(name, []), key=lambda e: (-e["files"], e["reason"]))
        for entry in entries[:MAX_REASONS]:
            lines.append(f"{name}: {entry['kind']}: {entry['reason']} ({entry['files']:,})")
        if len(entries) > MAX_REASONS:
            rest = sum(e["files"] for e in entries[MAX_REASONS:])
            lines.append(f"{name}: {rest:,} more files for {len(entries) - MAX_REASONS:,} "
                         "more reasons (in the report)")
    skipped = report["counts"].get("not_attempted")
    if skipped:
        lines.append(f"the run stopped: {skipped:,} more files were not attempted (fix the "
                     "files above or use --continue, then rerun)")
    return lines


def summary_table(report: dict[str, Any]) -> Group:
    """Files per pass, then per outcome (they add up to the files found), then the reasons.

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
    preview = bool(report.get("preview"))
    table.add_section()
    pixels = counts.get("pixels") or {}
    for name in outcomes.OUTCOMES:
        if preview and name not in outcomes.NOT_WRITTEN:
            continue  # --scan-only, --dry-run: what pass 2 would not write
        n = counts[outcomes.key(name)]
        mb = f"{counts['bytes_out'] / 1e6:,.1f}" if name == outcomes.WRITTEN else ""
        label = f"{name} (would be)" if preview else name
        table.add_row(label, f"{n:,}", mb, "", "",
                      style="red" if n and name in outcomes.NOT_WRITTEN else None)
        if name == outcomes.WRITTEN:  # Clean Pixel Data: how many of them, and how
            for how, text in (("rule", "  pixels cleaned by rule"),
                              ("ocr", "  pixels cleaned by OCR")):
                if pixels.get(how):
                    table.add_row(text, f"{pixels[how]:,}", "", "", "")
    return Group(table, *(Text(line) for line in reason_lines(report)))

