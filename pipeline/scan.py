"""Pass 1: list the input and read every header, fanned out in batches; rows go to the store.

Why the first ``inline_below`` entries are buffered: that is how the backend learns
whether the archive is small enough to scan inline (no cluster start-up) while memory stays
bounded.  ``-d``/``--dumb`` need no header facts, so their pass 1 is the listing alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

from pipeline import outcomes
from pipeline.cluster import Backend
from pipeline.job import Mode, TreeJob
from pipeline.plan import profile_of
from pipeline.pools import MIN_BATCH_FILES, Pool, balanced_batch, task_failure
from pipeline.progress import INFO, PassStats, RunProgress
from pipeline.store import Store
from pipeline.walk import Entry, iter_files, iter_listed
from tasks.inventory import ROW_FORMAT, ScanBatch, replaced_tags, scan_batch

LISTING_CHUNK = 5000


def _error_row(entry: Entry) -> dict[str, Any]:
    return {"size": entry.size, "error_kind": entry.error_kind, "error": entry.error}


class _Batcher:
    """Turns the entry stream into scan batches; unreadable entries are set aside as rows.

    With ``reuse`` (the store kept the rows of the last pass 1: Store.begin_inventory),
    files listed with the size and modification time their row was read from are not
    scanned again; they are passed to ``on_reused`` (files, bytes) as soon as they are
    listed.  Why then: a rerun with every row kept yields no batch at all, and its
    progress would otherwise stand still until the whole listing is done.
    """

    def __init__(self, job: TreeJob, entries: Iterator[Entry], replaced: frozenset[int],
                 batch_files: int | None = None, store: Store | None = None,
                 reuse: bool = False,
                 on_reused: Callable[[int, int], None] | None = None,
                 workers: int = 1) -> None:
        self.job = job
        self.entries = entries
        self.replaced = replaced
        self.batch_files = batch_files or job.tuning.scan_batch_files
        self.walk_errors: dict[str, dict[str, Any]] = {}
        self.next_id = 0
        self.store = store if reuse else None
        self.on_reused = on_reused
        self.workers = workers

    def __iter__(self) -> Iterator[ScanBatch]:
        rels: list[str] = []
        stats: list[tuple[int, int]] = []
        root = str(self.job.input)
        for chunk in _chunks(self.entries, self.batch_files):
            for rel, stat in self._to_scan(chunk):
                rels.append(rel)
                stats.append(stat)
                if len(rels) >= self.batch_files:
                    yield self._batch(root, rels, stats)
                    rels, stats = [], []
        # what is left when the listing ends is shared by the workers: in one batch it went
        # to one of them while the others, done with their full batches, waited (1,200
        # headers on 2 workers: 500 each, then 200 on one)
        if rels:
            parts = max(1, min(self.workers, len(rels) // MIN_BATCH_FILES))
            step = -(-len(rels) // parts)
            for at in range(0, len(rels), step):
                yield self._batch(root, rels[at:at + step], stats[at:at + step])

    def _to_scan(self, chunk: list[Entry]) -> Iterator[tuple[str, tuple[int, int]]]:
        """(path, (size, mtime) as listed) of ``chunk`` to scan; walk errors are set
        aside, reusable rows kept."""
        listed = {}
        for entry in chunk:
            if entry.error_kind is None:
                listed[entry.rel] = (entry.size, entry.mtime_ns)
            else:
                self.walk_errors[entry.rel] = _error_row(entry)
        if self.store is None:
            return iter(listed.items())
        self.store.mark_seen(entry.rel for entry in chunk)
        kept = self.store.unchanged(listed)
        if kept and self.on_reused is not None:
            self.on_reused(len(kept), sum(listed[rel][0] for rel in kept))
        return ((rel, stat) for rel, stat in listed.items() if rel not in kept)

    def _batch(self, root: str, rels: list[str], stats: list[tuple[int, int]]) -> ScanBatch:
        self.next_id += 1
        return ScanBatch(self.next_id, root, tuple(rels), self.replaced, tuple(stats))

    def take_errors(self) -> dict[str, dict[str, Any]]:
        errors, self.walk_errors = self.walk_errors, {}
        return errors


#: a listing of at most this many entries (or ``inline_below``, if more) is held whole before
#: pass 1 starts: its size known, the pass is cut into batches that keep every worker busy
#: to its end (``balanced_batch``), where batches of ``scan_batch_files`` were handed out
#: as the listing went (a 960-slice series: 500 headers to one worker, 230 and 230 to the
#: other; pass 1 took 48-60 ms against 34-46 ms balanced, 4 runs each)
SIZED_BELOW = 5000

Sized = tuple[Iterator[Entry], int | None, int | None]

#: the listing the early pool looked at (``pipeline.earlypool``), kept for the same job's
#: pass 1 so that the input is listed once
_kept: tuple[TreeJob, Sized] | None = None


def sized_stream(job: TreeJob, keep: bool = False) -> Sized:
    """The entry stream and, when it is short, its length and bytes (at most
    ``max(inline_below, SIZED_BELOW)`` entries held).  With ``keep``, the next call for
    the same job gets this stream instead of listing the input again (the caller must
    not consume it)."""
    global _kept
    if _kept is not None:
        kept, _kept = _kept, None
        if kept[0] is job:
            return kept[1]
    entries = (iter_listed(job.input, job.files, job.follow_symlinks) if job.files is not None
               else iter_files(job.input, job.recursive, job.follow_symlinks))
    bound = max(job.tuning.inline_below, SIZED_BELOW)
    head = list(itertools.islice(entries, bound + 1))
    sized: Sized = ((iter(head), len(head), sum(entry.size for entry in head))
                    if len(head) <= bound else (itertools.chain(head, entries), None, None))
    if keep:
        _kept = (job, sized)
    return sized


def forget_listing() -> None:
    """Drop a listing :func:`sized_stream` kept that no pass 1 took (the run ended first)."""
    global _kept
    _kept = None


def run_scan(job: TreeJob, store: Store, backend: Backend, progress: RunProgress) -> PassStats:
    """Fill the store's inventory for ``job``; returns the pass statistics."""
    scanning = job.mode is Mode.DEIDENTIFY  # -d and --dumb need the listing alone
    replaced = replaced_tags(profile_of(job)) if scanning else frozenset()
    reuse = scanning and store.begin_inventory(_scan_key(job, replaced))
    if not scanning:
        store.reset_inventory()
    stream, expected, nbytes = sized_stream(job)
    if not (job.scan_only or job.dry_run):  # pass 2 may want workers pass 1 does without
        backend.prestart(expected, nbytes, worker_modules(job))
    if not scanning:
        progress.begin("pass 1 list", total=expected)
        _list_only(stream, store, progress)
    else:
        pool = backend.pool(expected)
        progress.begin("pass 1 scan", total=expected)
        workers = backend.planned_workers(pool)
        size = balanced_batch(job.tuning.scan_batch_files, expected, workers)
        batcher = _Batcher(job, stream, replaced, size, store, reuse,
                           on_reused=lambda files, nbytes: progress.advance(files, nbytes),
                           workers=workers)
        _scan(job, batcher, pool, store, progress)
        if reuse:
            dropped = store.sweep_unseen()
            if dropped:
                progress.message(f"{dropped:,} files of the last scan are gone: dropped from "
                                 "the inventory", INFO)
    store.finish_inventory()
    return progress.end()


