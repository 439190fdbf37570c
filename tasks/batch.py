"""Pass 2 per batch: apply one operation to every file of a batch, one row per file.

Why errors are rows and not exceptions: one bad file must not fail (and re-run) the whole
batch on the cluster; only a crash of the process (a lost worker) fails the task, and the
driver then isolates the culprit by re-running the batch file by file.  Messages of
non-anonpipe exceptions are dropped (they may quote header bytes); only their type is kept.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import Any

from tasks.errors import AnonpipeError, OutputError
from tasks.fileio import current_policy, deferred_durability, output_policy
from tasks.model import Batch, FileOperation, FileResult, Status, Written

_DONE = Status.DONE.value
_FAILED = Status.FAILED.value


def run_item(operation: FileOperation, src: str, dst: str, rel: str, size: int
             ) -> dict[str, object]:
    """Apply ``operation`` to one file; its row (``FileResult.as_row``'s), its errors
    turned into a failed row.  The paths are passed on as they are (the operations take
    ``str`` as well as ``Path``): no path object is built per file."""
    started = perf_counter_ns()
    try:
        policy = current_policy()
        if policy is not None:  # until the input is open (tasks.engine): owner only
            policy.like_mode(_OWNER_ONLY)
        written = operation(src, dst)
    except AnonpipeError as exc:
        return _failed(rel, size, type(exc).__name__, str(exc), _seconds(started))
    except Exception as exc:  # noqa: BLE001 - a bug must not fail the other files
        return _failed(rel, size, "InternalError",
                       f"unexpected {type(exc).__name__} (a bug: please report it)",
                       _seconds(started))
    nbytes, pixels = ((written.size, written.pixels) if isinstance(written, Written)
                      else (written, None))
    row: dict[str, object] = {"source": rel, "status": _DONE, "bytes_in": size,
                              "bytes_out": nbytes, "error_kind": None, "error": None,
                              "seconds": _seconds(started)}
    if pixels is not None:
        row["pixels"] = pixels
    return row


#: the permissions assumed of an input not yet open: only its owner may read it
_OWNER_ONLY = 0o600


def _seconds(started: int) -> float:
    """Seconds since ``started`` (``perf_counter_ns``) to the microsecond, as
    ``FileResult.as_row`` rounds them (no noise digits in the store), in integer
    arithmetic: ``round(x, 6)`` formats and parses a decimal string."""
    return (perf_counter_ns() - started + 500) // 1000 / 1e6


def _failed(rel: str, size: int, kind: str, error: str, seconds: float) -> dict[str, object]:
    return FileResult(rel, Status.FAILED, size, 0, kind, error, seconds).as_row()


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
    with deferred_durability(batch.sync) as durable, output_policy(batch.output_root):
        for item in batch.items:
            row = run_item(operation, item.src, item.dst, item.rel, item.size)
            rows.append(row)
            if stop_on_error and row["status"] == _FAILED:
                break
        try:
            if batch.sync:
                durable.commit()
        except OutputError as exc:
            rows = [row if row["status"] != _DONE else
                    {**row, "status": _FAILED, "bytes_out": 0,
                     "error_kind": type(exc).__name__, "error": str(exc)}
                    for row in rows]
    return {"batch_id": batch.batch_id, "rows": rows}
