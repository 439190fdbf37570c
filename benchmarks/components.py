"""User CPU per file of each step a worker runs, on a generated archive (where the time goes).

    .venv/bin/python benchmarks/components.py [ARCHIVE] [--files N]

ARCHIVE defaults to ``build/bench/archive-small2k`` (``make bench`` makes it).  Each step runs
over the first N files (default 1000) after one warm-up call; the files are read into memory
first, except for the steps that read them (``read_header``, ``scan_file``, ``read_split``),
whose page-cache reads are then part of the figure.  What it shows: the pass-1 header scan
and its loop over a parsed header (compiled, and the Python loop it falls back to), the
parse alone (header only, and whole file), pass 2's read of a large file up to its pixel
data, and the pass-2 de-identification in memory (AES-256, RSA-2048
envelope to ``build/bench/cert.pem``, basic profile), i.e. the worker's share of the
per-file cost that ``benchmarks/README.md`` decomposes.

With ``--outputs DIR`` it also runs pass 2's batches for real (``tasks.batch.run_batch``,
batches of 60, outputs written under DIR and deleted between rounds, ``--reps`` rounds
alternating): outputs written as each is made (a stage of one) against the default stage
(``tasks.batch.STAGE_FILES``), user and system CPU per file, medians.

With ``--floor DIR`` it also measures, for the files that split at their pixel data, what
pass 2 does per file that no faster de-identification could leave out, written under DIR
(in the same alternating rounds as the batches, deleted between them): the same ``stat``, ``open`` and reads of the
head, one envelope (RSA and AES) of as many bytes as the head holds before the pixel data,
a nameless output, as many bytes written before the pixel data as the real output holds,
the pixel data copied by the kernel, the output linked in.  Against the batches of
``--outputs``, it bounds what a compiled per-file core could save.

With ``--python-loops`` (and ``--outputs``) the staged batches run a third way in the same
rounds: with the Python loops of the de-identification walk and the render instead of the
compiled ones (``tasks/_editloops.c``).

With ``--first-reads N [N ...]`` it makes (``prepare``, nothing written) the outputs of the
files that split at their pixel data with each first read of a file's head
(``tasks.pixeltail.MIN_FIRST_READ``, bytes), ``--reps`` rounds alternating: user and system
CPU per file, medians.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
from tasks.dicomio import DicomFile, read_dicom, read_header
from tasks.fileio import FileRange
from tasks.inventory import _top_facts, replaced_tags, scan_file, top_facts
from tasks.model import Batch, WorkItem
from tests.loops import python_loops

T = TypeVar("T")


def cpu_ms(before: resource.struct_rusage, after: resource.struct_rusage, files: int
           ) -> tuple[float, float]:
    """User and system CPU per file, in ms, between two ``getrusage`` samples."""
    return ((after.ru_utime - before.ru_utime) * 1000 / files,
            (after.ru_stime - before.ru_stime) * 1000 / files)


def per_file_ms(step: Callable[[T], object], inputs: list[T]) -> float:
    step(inputs[0])
    started = time.process_time()
    for item in inputs:
        step(item)
    return (time.process_time() - started) * 1000 / len(inputs)


def header_loop(loop: Callable[..., object], replaced: frozenset[int]
                ) -> Callable[[DicomFile], object]:
    """Pass 1's loop over a parsed header (``top_facts``: compiled where it can be, or
    ``_top_facts``: Python), into a fresh row and sets as :func:`scan_file` gives it."""
    return lambda df: loop(df, replaced, {}, set(), set())


def split_read(path: Path) -> object:
    """Pass 2's read of a large file up to its pixel data (``tasks.pixeltail.read_split``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return tasks.pixeltail.read_split(fd, os.fstat(fd).st_size, True)
    finally:
        os.close(fd)


def batches_ms(archive: Path, paths: list[Path], settings: DeidentifySettings, outputs: Path,
               stage: int, batch: int = 60, python_loops_on: bool = False
               ) -> tuple[float, float]:
    """User and system CPU per file of pass 2's batches over ``paths``, written under
    ``outputs`` with a stage of ``stage`` files (the outputs deleted first, unmeasured);
    ``python_loops_on``: with the Python loops of the walk and the render, not the compiled
    ones (tasks/_editloops.c)."""
    shutil.rmtree(outputs, ignore_errors=True)
    os.sync()
    items = tuple(WorkItem(str(p), str(outputs / p.relative_to(archive)),
                           str(p.relative_to(archive)), p.stat().st_size) for p in paths)
    operation = Deidentify(settings)
    default, tasks.batch.STAGE_FILES = tasks.batch.STAGE_FILES, stage
    try:
        with python_loops() if python_loops_on else contextlib.nullcontext():
            before = resource.getrusage(resource.RUSAGE_SELF)
            for start in range(0, len(items), batch):
                tasks.batch.run_batch(Batch(start, items[start:start + batch], str(outputs),
                                            sync=False), operation)
            after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        tasks.batch.STAGE_FILES = default
    return cpu_ms(before, after, len(items))


#: one output of the floor: its input, the bytes before its pixel data, the pixel data
_Shape = tuple[str, int, int, list[FileRange]]


def output_shapes(paths: list[Path], settings: DeidentifySettings) -> list[_Shape]:
    """What each real output of ``paths`` that splits at its pixel data holds (unmeasured):
    the input, the length of its head before the pixel data, the bytes the output holds
    before its pixel data, and the pixel data's ranges in the input."""
    operation = Deidentify(settings)
    shapes = []
    for path in paths:
        staged = operation.prepare(str(path))
        try:
            pieces = staged.pieces
            ranges = [p for p in pieces if isinstance(p, FileRange)]
            if ranges and not isinstance(pieces, bytes):
                written = sum(len(p) for p in pieces if not isinstance(p, FileRange))
                shapes.append((str(path), ranges[0].offset, written, ranges))
        finally:
            staged.close()
    return shapes


