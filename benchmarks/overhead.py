"""The numbers that predict scaling beyond 2 workers (benchmarks/README.md, "Scaling").

    .venv/bin/python benchmarks/overhead.py [--dask] [--pool dask|processes|scheduler|both]

Measures, on this machine: the start-up and per-task cost of the local process pool (and
with ``--dask`` of a dask LocalCluster), then one real run (``-e -r --workers N`` on the
small20k archive ``make bench`` generates, small2k if that is missing) split into the
driver's CPU per file (listing, store, plan, journal, pickling to the workers) and the
workers' (both passes).  From these: files/s one worker sustains, files/s the single
driver sustains, and how many workers the driver can feed.

``--pool scheduler`` runs against a ``dask scheduler`` and ``dask worker`` started here as
separate processes on 127.0.0.1 (as on a cluster, where the scheduler is not in the
driver): the driver is then only the client, and the scheduler's own CPU per file gives
the second ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.pools import ProcessPool

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


@contextlib.contextmanager
def external_cluster(workers: int, logs: Path) -> Iterator[tuple[str, list[int], int]]:
    """``dask scheduler`` and ``dask worker --nworkers N --nthreads 1`` as processes of their
    own: (address, pids of the worker command's tree, pid of the scheduler)."""
    import psutil
    from distributed import Client

    dask_cli = Path(sys.executable).with_name("dask")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scheduler_file = logs / "scheduler.json"
    procs = [subprocess.Popen(
        [str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        address = ""
        while not address:
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("dask scheduler did not start")
            with contextlib.suppress(OSError, ValueError, KeyError):
                address = str(json.loads(scheduler_file.read_text())["address"])
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [str(dask_cli), "worker", address, "--nworkers", str(workers), "--nthreads", "1",
             "--no-dashboard", "--local-directory", str(logs)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True))
        with Client(address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
        tree = psutil.Process(procs[1].pid)
        worker_pids = [tree.pid, *(p.pid for p in tree.children(recursive=True))]
        yield address, worker_pids, procs[0].pid
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _cpu_of(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of the processes that still run."""
    import psutil

    user = system = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            user, system = user + times.user, system + times.system
    return user, system


def run_costs(archive: Path, workers: int, pool: str = "dask") -> dict[str, float]:
    """A real ``anonpipe -e -r --workers N --local-pool POOL`` run (``--scheduler`` for pool
    ``scheduler``), in this process: the driver's CPU (RUSAGE_SELF: listing, store, plan,
    journal, IPC), the workers' (RUSAGE_CHILDREN, or the external workers' processes) and
    the external scheduler's, per file, user and system apart."""
    import resource

    from pipeline.cli import build_parser
    from pipeline.options import build_run
    from pipeline.runner import run_tree

    files = sum(1 for _ in archive.rglob("*.dcm"))
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp, contextlib.ExitStack() as stack:
        where = ["--local-pool", pool]
        outside: tuple[list[int], int] | None = None
        if pool == "scheduler":
            address, worker_pids, scheduler_pid = stack.enter_context(
                external_cluster(workers, Path(tmp)))
            where = ["--scheduler", address]
            outside = (worker_pids, scheduler_pid)
        args = build_parser().parse_args(
            ["-e", "--irreversible", "-r", "-E", "--workers", str(workers), *where,
             "--secret-file", str(Path(tmp) / "secret"), "--new-secret",
             "--store", str(Path(tmp) / "store.sqlite"), str(archive), str(Path(tmp) / "out")])
        job = build_run(args)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ext0 = (_cpu_of(outside[0]), _cpu_of([outside[1]])) if outside else None
        t0 = time.perf_counter()
        run_tree(job)  # type: ignore[arg-type]
        wall = time.perf_counter() - t0
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ext1 = (_cpu_of(outside[0]), _cpu_of([outside[1]])) if outside else None
    per = 1e3 / files
    out = {
        "files": files, "wall_s": round(wall, 3),
        "driver_user_ms_per_file": round((self1.ru_utime - self0.ru_utime) * per, 4),
        "driver_sys_ms_per_file": round((self1.ru_stime - self0.ru_stime) * per, 4),
        "workers_user_ms_per_file": round((kids1.ru_utime - kids0.ru_utime) * per, 4),
        "workers_sys_ms_per_file": round((kids1.ru_stime - kids0.ru_stime) * per, 4),
    }
    if ext0 is not None and ext1 is not None:
        (wu0, ws0), (su0, ss0) = ext0
        (wu1, ws1), (su1, ss1) = ext1
        out.update({
            "workers_user_ms_per_file": round((wu1 - wu0) * per, 4),
            "workers_sys_ms_per_file": round((ws1 - ws0) * per, 4),
            "scheduler_user_ms_per_file": round((su1 - su0) * per, 4),
            "scheduler_sys_ms_per_file": round((ss1 - ss0) * per, 4),
        })
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dask", action="store_true",
                        help="also measure a dask LocalCluster (with and without dashboard)")
    parser.add_argument("--pool", choices=("dask", "processes", "scheduler", "both"),
                        default="dask",
                        help="workers of the measured run: a local dask cluster (the default),"
                             " the local process pool, both, or an external dask scheduler"
                             " with workers started here")
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
        predicted = {
            "files_per_s_per_worker": round(1e3 / worker),
            "files_per_s_driver_ceiling": round(1e3 / driver),
            "workers_before_the_driver_saturates": round(worker / driver, 1),
        }
        if "scheduler_user_ms_per_file" in run:
            scheduler = run["scheduler_user_ms_per_file"] + run["scheduler_sys_ms_per_file"]
            predicted["files_per_s_scheduler_ceiling"] = round(1e3 / max(scheduler, 1e-6))
        out[f"predicted_{pool}"] = predicted
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
