"""``make bench``: anonpipe against gdcmanon and ``cp -r`` on the same archives, same run.

Archives come from ``anonpipe-sample`` (deterministic).  Each command runs several times,
interleaved (A B C A B C ...) so drifting page-cache and disk state hit every command alike;
medians are reported with the ratios anonpipe/gdcmanon and anonpipe/cp, files/s, MB/s, CPU
ms per file (user+sys of the whole process tree) and peak memory (driver, and the largest
other process of the tree, i.e. a dask worker).  Results go to ``benchmarks/results/`` as
JSON so runs can be compared over time.  Timing assertions do not belong in unit tests:
the targets are checked here and printed as PASS/MISS.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pagecache import PageCache

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SETTLE_SECONDS = 3.0
#: archives whose cp -r target is also judged back to back (:func:`back_to_back`)
BACK_TO_BACK = ("ct960",)
B2B = ", back to back"  # the suffix of those rows' commands
TINY_LIMIT = 0.25  # s: a 20-file run is interpreter start-up, imports and no workers
FLOOR = "floor (system calls only)"


@dataclass(frozen=True)
class Archive:
    name: str
    args: tuple[str, ...]  # anonpipe-sample arguments


ARCHIVES = {
    "tiny20": Archive("tiny20", ("--patients", "1", "--studies", "1", "--series", "2",
                                 "--instances", "10")),
    "small2k": Archive("small2k", ("--patients", "50", "--studies", "2", "--series", "2",
                                   "--instances", "10")),
    "small20k": Archive("small20k", ("--patients", "500", "--studies", "2", "--series", "2",
                                     "--instances", "10")),
    "large200": Archive("large200", ("--patients", "10", "--studies", "1", "--series", "2",
                                     "--instances", "10", "--kind", "large-ct")),
    # a CT examination: 960 slices of 512x512, 16 bits (511 MB)
    "ct960": Archive("ct960", ("--patients", "1", "--studies", "1", "--series", "4",
                               "--instances", "240", "--kind", "large-ct")),
}


@dataclass
class Sample:
    wall: float
    cpu: float  # user + system, the whole process tree
    driver_rss_mb: float
    worker_rss_mb: float
    returncode: int
    user: float = 0.0
    system: float = 0.0  # on this VM mostly page-cache writes: noisy (see README)


@dataclass
class Result:
    archive: str
    command: str
    files: int
    megabytes: float
    samples: list[Sample] = field(default_factory=list)
    #: what the last repetition's output was checked for, and what was wrong (empty: fine)
    checked: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        """Every repetition exited 0 and the output passed its check."""
        return not self.problems and all(s.returncode == 0 for s in self.samples)

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu_ms_per_file(self) -> float:
        return statistics.median(s.cpu for s in self.samples) * 1000 / max(self.files, 1)

    @property
    def user_ms_per_file(self) -> float:
        return statistics.median(s.user for s in self.samples) * 1000 / max(self.files, 1)

    def summary(self) -> dict[str, object]:
        return {
            "archive": self.archive, "command": self.command, "files": self.files,
            "megabytes": round(self.megabytes, 1), "wall_median_s": round(self.wall, 3),
            "wall_all_s": [round(s.wall, 3) for s in self.samples],
            "files_per_s": round(self.files / self.wall, 1) if self.wall else None,
            "mb_per_s": round(self.megabytes / self.wall, 1) if self.wall else None,
            "cpu_ms_per_file": round(self.cpu_ms_per_file, 3),
            "user_ms_per_file": round(self.user_ms_per_file, 3),
            "driver_peak_rss_mb": round(max(s.driver_rss_mb for s in self.samples), 1),
            "worker_peak_rss_mb": round(max(s.worker_rss_mb for s in self.samples), 1),
            "failures": sum(1 for s in self.samples if s.returncode != 0),
            "checked": self.checked, "problems": self.problems,
        }


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and its descendants every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.driver = 0
        self.worker = 0
        self.running = True

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while self.running:
            try:
                self.driver = max(self.driver, root.memory_info().rss)
                for child in root.children(recursive=True):
                    try:
                        self.worker = max(self.worker, child.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            time.sleep(0.02)


def measure(argv: list[str], env: dict[str, str]) -> Sample:
    """Run ``argv``; wall time, CPU of the whole tree (wait4 rusage) and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    sampler.running = False
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        print(f"    ! {' '.join(argv[:3])}... exit {proc.returncode}: {err.strip()[:300]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, sampler.driver / 2**20,
                  sampler.worker / 2**20, proc.returncode, usage.ru_utime, usage.ru_stime)


