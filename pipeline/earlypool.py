"""Worker processes started as soon as the driver has read its options.

Right after its imports and the run's options, before any other thread runs, the driver
forks its local workers (``pipeline.pools.ProcessPool``): they start with every module it
imported and the profile it loaded, where workers spawned later, once the input is
listed, each spent ~0.15 s of CPU importing them again and the driver waited for them
(on a 960-slice CT series, a third of the run's CPU and a tenth of its wall time).

Started only when the backend would start the same pool ahead of pass 2 anyway
(``Backend.prestart``): the tier policy (``pipeline.tiers``) places the run's first
listing (``pipeline.scan.sized_stream``, kept for pass 1: the input is listed once) on
local processes.  :func:`take` hands the pool to the backend, which
closes it; :func:`close` stops a pool nobody took (the run failed before it needed one).
"""

from __future__ import annotations

from pipeline.job import TreeJob
from pipeline.pools import ProcessPool
from pipeline.scan import forget_listing, sized_stream, worker_modules
from pipeline.tiers import Pass, Placement

_early: ProcessPool | None = None


def start(run: object) -> None:
    """Start the pool when :func:`_workers` says the run will use one."""
    global _early
    if _early is not None or not isinstance(run, TreeJob):
        return
    workers = _workers(run)
    if workers is None:
        return
    pool = ProcessPool(workers, run.tuning.retries)
    pool.warm_up(worker_modules(run))
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
    """Stop the pool started early if no backend took it, and drop the listing kept for a
    pass 1 that did not run."""
    global _early
    forget_listing()
    pool, _early = _early, None
    if pool is not None:
        pool.close()


def _workers(job: TreeJob) -> int | None:
    """How many local processes the backend would start ahead of pass 2 for ``job``, or
    None when it would start none (no pass 2, a cluster named, a pass too small)."""
    if job.scan_only or job.dry_run or job.cluster is not None:
        return None  # a named cluster's configuration is the backend's to read
    placement = Placement.of(job, None)
    try:
        _, files, nbytes = sized_stream(job, keep=True)  # pass 1 takes it over
    except OSError:  # the input cannot be listed: pass 1 says so, in its own words
        return None
    return placement.local_workers if placement.prestart(Pass(files, nbytes)) else None
