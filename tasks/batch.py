"""Pass 2 per batch: apply one operation to every file of a batch, one row per file.

Why errors are rows and not exceptions: one bad file must not fail (and re-run) the whole
batch on the cluster; only a crash of the process (a lost worker) fails the task, and the
driver then isolates the culprit by re-running the batch file by file.  Messages of
non-anonpipe exceptions are dropped (they may quote header bytes); only their type is kept.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tasks.errors import AnonpipeError, OutputError
from tasks.fileio import current_policy, deferred_durability, output_policy
from tasks.model import Batch, FileOperation, FileResult, Status, Written


def run_item(operation: FileOperation, src: str, dst: str, rel: str, size: int) -> FileResult:
    """Apply ``operation`` to one file, turning its errors into a failed result."""
    started = time.perf_counter()
    try:
        policy = current_policy()
        if policy is not None:
            policy.like(src)  # an output is never more readable than its input
        written = operation(Path(src), Path(dst))
    except AnonpipeError as exc:
        return FileResult(rel, Status.FAILED, size, 0, type(exc).__name__, str(exc),
                          time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a bug must not fail the other files
        return FileResult(rel, Status.FAILED, size, 0, "InternalError",
                          f"unexpected {type(exc).__name__} (a bug: please report it)",
                          time.perf_counter() - started)
    if isinstance(written, Written):
        return FileResult(rel, Status.DONE, size, written.size,
                          seconds=time.perf_counter() - started, pixels=written.pixels)
    return FileResult(rel, Status.DONE, size, written, seconds=time.perf_counter() - started)


def run_batch(batch: Batch, operation: FileOperation, stop_on_error: bool = False
              ) -> dict[str, Any]:
    """Process ``batch``; with ``stop_on_error`` the files after the first failure are left
    untouched (unlisted, so a rerun does them).  Returns ``{"batch_id", "rows"}``.

    Unless the batch says otherwise (``sync``), its outputs are made durable together
    before it returns (one ``syncfs``, not one fsync per file: ``tasks.fileio``), so a row
    that says done is on disk by the time the driver journals it; if that fails, the done
    rows become failures.  A batch run on the driver's own machine leaves that to the
    driver (``pipeline.writeback``).
    """
    rows: list[dict[str, object]] = []
    with deferred_durability() as durable, output_policy(batch.output_root):
        for item in batch.items:
            result = run_item(operation, item.src, item.dst, item.rel, item.size)
            rows.append(result.as_row())
            if stop_on_error and result.status is Status.FAILED:
                break
        try:
            if batch.sync:
                durable.commit()
        except OutputError as exc:
            rows = [row if row["status"] != Status.DONE.value else
                    {**row, "status": Status.FAILED.value, "bytes_out": 0,
                     "error_kind": type(exc).__name__, "error": str(exc)}
                    for row in rows]
    return {"batch_id": batch.batch_id, "rows": rows}