def relative_files(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(dirpath, name), root)
            for dirpath, _, names in os.walk(root) for name in names}


def check_output(result: Result, archive: Path, output: Path | None) -> None:
    """What was timed must have worked: the last repetition's output has one file per input
    file (same relative paths, no leftovers), and a re-identification gives the archive
    back byte for byte.  Unmeasured; problems are printed and recorded, and a target that
    rests on an unsound row is not met."""
    if output is None:
        return
    inputs = relative_files(archive)
    if not output.is_dir():
        result.problems.append("no output folder")
        return
    outputs = relative_files(output)
    missing, extra = inputs - outputs, outputs - inputs
    result.checked = "one output per input"
    if missing:
        result.problems.append(f"{len(missing)} of {len(inputs)} files have no output")
    if extra:
        result.problems.append(f"{len(extra)} unexpected files in the output")
    if result.command == "anonpipe -d" and not missing:
        result.checked = "byte-identical to the archive"
        differ = [rel for rel in sorted(inputs)
                  if not filecmp.cmp(archive / rel, output / rel, shallow=False)]
        if differ:
            result.problems.append(f"{len(differ)} re-identified files differ from the "
                                   f"originals (first: {differ[0]})")
    elif result.command.startswith("anonpipe -e") and not missing:
        result.checked = "one output per input, none equal to its input"
        same = [rel for rel in sorted(inputs)
                if filecmp.cmp(archive / rel, output / rel, shallow=False)]
        if same:
            result.problems.append(f"{len(same)} outputs are their input unchanged")
    for problem in result.problems:
        print(f"    ! {result.archive} {result.command}: {problem}")


def tree_size(path: Path) -> tuple[int, float]:
    files, size = 0, 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, name))
    return files, size / 1e6


def _deidentify(work: Path, cert: Path) -> list[str]:
    """``anonpipe -e -r`` as every de-identifying row runs it (its store and folders added):
    no progress output, as ``gdcmanon`` prints nothing, the bench's own secret."""
    return [str(BIN / "anonpipe"), "-c", str(cert), "-e", "-r", "-E", "--secret-file",
            str(work / "secret"), "--new-secret"]


def commands(archive: Path, work: Path, outputs: Path, cert: Path, key: Path, gdcm: bool,
             scaling: bool) -> dict[str, tuple[list[str], Path | None]]:
    """name -> (argv, output folder to clear before each repetition)."""
    anon = str(BIN / "anonpipe")
    out = {name: outputs / f"out-{name}" for name in
           ("cp", "gdcmanon", "anonpipe", "anonpipe-pool", "anonpipe-w1", "anonpipe-w2", "scan", "reid",
            "gdcmanon-d", "floor")}
    cmds: dict[str, tuple[list[str], Path | None]] = {
        "cp -r": (["cp", "-r", str(archive), str(out["cp"])], out["cp"]),
        # what anonpipe -e does to the file system and nothing else (benchmarks/floor.py)
        FLOOR: ([str(BIN / "python"), str(ROOT / "benchmarks" / "floor.py"), str(archive),
                 str(out["floor"])], out["floor"]),
    }
    if gdcm:
        cmds["gdcmanon -e"] = (["gdcmanon", "-c", str(cert), "-e", "-r", "--continue",
                                str(archive), str(out["gdcmanon"])], out["gdcmanon"])
    base = _deidentify(work, cert)
    cmds["anonpipe -e"] = (base + ["--store", str(work / "store-default.sqlite"),
                                   str(archive), str(out["anonpipe"])], out["anonpipe"])
    cmds["anonpipe -e --local-pool dask"] = (
        base + ["--local-pool", "dask", "--store", str(work / "store-pool.sqlite"),
                str(archive), str(out["anonpipe-pool"])], out["anonpipe-pool"])
    cmds["anonpipe -e --workers 1"] = (
        base + ["--workers", "1", "--store", str(work / "store-w1.sqlite"), str(archive),
                str(out["anonpipe-w1"])], out["anonpipe-w1"])
    if scaling:
        cmds["anonpipe -e --workers 2"] = (
            base + ["--workers", "2", "--store", str(work / "store-w2.sqlite"), str(archive),
                    str(out["anonpipe-w2"])], out["anonpipe-w2"])
    cmds["anonpipe --scan-only"] = (
        base + ["--scan-only", "--store", str(work / "store-scan.sqlite"), str(archive),
                str(out["scan"])], None)
    cmds["anonpipe -d"] = ([anon, "-k", str(key), "-d", "-r", "-E", "--store",
                            str(work / "store-reid.sqlite"), str(out["anonpipe-w1"]),
                            str(out["reid"])], out["reid"])
    if gdcm:
        cmds["gdcmanon -d"] = (["gdcmanon", "-k", str(key), "-d", "-r", "--continue",
                                str(out["gdcmanon"]), str(out["gdcmanon-d"])], out["gdcmanon-d"])
    return cmds