def floor_ms(shapes: list[_Shape], encryptor: EnvelopeEncryptor, outputs: Path
             ) -> tuple[float, float]:
    """User and system CPU per file of the floor (module docstring), outputs under
    ``outputs`` (deleted first, unmeasured)."""
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    os.sync()
    folder = os.open(outputs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        for index, (src, head, written, ranges) in enumerate(shapes):
            os.stat(src)
            fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fstat(fd)
                data = os.pread(fd, max(head, tasks.pixeltail.MIN_FIRST_READ), 0)
                sealed = encryptor.encrypt(data[:head])
                out = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600,
                              dir_fd=folder)
                try:
                    os.writev(out, [sealed, bytes(max(written - len(sealed), 0))])
                    for part in ranges:
                        done = 0
                        while done < part.length:
                            done += os.copy_file_range(fd, out, part.length - done,
                                                       part.offset + done)
                    os.link(f"/proc/self/fd/{out}", f"{index}.dcm", dst_dir_fd=folder)
                finally:
                    os.close(out)
            finally:
                os.close(fd)
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(folder)
    return cpu_ms(before, after, len(shapes))


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
    return cpu_ms(before, after, len(paths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", nargs="?", type=Path,
                        default=ROOT / "build" / "bench" / "archive-small2k")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--outputs", type=Path, help="also run pass 2's batches, written here")
    parser.add_argument("--reps", type=int, default=5,
                        help="rounds of the batches (--outputs) or first reads (--first-reads)")
    parser.add_argument("--floor", type=Path, metavar="DIR",
                        help="also measure pass 2's floor per file, written under DIR")
    parser.add_argument("--first-reads", type=int, nargs="+", metavar="BYTES",
                        help="also make the outputs with each first read of a file's head")
    parser.add_argument("--python-loops", action="store_true",
                        help="with --outputs, also the staged batches with the Python loops "
                        "of the walk and the render")
    args = parser.parse_args()
    paths = sorted(p for p in args.archive.rglob("*") if p.is_file())[:args.files]
    if not paths:
        print(f"no files under {args.archive} (run make bench first)", file=sys.stderr)
        return 2
    datas = [p.read_bytes() for p in paths]
    cert = ROOT / "build" / "bench" / "cert.pem"
    settings = DeidentifySettings(secret=b"s" * 32, profile="basic", encryptor=EnvelopeEncryptor(
        certificates=(load_certificate(cert),)))
    headers = [read_dicom(d, stop_at_pixels=True, private_runs=True) for d in datas]
    replaced = replaced_tags()
    steps: list[tuple[str, float]] = [
        ("pass 1: scan_file (read header, parse, row)", per_file_ms(scan_file, paths)),
        ("  of it: read_header (read + parse to pixels)",
         per_file_ms(lambda p: read_header(p, private_runs=True), paths)),
        ("  of it: the header loop (tasks/_inventory.c)",
         per_file_ms(header_loop(top_facts, replaced), headers)),
        ("  the same loop in Python (_top_facts)",
         per_file_ms(header_loop(_top_facts, replaced), headers)),
        ("parse only, header (in memory)",
         per_file_ms(lambda d: read_dicom(d, stop_at_pixels=True, private_runs=True), datas)),
        ("parse only, whole file (in memory)",
         per_file_ms(lambda d: read_dicom(d, private_runs=True), datas)),
        ("pass 2: deidentify_parts (in memory, encrypted)",
         per_file_ms(lambda d: deidentify_parts(d, settings), datas)),
    ]
    large = [p for p, d in zip(paths, datas, strict=True)
             if len(d) >= tasks.pixeltail.SPLIT_FROM]
    if large:
        steps.append(("pass 2: read_split (read to the pixel data; large files)",
                      per_file_ms(split_read, large)))
    print(f"{len(paths)} files of {args.archive}, user CPU per file:")
    for name, ms in steps:
        print(f"  {name:50} {ms:.3f} ms")
    rounds: dict[str, Callable[[], tuple[float, float]]] = {}
    if args.outputs is not None:
        for name, stage in {"written as made (stage of 1)": 1,
                            f"staged ({tasks.batch.STAGE_FILES} files)":
                                tasks.batch.STAGE_FILES}.items():
            rounds[name] = functools.partial(batches_ms, args.archive, paths, settings,
                                             args.outputs, stage)
        if args.python_loops:
            rounds["staged, Python loops (no tasks/_editloops.c)"] = functools.partial(
                batches_ms, args.archive, paths, settings, args.outputs,
                tasks.batch.STAGE_FILES, python_loops_on=True)
    if args.floor is not None:
        shapes = output_shapes(paths, settings)
        if not shapes:
            print("no file splits at its pixel data: no floor to measure")
        else:
            assert settings.encryptor is not None
            rounds[f"floor: syscalls, RSA and AES only ({len(shapes)} files)"] = (
                functools.partial(floor_ms, shapes, settings.encryptor, args.floor))
    if rounds:
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in rounds}
        for run in rounds.values():
            run()  # unmeasured warm-up
        for _ in range(args.reps):
            for name, run in rounds.items():
                samples[name].append(run())
        for folder in (args.outputs, args.floor):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        print(f"pass 2 written, CPU per file (median of {args.reps}, rounds alternating; "
              "user / system):")
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
