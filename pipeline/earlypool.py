"""Worker processes started as soon as the driver has read its options.

Right after its imports, before any other thread runs, the driver forks its local
workers (``pipeline.pools.ProcessPool``): they start with every module it imported, where
workers spawned later, once the input is listed, each spent ~0.15 s of CPU importing them
again and the driver waited for them (on a 960-slice CT series, a third of the run's CPU
and a tenth of its wall time).

Started only when the run will certainly want the local process pool: the default pool
kind, two workers or more, a mode that writes, an input folder holding at least
``PROCESSES_FROM`` files or ``PROCESSES_FROM_BYTES`` bytes (a listing that stops there).
:func:`take` hands the pool to the backend, which closes it; :func:`close` stops a pool
nobody took (the run failed before it needed one).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from pipeline.job import PROCESSES_FROM, PROCESSES_FROM_BYTES, Tuning
from pipeline.pools import ProcessPool

#: what a worker imports, by mode (pass 1 scans in workers too: tasks.inventory)
MODULES = {
    "e": ("tasks.batch", "tasks.inventory", "tasks.deidentify", "tasks.crypto"),
    "d": ("tasks.batch", "tasks.reidentify", "tasks.crypto"),
    "dumb": ("tasks.batch", "tasks.dumb"),
}

_early: ProcessPool | None = None


def start(args: argparse.Namespace) -> None:
    """Start the pool when :func:`_workers` says the run will use one."""
    global _early
    workers = _workers(args)
    if workers is None or _early is not None:
        return
    modes = args.mode or ["e"]
    pool = ProcessPool(workers, Tuning().retries)
    pool.warm_up(MODULES.get(modes[0], MODULES["e"]))
    _early = pool


def take(workers: int, retries: int) -> ProcessPool | None:
    """The pool started early, if it has ``workers`` workers (else it is stopped), to
    retry a task ``retries`` times."""
    global _early
    pool, _early = _early, None
    if pool is not None and pool.workers != workers:
        pool.close()
        return None
    if pool is not None:
        pool.retries = retries
    return pool


def close() -> None:
    """Stop the pool started early if no backend took it."""
    global _early
    pool, _early = _early, None
    if pool is not None:
        pool.close()


def _workers(args: argparse.Namespace) -> int | None:
    """How many workers the run's process pool will have, or None when it may have none."""
    if (args.scheduler or args.cluster or args.driver or args.dashboard or args.scan_only
            or args.dry_run or args.files_from or args.explain is not None
            or args.local_pool == "dask" or (args.mode and len(args.mode) > 1)):
        return None
    workers = args.workers if args.workers is not None else os.cpu_count() or 1
    if workers < 2:
        return None
    src = args.input if args.input is not None else (args.paths[0] if args.paths else None)
    if src is None or not os.path.isdir(src):
        return None
    return workers if _at_least(src, args.recursive) else None


def _at_least(folder: str, recursive: bool) -> bool:
    """Whether ``folder`` holds ``PROCESSES_FROM`` files or ``PROCESSES_FROM_BYTES``
    bytes (listed until one is reached)."""
    nbytes = 0
    for files, size in enumerate(_sizes(folder, recursive), 1):
        nbytes += size
        if files >= PROCESSES_FROM or nbytes >= PROCESSES_FROM_BYTES:
            return True
    return False


def _sizes(folder: str, recursive: bool) -> Iterator[int]:
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
