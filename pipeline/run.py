"""Carry out a validated run: one file inline, or a directory through the pipeline."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline.exits import Exit
from pipeline.job import Mode, TreeJob
from pipeline.options import PrintJobScript, Run, SingleFileRun
from tasks.errors import AnonpipeError
from tasks.fileio import output_policy
from tasks.filemeta import PREAMBLE_NOTE, preamble_data


class FileNotWritten(AnonpipeError):
    """Single-file mode: the file failed (exit 1, as gdcmanon), named by its file name."""


def execute(run: Run) -> int:
    if isinstance(run, PrintJobScript):
        from pipeline.cluster import print_job_script

        print(print_job_script(run.cluster, run.driver_command))
        return Exit.OK
    if isinstance(run, SingleFileRun):
        return _single(run)
    return _tree(run)


def _single(run: SingleFileRun) -> int:
    """gdcmanon's single-file mode: no store, no cluster; a failure leaves no output."""
    started = time.perf_counter()
    try:
        with output_policy() as policy:
            policy.like(run.src)  # never more readable than the input
            written = run.operation(run.src, run.dst)
    except AnonpipeError as exc:  # a refused file is no usage error: exit 1 whatever it is
        raise FileNotWritten(f"{run.src.name}: {exc}") from None
    if run.mode is Mode.DEIDENTIFY and run.verbosity >= 1 and _preamble_has_data(run.src):
        print(f"anonpipe: warning: {PREAMBLE_NOTE}", file=sys.stderr)
    if run.verbosity >= 2:
        print(f"anonpipe: {run.mode}: wrote {written} bytes in "
              f"{time.perf_counter() - started:.3f} s", file=sys.stderr)
    return Exit.OK


def _preamble_has_data(src: Path) -> bool:
    try:
        with open(src, "rb") as stream:
            return preamble_data(stream.read(132)) is not None
    except OSError:
        return False


def _tree(job: TreeJob) -> int:
    from pipeline.runner import run_tree
    from pipeline.signals import terminate_as_interrupt

    with terminate_as_interrupt():
        summary = run_tree(job)
    return Exit.OK if summary.ok else Exit.FAILED
