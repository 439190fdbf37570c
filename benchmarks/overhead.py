"""The numbers that predict scaling beyond 2 workers (benchmarks/README.md, "Scaling").

    .venv/bin/python benchmarks/overhead.py [--dask] [--pool dask|processes|both]

Measures, on this machine: the start-up and per-task cost of the local process pool (and
with ``--dask`` of a dask LocalCluster), then one real run (``-e -r --workers N`` on the
small20k archive ``make bench`` generates, small2k if that is missing) split into the
driver's CPU per file (listing, store, plan, journal, pickling to the workers) and the
workers' (both passes).  From these: files/s one worker sustains, files/s the single
driver sustains, and how many workers the driver can feed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.cluster import ProcessPool

ARCHIVE = ROOT / "build" / "bench" / "archive-small2k"


def _noop(payload: object) -> dict[str, object]:
    return {"batch_id": payload}


def pool_costs(workers: int, tasks: int = 400) -> dict[str, float]:
    started = time.perf_counter()
    pool = ProcessPool(workers, retries=0)
    pool.warm_up(("tasks.batch",))
    list(pool.imap(_noop, range(workers)))
    ready = time.perf_counter() - started
    t0 = time.perf_counter()
    list(pool.imap(_noop, range(tasks)))
    per_task = (time.perf_counter() - t0) / tasks
    pool.close()
    return {"start_s": round(ready, 3), "per_task_ms": round(per_task * 1e3, 3)}


def dask_costs(workers: int, dashboard: bool, tasks: int = 400) -> dict[str, float]:
    """A LocalCluster as the pipeline starts one (``pipeline.cluster``), with or without
    the dashboard: wall time to the first results, CPU of the whole process tree by then
    (this process's and its workers'), and the per-task cost after."""
    import logging

    import psutil
    from distributed import Client

    from pipeline.cluster import _lean_local_cluster

    me = psutil.Process()
    before = sum(me.cpu_times()[:2])
    started = time.perf_counter()
    options = {"n_workers": workers, "threads_per_worker": 1, "processes": True,
               "silence_logs": logging.ERROR}
    if dashboard:
        options["dashboard_address"] = ":0"
    with _lean_local_cluster(options, dashboard) as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.gather([client.submit(_noop, i, pure=False) for i in range(workers)])
        ready = time.perf_counter() - started
        cpu = sum(me.cpu_times()[:2]) - before + sum(
            sum(child.cpu_times()[:2]) for child in me.children(recursive=True))
        t0 = time.perf_counter()
        client.gather([client.submit(_noop, i, pure=False) for i in range(tasks)])
        per_task = (time.perf_counter() - t0) / tasks
    return {"start_s": round(ready, 3), "start_cpu_s": round(cpu, 2),
            "per_task_ms": round(per_task * 1e3, 3)}


def run_costs(archive: Path, workers: int, pool: str = "dask") -> dict[str, float]:
    """A real ``anonpipe -e -r --workers N --local-pool POOL`` run, in this process: the driver's CPU
    (RUSAGE_SELF: listing, store, plan, journal, IPC) and the workers' (RUSAGE_CHILDREN),
    per file, user and system apart."""
    import resource

    from pipeline.cli import build_parser
    from pipeline.options import build_run
    from pipeline.runner import run_tree

    files = sum(1 for _ in archive.rglob("*.dcm"))
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        args = build_parser().parse_args(
            ["-e", "--irreversible", "-r", "-E", "--workers", str(workers),
             "--local-pool", pool, "--secret-file",
             str(Path(tmp) / "secret"), "--store", str(Path(tmp) / "store.sqlite"),
             str(archive), str(Path(tmp) / "out")])
        job = build_run(args)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        run_tree(job)  # type: ignore[arg-type]
        wall = time.perf_counter() - t0
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    per = 1e3 / files
    return {
        "files": files, "wall_s": round(wall, 3),
        "driver_user_ms_per_file": round((self1.ru_utime - self0.ru_utime) * per, 4),
        "driver_sys_ms_per_file": round((self1.ru_stime - self0.ru_stime) * per, 4),
        "workers_user_ms_per_file": round((kids1.ru_utime - kids0.ru_utime) * per, 4),
        "workers_sys_ms_per_file": round((kids1.ru_stime - kids0.ru_stime) * per, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dask", action="store_true",
                        help="also measure a dask LocalCluster (with and without dashboard)")
    parser.add_argument("--pool", choices=("dask", "processes", "both"), default="dask",
                        help="local workers of the measured run (default: the default)")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    out: dict[str, object] = {"cpus": workers, "process_pool": pool_costs(workers)}
    if args.dask:
        out["dask_local_cluster"] = dask_costs(workers, dashboard=False)
        out["dask_local_cluster_with_dashboard"] = dask_costs(workers, dashboard=True)
    archive = ARCHIVE.parent / "archive-small20k"
    if not archive.exists():
        archive = ARCHIVE
    for pool in ("dask", "processes") if args.pool == "both" else (args.pool,):
        run = run_costs(archive, workers, pool)
        out[f"run_{pool}"] = run
        driver = run["driver_user_ms_per_file"] + run["driver_sys_ms_per_file"]
        worker = run["workers_user_ms_per_file"] + run["workers_sys_ms_per_file"]
        out[f"predicted_{pool}"] = {
            "files_per_s_per_worker": round(1e3 / worker),
            "files_per_s_driver_ceiling": round(1e3 / driver),
            "workers_before_the_driver_saturates": round(worker / driver, 1),
        }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