def reset(work: Path, output: Path | None) -> None:
    """Clear a command's output before it runs: moved aside, not deleted (see settle)."""
    if output is not None and output.exists():
        trash = output.parent / "trash"
        trash.mkdir(exist_ok=True)
        output.rename(trash / f"{output.name}-{time.monotonic_ns()}")
    _remove_stores(work, "store-*.sqlite*")


def _remove_stores(work: Path, pattern: str) -> None:
    """Delete the stores ``pattern`` names in ``work`` (not a secret kept beside one): each
    run reads every header."""
    for store in work.glob(pattern):
        if not store.name.endswith(".secret"):
            store.unlink()


def settle(*folders: Path) -> None:
    """Delete the moved-aside outputs, unmeasured, and let the disk catch up.

    Why: on an ext4 without a journal (this machine's disk) deleting thousands of files
    makes file creation pay in system time for the next minute or more: each free inode
    the kernel considers is checked against recent deletions (``recently_deleted`` in
    ``fs/ext4/ialloc.c``; measured: the same ``gdcmanon`` run 0.7 s, or 2.5 s right after an
    ``rm -rf`` of the previous output).  Deleting between repetitions would charge that to
    whichever command runs next (:func:`quiesce` takes the rest of it away as root).
    """
    for folder in folders:
        trash = folder / "trash"
        if trash.exists():
            shutil.rmtree(trash)
    os.sync()
    time.sleep(SETTLE_SECONDS)


def quiesce(archive: Path, cache: PageCache | None) -> int:
    """Dirty pages written back and, with a ``cache`` to reset, the clean page cache
    dropped and what the commands read read back in (``benchmarks/pagecache.py`` says
    why): the state every measured command starts from.  Returns the bytes read."""
    os.sync()
    return cache.reset(archive) if cache is not None else 0


def rotated(order: list[str], rep: int) -> list[str]:
    """``order`` started ``rep`` places later, the re-identifications last (each reads
    what its de-identification wrote in the same round).

    Why: each round follows the deletion of the last one's outputs, and on an ext4
    without a journal creating files soon after deleting others costs ~0.3 ms each, more
    for the first writers after the deletion ("Twelfth round" in benchmarks/README.md);
    in a fixed order the same commands would always pay the most."""
    writers = [label for label in order if not label.endswith("-d")]
    shift = rep % len(writers) if writers else 0
    readers = [label for label in order if label.endswith("-d")]
    return writers[shift:] + writers[:shift] + readers


def one_round(cmds: dict[str, tuple[list[str], Path | None]], order: list[str], work: Path,
              env: dict[str, str], archive: Path,
              cache: PageCache | None = None) -> dict[str, Sample]:
    """Every command once, in ``order``.

    Each starts with no dirty pages (:func:`quiesce`, unmeasured): on this machine a
    writer that follows another pays for the pages the one before left, in system time
    (cp -r of ct960: 0.18-0.25 s first after a ``sync``, 1.08-1.37 s right after
    gdcmanon), so the order of the round would otherwise decide the ratios."""
    samples = {}
    for label in order:
        argv, output = cmds[label]
        reset(work, output)
        quiesce(archive, cache)
        samples[label] = measure(argv, env)
    return samples


