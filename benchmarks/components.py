"""User CPU per file of each step a worker runs, on a generated archive (where the time goes).

    .venv/bin/python benchmarks/components.py [ARCHIVE] [--files N]

ARCHIVE defaults to ``build/bench/archive-small2k`` (``make bench`` makes it).  Each step runs
over the first N files (default 1000) after one warm-up call; the files are read into memory
first, except for the steps that read them (``read_header``, ``scan_file``), whose page-cache
reads are then part of the figure.  What it shows: the pass-1 header scan, the parse alone
(header only, and whole file), and the pass-2 de-identification in memory (AES-256, RSA-2048
envelope to ``build/bench/cert.pem``, basic profile), i.e. the worker's share of the
per-file cost that ``benchmarks/README.md`` decomposes.

With ``--outputs DIR`` it also runs pass 2's batches for real (``tasks.batch.run_batch``,
batches of 60, outputs written under DIR and deleted between rounds, ``--reps`` rounds
alternating): outputs written as each is made (a stage of one) against the default stage
(``tasks.batch.STAGE_FILES``), user and system CPU per file, medians.

With ``--first-reads N [N ...]`` it makes (``prepare``, nothing written) the outputs of the
files that split at their pixel data with each first read of a file's head
(``tasks.pixeltail.MIN_FIRST_READ``, bytes), ``--reps`` rounds alternating: user and system
CPU per file, medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tasks.batch
import tasks.pixeltail
from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import Deidentify, DeidentifySettings, deidentify_parts
from tasks.dicomio import read_dicom, read_header
from tasks.inventory import scan_file
from tasks.model import Batch, WorkItem

T = TypeVar("T")


def per_file_ms(step: Callable[[T], object], inputs: list[T]) -> float:
    step(inputs[0])
    started = time.process_time()
    for item in inputs:
        step(item)
    return (time.process_time() - started) * 1000 / len(inputs)


def batches_ms(archive: Path, paths: list[Path], settings: DeidentifySettings, outputs: Path,
               stage: int, batch: int = 60) -> tuple[float, float]:
    """User and system CPU per file of pass 2's batches over ``paths``, written under
    ``outputs`` with a stage of ``stage`` files (the outputs deleted first, unmeasured)."""
    shutil.rmtree(outputs, ignore_errors=True)
    os.sync()
    items = tuple(WorkItem(str(p), str(outputs / p.relative_to(archive)),
                           str(p.relative_to(archive)), p.stat().st_size) for p in paths)
    operation = Deidentify(settings)
    default, tasks.batch.STAGE_FILES = tasks.batch.STAGE_FILES, stage
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        for start in range(0, len(items), batch):
            tasks.batch.run_batch(Batch(start, items[start:start + batch], str(outputs),
                                        sync=False), operation)
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        tasks.batch.STAGE_FILES = default
    return ((after.ru_utime - before.ru_utime) * 1000 / len(items),
            (after.ru_stime - before.ru_stime) * 1000 / len(items))


def first_read_ms(paths: list[Path], settings: DeidentifySettings, first_read: int
                  ) -> tuple[float, float]:
    """User and system CPU per file of making (not writing) the outputs of ``paths`` with
    the head of each file read first in ``first_read`` bytes (at least)."""
    operation = Deidentify(settings)
    default = tasks.pixeltail.MIN_FIRST_READ
    tasks.pixeltail.MIN_FIRST_READ = tasks.pixeltail._first_read = first_read
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        for path in paths:
            operation.prepare(str(path)).close()
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        tasks.pixeltail.MIN_FIRST_READ = tasks.pixeltail._first_read = default
    return ((after.ru_utime - before.ru_utime) * 1000 / len(paths),
            (after.ru_stime - before.ru_stime) * 1000 / len(paths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", nargs="?", type=Path,
                        default=ROOT / "build" / "bench" / "archive-small2k")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--outputs", type=Path, help="also run pass 2's batches, written here")
    parser.add_argument("--reps", type=int, default=5,
                        help="rounds of the batches (--outputs) or first reads (--first-reads)")
    parser.add_argument("--first-reads", type=int, nargs="+", metavar="BYTES",
                        help="also make the outputs with each first read of a file's head")
    args = parser.parse_args()
    paths = sorted(p for p in args.archive.rglob("*") if p.is_file())[:args.files]
    if not paths:
        print(f"no files under {args.archive} (run make bench first)", file=sys.stderr)
        return 2
    datas = [p.read_bytes() for p in paths]
    cert = ROOT / "build" / "bench" / "cert.pem"
    settings = DeidentifySettings(secret=b"s" * 32, profile="basic", encryptor=EnvelopeEncryptor(
        certificates=(load_certificate(cert),)))
    steps: list[tuple[str, float]] = [
        ("pass 1: scan_file (read header, parse, row)", per_file_ms(scan_file, paths)),
        ("  of it: read_header (read + parse to pixels)",
         per_file_ms(lambda p: read_header(p, private_runs=True), paths)),
        ("parse only, header (in memory)",
         per_file_ms(lambda d: read_dicom(d, stop_at_pixels=True, private_runs=True), datas)),
        ("parse only, whole file (in memory)",
         per_file_ms(lambda d: read_dicom(d, private_runs=True), datas)),
        ("pass 2: deidentify_parts (in memory, encrypted)",
         per_file_ms(lambda d: deidentify_parts(d, settings), datas)),
    ]
    print(f"{len(paths)} files of {args.archive}, user CPU per file:")
    for name, ms in steps:
        print(f"  {name:50} {ms:.3f} ms")
    if args.outputs is not None:
        stages = {"written as made (stage of 1)": 1,
                  f"staged ({tasks.batch.STAGE_FILES} files)": tasks.batch.STAGE_FILES}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in stages}
        batches_ms(args.archive, paths, settings, args.outputs, 1)  # unmeasured warm-up
        for _ in range(args.reps):
            for name, stage in stages.items():
                samples[name].append(batches_ms(args.archive, paths, settings, args.outputs,
                                                stage))
        shutil.rmtree(args.outputs, ignore_errors=True)
        print(f"pass 2 batches written under {args.outputs}, CPU per file "
              f"(median of {args.reps}; user / system):")
        for name, values in samples.items():
            user = statistics.median(v[0] for v in values)
            system = statistics.median(v[1] for v in values)
            print(f"  {name:50} {user:.3f} / {system:.3f} ms")
    if args.first_reads:
        reads: dict[int, list[tuple[float, float]]] = {size: [] for size in args.first_reads}
        for _ in range(args.reps):
            for size in args.first_reads:
                reads[size].append(first_read_ms(paths, settings, size))
        print(f"outputs made, not written, CPU per file (median of {args.reps}; user / system):")
        for size, values in reads.items():
            user = statistics.median(v[0] for v in values)
            system = statistics.median(v[1] for v in values)
            print(f"  {'first read of ' + str(size) + ' bytes':50} {user:.3f} / {system:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