def _scan_key(job: TreeJob, replaced: frozenset[int]) -> str:
    """What inventory rows depend on besides each file: reusable only when it is equal."""
    text = json.dumps([ROW_FORMAT, str(job.input.resolve()), sorted(replaced)])
    return hashlib.sha256(text.encode()).hexdigest()


def _chunks(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    while chunk := list(itertools.islice(entries, size)):
        yield chunk


def worker_modules(job: TreeJob) -> tuple[str, ...]:
    """What a pass-2 worker imports to run the job's operation."""
    modules = ["tasks.batch", type(job.operation).__module__]
    if job.operation.encryptor is not None:
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
            _latest(progress, entry.error_kind, entry.error)
        if len(chunk) >= LISTING_CHUNK:
            store.add_inventory(chunk)
            progress.advance(len(chunk), nbytes, errors)
            chunk, errors, nbytes = {}, 0, 0
    store.add_inventory(chunk)
    progress.advance(len(chunk), nbytes, errors)


def _scan(job: TreeJob, batcher: _Batcher, pool: Pool, store: Store,
          progress: RunProgress) -> None:
    for outcome in pool.imap(scan_batch, batcher, split=_one_per_file):
        progress.set_workers(pool.workers_alive() if pool.kind != "inline" else None,
                             pool.dashboard)
        if outcome.error is not None:  # one file, that kept failing its task alone
            batch = outcome.payload
            store.add_inventory({batch.rels[0]: {
                "error_kind": "WorkerLost",
                "error": f"header scan task failed: {task_failure(outcome.error)}"}})
            _latest(progress, "WorkerLost", "")
            progress.advance(1, 0, 1)
        else:
            assert outcome.result is not None
            result = outcome.result
            store.add_packed(result["rows"])
            if result.get("latest"):
                _latest(progress, *result["latest"])
            progress.advance(len(result["rows"]), result["bytes"], result["errors"])
        _flush_walk_errors(batcher, store, progress)
    _flush_walk_errors(batcher, store, progress)


def _one_per_file(batch: ScanBatch) -> list[ScanBatch]:
    """A scan batch whose task failed, one file per batch (pipeline.pools quarantine)."""
    return batch.one_per_file()


def _flush_walk_errors(batcher: _Batcher, store: Store, progress: RunProgress) -> None:
    errors = batcher.take_errors()
    if errors:
        store.add_inventory(errors)
        last = next(reversed(errors.values()))
        _latest(progress, last.get("error_kind"), last.get("error"))
        progress.advance(len(errors), 0, len(errors))


def _latest(progress: RunProgress, kind: str | None, reason: str | None) -> None:
    """Show the latest bad file's outcome (its error kind when it failed), as pass 2 does."""
    name = outcomes.outcome("failed", kind or "Error", reason)
    progress.set_latest(str(kind) if name == outcomes.FAILED else name)