def bench_archive(name: str, work: Path, outputs: Path, reps: int, cert: Path, key: Path,
                  gdcm: bool, env: dict[str, str],
                  cache: PageCache | None = None) -> list[Result]:
    archive = work / f"archive-{name}"
    if not archive.exists():
        subprocess.run([str(BIN / "anonpipe-sample"), str(archive), "--seed", "1",
                        *ARCHIVES[name].args], check=True, stdout=subprocess.DEVNULL)
    files, megabytes = tree_size(archive)
    print(f"\n== {name}: {files} files, {megabytes:.1f} MB, {reps} repetitions, interleaved")
    cmds = commands(archive, work, outputs, cert, key, gdcm, scaling=name == "small20k")
    results = {c: Result(name, c, files, megabytes) for c in cmds}
    order = list(cmds)
    # unmeasured warm-up: the archive into the page cache, then one round of every command.
    # Why the round: on a virtual machine the first writes into memory unused since boot (or
    # handed back to the host) cost several times more: cp -r of ct960 took 1.36 and 1.27 s
    # in the first two rounds of a run without it, 0.22-0.25 s in the three after
    warm = work / "trash" / f"warm-{name}"
    warm.parent.mkdir(exist_ok=True)
    subprocess.run(["cp", "-r", str(archive), str(warm)], check=True)
    one_round(cmds, rotated(order, 0), work, env, archive)
    settle(work, outputs)
    if cache is not None:  # what that round read, read back after each drop
        cache.remember()
    for rep in range(reps):
        for label, sample in one_round(cmds, rotated(order, rep), work, env, archive,
                                       cache).items():
            results[label].samples.append(sample)
        print(f"  repetition {rep + 1}/{reps} done")
        settle(work, outputs)
    for label, (_, output) in cmds.items():
        if label != "anonpipe --scan-only":  # it writes nothing (its folder is a name only)
            check_output(results[label], archive, output)
    if outputs != work:  # a tmpfs holds its files in memory: give it back
        for _, output in cmds.values():
            reset(work, output)
        settle(outputs)
    paired = (back_to_back(name, archive, work, outputs, reps, cert, env, cache)
              if name in BACK_TO_BACK else [])
    return list(results.values()) + paired


def back_to_back(name: str, archive: Path, work: Path, outputs: Path, reps: int, cert: Path,
                 env: dict[str, str], cache: PageCache | None = None) -> list[Result]:
    """``cp -r`` and ``anonpipe -e`` in pairs, each right after the deletion of its own last
    output and :func:`quiesce`, with no pause: the first pair unmeasured.

    Why a second look at the ``cp -r`` target: the interleaved rounds write into memory
    freed seconds before (:func:`settle` pauses), which this VM may have handed back to
    its host; every command then pays the same extra time to fault it in again, which
    brings the ratios closer to 1.  Here each command writes into the memory its own last
    output freed a moment before, as a rerun into the same folder does, and anonpipe's own
    costs (its start, pass 1, the Python of each file) weigh their share of a shorter
    ``cp -r`` (benchmarks/README.md has both, run after run).  Where the cache is dropped
    before each command the two ways measure nearly the same state."""
    files, megabytes = tree_size(archive)
    base = _deidentify(work, cert)
    store = work / "store-b2b.sqlite"
    cmds = {"cp -r" + B2B: (["cp", "-r", str(archive), str(outputs / "out-cp-b2b")],
                            outputs / "out-cp-b2b"),
            "anonpipe -e" + B2B: (base + ["--store", str(store), str(archive),
                                          str(outputs / "out-anonpipe-b2b")],
                                  outputs / "out-anonpipe-b2b")}
    results = {label: Result(name, label, files, megabytes) for label in cmds}
    print(f"  {name}: cp -r and anonpipe -e back to back, {reps} pairs")
    for pair in range(reps + 1):
        for label, (argv, output) in cmds.items():
            shutil.rmtree(output, ignore_errors=True)
            _remove_stores(work, store.name + "*")
            quiesce(archive, cache)
            sample = measure(argv, env)
            if pair:
                results[label].samples.append(sample)
    for label, (_, output) in cmds.items():
        check_output(results[label], archive, output)
        shutil.rmtree(output, ignore_errors=True)
    return list(results.values())


