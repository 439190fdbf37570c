"""Pass 1: list the input and read every header, fanned out in batches; rows go to the store.

Why the first ``inline_below`` entries are buffered: that is how the backend learns
whether the archive is small enough to scan inline (no cluster start-up) while memory stays
bounded.  ``-d``/``--dumb`` need no header facts, so their pass 1 is the listing alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from pipeline.cluster import Backend, Pool, balanced_batch
from pipeline.job import TreeJob
from pipeline.plan import profile_of
from pipeline.progress import PassStats, RunProgress
from pipeline.store import Store
from pipeline.walk import Entry, iter_files
from tasks.inventory import ScanBatch, replaced_tags, scan_batch

LISTING_CHUNK = 5000


def _error_row(entry: Entry) -> dict[str, Any]:
    return {"size": entry.size, "error_kind": entry.error_kind, "error": entry.error}


class _Batcher:
    """Turns the entry stream into scan batches; unreadable entries are set aside as rows."""

    def __init__(self, job: TreeJob, entries: Iterator[Entry], replaced: frozenset[int],
                 batch_files: int | None = None) -> None:
        self.job = job
        self.entries = entries
        self.replaced = replaced
        self.batch_files = batch_files or job.scan_batch_files
        self.walk_errors: dict[str, dict[str, Any]] = {}
        self.next_id = 0

    def __iter__(self) -> Iterator[ScanBatch]:
        rels: list[str] = []
        root = str(self.job.input)
        for entry in self.entries:
            if not entry.ok:
                self.walk_errors[entry.rel] = _error_row(entry)
                continue
            rels.append(entry.rel)
            if len(rels) >= self.batch_files:
                yield self._batch(root, rels)
                rels = []
        if rels:
            yield self._batch(root, rels)

    def _batch(self, root: str, rels: list[str]) -> ScanBatch:
        self.next_id += 1
        return ScanBatch(self.next_id, root, tuple(rels), self.replaced)

    def take_errors(self) -> dict[str, dict[str, Any]]:
        errors, self.walk_errors = self.walk_errors, {}
        return errors


def _sized_stream(job: TreeJob) -> tuple[Iterator[Entry], int | None, int | None]:
    """The entry stream and, when it is short, its length and bytes (at most
    ``inline_below`` entries held)."""
    entries = iter_files(job.input, job.recursive)
    head = list(itertools.islice(entries, job.inline_below + 1))
    if len(head) <= job.inline_below:
        return iter(head), len(head), sum(entry.size for entry in head)
    return itertools.chain(head, entries), None, None


def run_scan(job: TreeJob, store: Store, backend: Backend, progress: RunProgress) -> PassStats:
    """Fill the store's inventory for ``job``; returns the pass statistics."""
    store.reset_inventory()
    stream, expected, nbytes = _sized_stream(job)
    if not (job.scan_only or job.dry_run):  # pass 2 may want workers pass 1 does without
        backend.prestart(expected, nbytes, _worker_modules(job))
    if job.mode != "deidentify":
        progress.begin("pass 1 list", total=expected)
        _list_only(stream, store, progress)
    else:
        pool = backend.pool(expected)
        progress.begin("pass 1 scan", total=expected)
        size = balanced_batch(job.scan_batch_files, expected, backend.planned_workers(pool))
        batcher = _Batcher(job, stream, replaced_tags(profile_of(job)), size)
        _scan(job, batcher, pool, store, progress)
    store.finish_inventory()
    return progress.end()


def _worker_modules(job: TreeJob) -> tuple[str, ...]:
    """What a pass-2 worker imports to run the job's operation."""
    modules = ["tasks.batch", type(job.operation).__module__]
    if getattr(getattr(job.operation, "settings", None), "encryptor", None) is not None:
        modules.append("tasks.crypto")
    return tuple(modules)


def _list_only(stream: Iterator[Entry], store: Store, progress: RunProgress) -> None:
    chunk: dict[str, dict[str, Any]] = {}
    errors = nbytes = 0
    for entry in stream:
        if entry.ok:
            chunk[entry.rel] = {"size": entry.size, "mtime_ns": entry.mtime_ns}
            nbytes += entry.size
        else:
            chunk[entry.rel] = _error_row(entry)
            errors += 1
        if len(chunk) >= LISTING_CHUNK:
            store.add_inventory(chunk)
            progress.advance(len(chunk), nbytes, errors)
            chunk, errors, nbytes = {}, 0, 0
    store.add_inventory(chunk)
    progress.advance(len(chunk), nbytes, errors)


def _scan(job: TreeJob, batcher: _Batcher, pool: Pool, store: Store,
          progress: RunProgress) -> None:
    window = pool.imap(scan_batch, batcher)
    for outcome in window:
        progress.set_workers(pool.workers_alive() if pool.kind != "inline" else None,
                             pool.dashboard)
        if outcome.error is not None:
            batch = outcome.payload
            if len(batch.rels) > 1:  # isolate the file that keeps killing its worker
                window.resubmit(ScanBatch(batch.batch_id, batch.root, (rel,), batch.replaced)
                                for rel in batch.rels)
                continue
            store.add_inventory({batch.rels[0]: {
                "error_kind": "WorkerLost",
                "error": f"header scan task failed: {type(outcome.error).__name__}"}})
            progress.advance(1, 0, 1)
        else:
            assert outcome.result is not None
            result = outcome.result
            store.add_inventory_json(result["rows"])
            progress.advance(len(result["rows"]), result["bytes"], result["errors"])
        _flush_walk_errors(batcher, store, progress)
    _flush_walk_errors(batcher, store, progress)


def _flush_walk_errors(batcher: _Batcher, store: Store, progress: RunProgress) -> None:
    errors = batcher.take_errors()
    if errors:
        store.add_inventory(errors)
        progress.advance(len(errors), 0, len(errors))
