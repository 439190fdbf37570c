"""Which pool runs a pass: the tier policy, as an ordered table of rules.

Why tiers: a dask LocalCluster costs ~0.7 s of wall time and ~2 CPU-seconds to start on 2
cores, a process pool ~0.1 s, running inline nothing; so a pass runs inline when it is
tiny, on the process pool when it holds at least ``Tuning.processes_from`` files or
``Tuning.processes_from_bytes`` bytes, and on the default local dask cluster only from
``Tuning.inline_below`` files (benchmarks/README.md).  A local pool of one worker is no
pool at all: ``--workers 1`` (or one core) runs inline.  A scheduler, a job queue or a
dashboard the user named is always used, whatever the size (the user chose where the work
runs).  pipeline.cluster.Backend starts what the rule chosen needs.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from pipeline.job import TreeJob, Tuning

if TYPE_CHECKING:
    from pipeline.clusterconfig import ClusterConfig


class Tier(enum.Enum):
    INLINE = "inline"  # the driver runs each batch itself
    PROCESSES = "processes"  # a local process pool (pipeline.pools.ProcessPool)
    DASK = "dask"  # a dask cluster: local, an existing scheduler, or worker jobs


class Pass(NamedTuple):
    """What is known of a pass when its pool is chosen (None: unknown, assume large)."""

    files: int | None
    nbytes: int | None = None
    dask_started: bool = False  # a dask cluster is already up (from an earlier pass)


class Placement(NamedTuple):
    """The facts of a job the rules read: where its workers may run, and its tuning."""

    wants_dask: bool  # any worker at all: not --workers 0
    #: a scheduler or job queue the user named, or a dashboard to watch: used even for
    #: small passes, and waited for
    explicit: bool
    local_workers: int  # --workers, the cluster config's, or one per core
    local_processes: bool  # local workers are the process pool (--local-pool processes)
    default_local: bool  # local workers are a LocalCluster no config names
    tuning: Tuning

    @classmethod
    def of(cls, job: TreeJob, config: ClusterConfig | None) -> Placement:
        local = job.scheduler is None and config is None
        return cls(
            wants_dask=job.workers != 0 or job.scheduler is not None or config is not None,
            explicit=job.scheduler is not None or job.dashboard is not None or (
                config is not None and config.kind != "local"),
            local_workers=(job.workers or (config.workers if config else None)
                           or os.cpu_count() or 1),
            local_processes=local and job.local_pool == "processes",
            default_local=local and job.local_pool == "dask",
            tuning=job.tuning)

    @property
    def one_local_worker(self) -> bool:
        """A local pool of a single worker: the driver does that work itself.

        Why: one worker process cannot run beside another, so it would only add its start
        (~0.1 s, plus ~0.4 CPU-s to import dask) and the hand-over of every batch and
        result: 20,000 small files took 15.7 s and 0.55 ms of user CPU per file inline,
        against 22.6 s and 0.68 ms on a one-worker LocalCluster (one run each;
        benchmarks/README.md)."""
        return self.wants_dask and not self.explicit and self.local_workers == 1

    def below_cluster(self, work: Pass) -> bool:
        """Fewer files than pay for starting a local dask cluster."""
        return work.files is not None and work.files < self.tuning.inline_below

    def small(self, work: Pass) -> bool:
        """Too small a pass for any pool (files, and bytes when they are counted)."""
        limit = self.tuning.inline_below_bytes
        return self.below_cluster(work) and (
            limit is None or work.nbytes is None or work.nbytes < limit)

    def middling(self, work: Pass) -> bool:
        """Too small for the default LocalCluster, big enough for local processes."""
        t = self.tuning
        return self.default_local and self.below_cluster(work) and (
            (t.processes_from is not None and work.files is not None
             and work.files >= t.processes_from)
            or (t.processes_from_bytes is not None and work.nbytes is not None
                and work.nbytes >= t.processes_from_bytes))

    def tier(self, work: Pass) -> Tier:
        """The tier of the first rule that holds."""
        return next(tier for _, holds, tier in RULES if holds(self, work))

    def prestart(self, work: Pass) -> bool:
        """Whether a later pass of this size wants local processes started now."""
        return self.tier(work) is Tier.PROCESSES


Rule = tuple[str, Callable[[Placement, Pass], bool], Tier]

#: first match wins
RULES: tuple[Rule, ...] = (
    ("no worker asked for (--workers 0), or one local worker",
     lambda p, w: not p.wants_dask or p.one_local_worker, Tier.INLINE),
    ("process pool, a pass too small to hand out", lambda p, w: p.local_processes and p.small(w),
     Tier.INLINE),
    ("process pool", lambda p, w: p.local_processes, Tier.PROCESSES),
    ("local dask cluster not started, a middling pass",
     lambda p, w: not p.explicit and not w.dask_started and p.middling(w), Tier.PROCESSES),
    ("local dask cluster not started, a small pass",
     lambda p, w: not p.explicit and not w.dask_started and p.below_cluster(w), Tier.INLINE),
    ("a dask cluster: named by the user, already up, or a large pass",
     lambda p, w: True, Tier.DASK),
)
