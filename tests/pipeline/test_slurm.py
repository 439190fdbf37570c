"""anonpipe against a real single-node SLURM (tests/pipeline/slurm.py): worker jobs that
are submitted, lost, pending or refused, and a driver that is interrupted."""

from __future__ import annotations

import subprocess
import time

from tests.pipeline.slurm import Slurm


def test_the_test_slurm_runs_a_batch_job(slurm: Slurm) -> None:
    """The fixture's SLURM accepts a job and runs it on its node."""
    out = slurm.root / "hello.out"
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-o", str(out), "--wrap", "echo hello from $SLURM_JOB_ID"],
        env=slurm.env, capture_output=True, text=True, timeout=30, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 30
    while job_id in slurm.squeue() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert out.read_text() == f"hello from {job_id}\n"
