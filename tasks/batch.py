"""Pass 2 per batch: apply one operation to every file of a batch, one row per file.

Why errors are rows and not exceptions: one bad file must not fail (and re-run) the whole
batch on the cluster; only a crash of the process (a lost worker) fails the task, and the
driver then isolates the culprit by re-running the batch file by file.  Messages of
non-anonpipe exceptions are dropped (they may quote header bytes); only their type is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter_ns
from typing import Any

from tasks.engine import Staged
from tasks.errors import AnonpipeError, OutputError
from tasks.fileio import deferred_durability, output_policy
from tasks.model import Batch, FileOperation, FileResult, Status, WorkItem, Written

_DONE = Status.DONE.value
_FAILED = Status.FAILED.value


def run_item(operation: FileOperation, src: str, dst: str, rel: str, size: int
             ) -> dict[str, object]:
    """Apply ``operation`` to one file; its row (``FileResult.as_row``'s), its errors
    turned into a failed row.  The paths are passed on as they are (the operations take
    ``str`` as well as ``Path``): no path object is built per file."""
    started = perf_counter_ns()
    try:
        written = operation(src, dst)
    except Exception as exc:  # noqa: BLE001 - a bug must not fail the other files
        return _failed(rel, size, exc, perf_counter_ns() - started)
    return _done(rel, size, written, perf_counter_ns() - started)


def run_batch(batch: Batch, operation: FileOperation, stop_on_error: bool = False
              ) -> dict[str, Any]:
    """Process ``batch``; with ``stop_on_error`` the files after the first failure are left
    untouched (unlisted, so a rerun does them).  Returns ``{"batch_id", "rows"}``.

    The outputs are made a few at a time (:data:`STAGE_FILES`, :data:`STAGE_BYTES`) and
    then written, in order (``tasks.engine.Staged`` says why).  Unless the batch says
    otherwise (``sync``), its outputs are made durable together before it returns (one
    ``syncfs``, not one fsync per file: ``tasks.fileio``), so a row that says done is on
    disk by the time the driver journals it; if that fails, the done rows become failures.
    A batch run on the driver's own machine leaves that to the driver
    (``pipeline.writeback``).
    """
    rows: list[dict[str, object]] = []
    with deferred_durability(batch.sync) as durable, output_policy(batch.output_root):
        _run_items(batch.items, operation, stop_on_error, rows)
        try:
            if batch.sync:
                durable.commit()
        except OutputError as exc:
            rows = [row if row["status"] != _DONE else
                    {**row, "status": _FAILED, "bytes_out": 0,
                     "error_kind": type(exc).__name__, "error": str(exc)}
                    for row in rows]
    return {"batch_id": batch.batch_id, "rows": rows}


#: a batch makes up to this many outputs before it writes them ...
STAGE_FILES = 64
#: ... or fewer, once they hold this many bytes in memory (a large file's pixel data stays
#: in its input until written, and is not counted)
STAGE_BYTES = 8 << 20

#: an output made: its work item, the output, and the nanoseconds it took to make
_Made = tuple[WorkItem, Staged, int]


def _run_items(items: Sequence[WorkItem], operation: FileOperation, stop_on_error: bool,
               rows: list[dict[str, object]]) -> None:
    """One row per item into ``rows``, in order; with ``stop_on_error`` none after the
    first failure, and no file after it written."""
    made: list[_Made] = []
    held = 0
    try:
        for item in items:
            started = perf_counter_ns()
            try:
                output = operation.prepare(item.src)
            except Exception as exc:  # noqa: BLE001 - a bug must not fail the other files
                failed = _failed(item.rel, item.size, exc, perf_counter_ns() - started)
                if not _write(made, rows, stop_on_error):
                    return
                rows.append(failed)
                if stop_on_error:
                    return
                held = 0
                continue
            made.append((item, output, perf_counter_ns() - started))
            held += output.held
            if len(made) >= STAGE_FILES or held >= STAGE_BYTES:
                if not _write(made, rows, stop_on_error):
                    return
                held = 0
        _write(made, rows, stop_on_error)
    finally:
        for _, output, _ in made:  # left unwritten: stopped, or interrupted
            output.close()


def _write(made: list[_Made], rows: list[dict[str, object]], stop_on_error: bool) -> bool:
    """Write the outputs ``made`` in order, their rows into ``rows``; ``made`` is emptied
    of those written.  False when a write failed and ``stop_on_error`` stops the batch."""
    for index, (item, output, making) in enumerate(made):
        started = perf_counter_ns()
        try:
            written = output.write(item.dst)
        except Exception as exc:  # noqa: BLE001 - a bug must not fail the other files
            rows.append(_failed(item.rel, item.size, exc,
                                making + perf_counter_ns() - started))
            if stop_on_error:
                del made[:index + 1]  # the rest stays unwritten (closed by the caller)
                return False
            continue
        finally:
            output.close()
        rows.append(_done(item.rel, item.size, written, making + perf_counter_ns() - started))
    made.clear()
    return True


def _seconds(elapsed: int) -> float:
    """``elapsed`` nanoseconds in seconds to the microsecond, as ``FileResult.as_row``
    rounds them (no noise digits in the store), in integer arithmetic: ``round(x, 6)``
    formats and parses a decimal string."""
    return (elapsed + 500) // 1000 / 1e6


def _done(rel: str, size: int, written: int | Written, elapsed: int) -> dict[str, object]:
    nbytes, pixels = ((written.size, written.pixels) if isinstance(written, Written)
                      else (written, None))
    row: dict[str, object] = {"source": rel, "status": _DONE, "bytes_in": size,
                              "bytes_out": nbytes, "error_kind": None, "error": None,
                              "seconds": _seconds(elapsed)}
    if pixels is not None:
        row["pixels"] = pixels
    return row


def _failed(rel: str, size: int, exc: Exception, elapsed: int) -> dict[str, object]:
    """The failed row of ``exc``: an anonpipe error's own message; of any other exception
    only its type (its message may quote header bytes)."""
    if isinstance(exc, AnonpipeError):
        kind, error = type(exc).__name__, str(exc)
    else:
        kind, error = "InternalError", f"unexpected {type(exc).__name__} (a bug: please report it)"
    return FileResult(rel, Status.FAILED, size, 0, kind, error, _seconds(elapsed)).as_row()
