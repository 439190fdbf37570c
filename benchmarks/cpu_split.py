"""Run a command and print the CPU of each process of its tree, and the busiest threads of
the first one (the anonpipe driver): where a run's CPU goes between driver and workers.

    .venv/bin/python benchmarks/cpu_split.py anonpipe -c cert.pem -e -r -E IN OUT

Polled every 0.1 s with psutil (a process's last sample before it exits is what counts, so
the figures can be short by up to 0.1 s of each process's CPU).  Driver threads are not
named by the OS; the busiest is the main thread (listing, store, inline work), then with a
dask LocalCluster the event loop (scheduler, nannies, client) and the sqlite writer.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    root = psutil.Process(child.pid)
    seen: dict[int, tuple[str, float, float]] = {}
    threads: dict[int, tuple[float, float]] = {}
    while child.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for proc in tree:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    name = " ".join(proc.cmdline())[-50:]
                    if proc.pid == root.pid:
                        threads.update({t.id: (t.user_time, t.system_time)
                                        for t in proc.threads()})
                seen[proc.pid] = (name, times.user, times.system)
            except psutil.Error:
                pass
        time.sleep(0.1)
    wall = time.perf_counter() - started
    user = sum(u for _, u, _ in seen.values())
    system = sum(s for _, _, s in seen.values())
    for pid, (name, u, s) in seen.items():
        role = "driver" if pid == root.pid else "child"
        print(f"{role:6} {pid:7d} user {u:6.2f} s  sys {s:6.2f} s  {name}")
    busiest = sorted(threads.values(), key=sum, reverse=True)[:4]
    print("driver threads (user, sys): " + ", ".join(f"({u:.2f}, {s:.2f})" for u, s in busiest))
    print(f"total  user {user:.2f} s  sys {system:.2f} s  wall {wall:.2f} s  exit {child.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