def print_table(results: list[Result]) -> None:
    by_key = {(r.archive, r.command): r for r in results}
    header = (f"{'archive':9} {'command':26} {'wall s':>8} {'files/s':>9} {'MB/s':>7} "
              f"{'CPU ms/f':>9} {'user ms/f':>9} {'drv MB':>7} {'wrk MB':>7} {'/gdcmanon':>9} "
              f"{'/cp':>6}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        paired = r.command.endswith(B2B)  # compared with the cp -r of its own pairs
        gd = None if paired else by_key.get(
            (r.archive, "gdcmanon -e" if "-d" not in r.command else "gdcmanon -d"))
        cp = by_key.get((r.archive, "cp -r" + (B2B if paired else "")))
        ratio_g = f"{r.wall / gd.wall:9.2f}" if gd and r.command.startswith("anonpipe") else " " * 9
        compared = r.command.startswith("anonpipe") or r.command == FLOOR
        ratio_c = f"{r.wall / cp.wall:6.2f}" if cp and compared else " " * 6
        s = r.summary()
        print(f"{r.archive:9} {r.command:26} {r.wall:8.3f} {s['files_per_s']:>9} "
              f"{s['mb_per_s']:>7} {r.cpu_ms_per_file:9.3f} {r.user_ms_per_file:9.3f} "
              f"{s['driver_peak_rss_mb']:>7} "
              f"{s['worker_peak_rss_mb']:>7} {ratio_g} {ratio_c}")


def targets(results: list[Result]) -> list[tuple[str, bool, str]]:
    """Issue 6's targets, judged on this run's medians; a target whose rows failed a
    repetition or their output check (:func:`check_output`) is not met."""
    by_key = {(r.archive, r.command): r for r in results}
    checks: list[tuple[str, bool, str]] = []

    def get(archive: str, command: str) -> Result | None:
        return by_key.get((archive, command))

    def judge(label: str, met: bool, detail: str, *rows: Result) -> None:
        unsound = [f"{r.archive} {r.command}" for r in rows if not r.sound]
        if unsound:
            detail += f" (unsound, not counted: {', '.join(unsound)})"
        checks.append((label, met and not unsound, detail))

    a, g = get("small20k", "anonpipe -e"), get("small20k", "gdcmanon -e")
    if a and g:
        judge("20k: anonpipe >= 1.5x faster than gdcmanon", g.wall / a.wall >= 1.5,
              f"speed-up {g.wall / a.wall:.2f}x", a, g)
    w1 = get("small20k", "anonpipe -e --workers 1") or get("small2k", "anonpipe -e --workers 1")
    if w1:
        judge("--workers 1 <= 0.6 ms CPU per small file", w1.cpu_ms_per_file <= 0.6,
              f"{w1.cpu_ms_per_file:.3f} ms", w1)
    a, g = get("small2k", "anonpipe -e"), get("small2k", "gdcmanon -e")
    if a and g:
        judge("2k: no slower than gdcmanon", a.wall <= g.wall,
              f"{a.wall:.2f} s vs {g.wall:.2f} s", a, g)
    scan = get("small20k", "anonpipe --scan-only") or get("small2k", "anonpipe --scan-only")
    if scan:
        rate = scan.files / scan.wall
        judge("pass 1 >= 3000 files/s", rate >= 3000, f"{rate:.0f} files/s", scan)
    a, c = get("large200", "anonpipe -e"), get("large200", "cp -r")
    if a and c:
        judge("large files within 2x of cp -r", a.wall <= 2 * c.wall,
              f"{a.wall / c.wall:.2f}x", a, c)
    a, g, c = get("ct960", "anonpipe -e"), get("ct960", "gdcmanon -e"), get("ct960", "cp -r")
    if a and g:
        judge("CT 960: anonpipe >= 1.5x faster than gdcmanon", g.wall / a.wall >= 1.5,
              f"speed-up {g.wall / a.wall:.2f}x", a, g)
    if a and c:
        judge("CT 960: within 2x of cp -r", a.wall <= 2 * c.wall, f"{a.wall / c.wall:.2f}x",
              a, c)
    a, c = get("ct960", "anonpipe -e" + B2B), get("ct960", "cp -r" + B2B)
    if a and c:
        judge("CT 960: within 2x of cp -r, back to back", a.wall <= 2 * c.wall,
              f"{a.wall / c.wall:.2f}x ({a.wall:.3f} vs {c.wall:.3f} s)", a, c)
    for archive in ("small20k", "ct960"):
        a, g = get(archive, "anonpipe -e"), get(archive, "gdcmanon -e")
        if a and g:
            judge(f"{archive}: CPU per file <= gdcmanon's",
                  a.cpu_ms_per_file <= g.cpu_ms_per_file,
                  f"{a.cpu_ms_per_file:.3f} vs {g.cpu_ms_per_file:.3f} ms", a, g)
    with_workers = [r for r in results if r.command.startswith("anonpipe")
                    and max(s.worker_rss_mb for s in r.samples) > 0]
    if with_workers:  # else no worker process ran (every pass inline): nothing to check
        worst = max(max(s.worker_rss_mb for s in r.samples) for r in with_workers)
        judge("peak memory per worker < 200 MB", worst < 200, f"{worst:.0f} MB", *with_workers)
    a, g = get("tiny20", "anonpipe -e"), get("tiny20", "gdcmanon -e")
    if a:
        detail = f"{a.wall:.3f} s" + (f" (gdcmanon {g.wall:.3f} s)" if g else "")
        judge(f"20 files: start-up does not dominate, <= {TINY_LIMIT} s", a.wall <= TINY_LIMIT,
              detail, a)
    return checks


def floors(results: list[Result]) -> list[str]:
    """Per archive: how far the floor (benchmarks/floor.py) is from ``cp -r`` (what the
    design costs) and anonpipe from the floor (what the per-file computation costs)."""
    by_key = {(r.archive, r.command): r for r in results}
    lines = []
    for archive in dict.fromkeys(r.archive for r in results):
        floor, cp = by_key.get((archive, FLOOR)), by_key.get((archive, "cp -r"))
        anon = by_key.get((archive, "anonpipe -e"))
        if floor and cp and anon:
            lines.append(f"{archive}: floor {floor.wall:.3f} s = {floor.wall / cp.wall:.2f}x cp -r; "
                         f"anonpipe -e {anon.wall:.3f} s = {anon.wall / floor.wall:.2f}x the floor "
                         f"(CPU {floor.cpu_ms_per_file:.3f} vs {anon.cpu_ms_per_file:.3f} ms/file)")
    return lines


def scaling(results: list[Result]) -> list[str]:
    """Speed-up with --workers N (N = 1, 2) over the same archive, and what bounds it."""
    by_key = {(r.archive, r.command): r for r in results}
    lines = []
    for archive in dict.fromkeys(r.archive for r in results):
        one = by_key.get((archive, "anonpipe -e --workers 1"))
        two = by_key.get((archive, "anonpipe -e --workers 2"))
        if one and two:
            lines.append(f"{archive}: --workers 1 {one.wall:.2f} s, --workers 2 {two.wall:.2f} s "
                         f"-> speed-up {one.wall / two.wall:.2f}x (CPU {one.cpu_ms_per_file:.3f} "
                         f"-> {two.cpu_ms_per_file:.3f} ms/file)")
    return lines


def _mount(folder: Path) -> tuple[str, str]:
    """The device and type of the file system ``folder`` is on (``/proc/mounts``, longest
    match)."""
    best, device, kind = "", "unknown", "unknown"
    resolved = str(folder.resolve())
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            mount_point = fields[1]
            inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, device, kind = mount_point, fields[0], fields[2]
    return device, kind


def _file_system(folder: Path) -> str:
    """The type of the file system ``folder`` is on."""
    return _mount(folder)[1]


def program_roots() -> list[Path]:
    """Where the measured commands' code lives: this environment, its interpreter, this
    checkout's packages, and the system's programs and libraries (gdcmanon, cp)."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), ROOT / "pipeline", ROOT / "tasks",
             ROOT / "configs", Path("/usr"), Path("/etc")}
    return sorted(root for root in roots if root.is_dir())


def _journaled(folder: Path) -> bool | None:
    """Whether the ext4 file system ``folder`` is on keeps a journal; None when it is not
    an ext4 or the kernel does not say.  Without one, creating files soon after deleting
    others costs ~0.3 ms each (benchmarks/journaled.py says why)."""
    device, kind = _mount(folder)
    task = Path("/sys/fs/ext4") / Path(device).name / "journal_task"
    if kind != "ext4" or not task.is_file():
        return None
    return task.read_text().strip() != "<none>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archives", default=os.environ.get(
        "BENCH_ARCHIVES", "tiny20,small2k,large200,ct960,small20k"))
    parser.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--outputs", type=Path, default=os.environ.get("BENCH_OUTPUTS"),
                        help="where the commands write (default: --work); a tmpfs such as "
                             "/dev/shm/anonpipe-bench takes the disk's cost of creating "
                             "files out of the comparison (its outputs are deleted after "
                             "each archive)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    outputs: Path = args.outputs or args.work
    outputs.mkdir(parents=True, exist_ok=True)
    journaled = _journaled(outputs)
    print(f"outputs written to {outputs} ({_file_system(outputs)}"
          f"{', no journal' if journaled is False else ''})")
    import pagecache  # benchmarks/pagecache.py, beside this script
    import provenance  # benchmarks/provenance.py: the commit measured (read before, not after)

    code = provenance.code_version(ROOT)
    cache = pagecache.PageCache(program_roots()) if pagecache.available() else None
    if cache is not None:
        print("  each command starts after the clean page cache is dropped and the archive "
              "and the programs are read back in (benchmarks/pagecache.py)")
    elif journaled is False:
        print("  the page cache cannot be dropped (root needed): on an ext4 without a "
              "journal, creating files soon after deleting others costs up to ~0.3 ms "
              "each, unevenly; `make bench-journaled` writes to a journaled one")
    cert, key = args.work / "cert.pem", args.work / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "365", "-subj", "/CN=bench", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
    # what an installed anonpipe has: compiled bytecode (pip compiles at install; an editable
    # checkout run with PYTHONDONTWRITEBYTECODE=1 would recompile every module on every run)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pipeline"),
                    str(ROOT / "tasks")], check=True)
    gdcm = shutil.which("gdcmanon") is not None
    if not gdcm:
        print("gdcmanon not found: its rows and ratios are missing (make test installs it)")
    env = {**os.environ, "ANONPIPE_STATE_DIR": str(args.work / "state")}
    load_start = os.getloadavg()  # other work on the machine skews every figure: recorded
    results: list[Result] = []
    for name in args.archives.split(","):
        results += bench_archive(name.strip(), args.work, outputs, args.reps, cert, key, gdcm,
                                 env, cache)
    print_table(results)
    checks = targets(results)
    print()
    for label, ok, detail in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {label}: {detail}")
    notes = scaling(results)
    for line in notes:
        print(f"  scaling  {line}")
    floor_notes = floors(results)
    for line in floor_notes:
        print(f"  floor  {line}")
    import pixels  # benchmarks/pixels.py, beside this script: the pixel path (--pixels clean)

    pixel_figures = pixels.bench(args.work)
    print("  " + pixels.line(pixel_figures))
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = args.results / f"bench-{stamp}.json"
    path.write_text(json.dumps({
        "when": stamp, "code": code,
        "machine": {"cpus": os.cpu_count(), **provenance.interpreter(),
                    "platform": platform.platform()},
        "outputs": {"folder": str(outputs), "file_system": _file_system(outputs),
                    "journal": journaled, "caches_dropped": cache is not None},
        "results": [r.summary() for r in results],
        "targets": [{"target": t, "met": ok, "measured": d} for t, ok, d in checks],
        "scaling": notes, "floor": floor_notes, "pixels": pixel_figures, "load_average": {"start": load_start, "end": os.getloadavg()},
        "raw": [asdict(s) | {"archive": r.archive, "command": r.command}
                for r in results for s in r.samples],
    }, indent=2))
    print(f"\nresults: {path} (commit {code['commit']}"
          f"{', with uncommitted changes' if code['changed'] else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
