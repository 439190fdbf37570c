"""SIGKILL the driver part-way, rerun the same command: exactly the uninterrupted outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.fileio import TEMP_MARKER
from tests.conftest import ANONPIPE, REPO
from tests.pipeline.conftest import FILES, tree_digest


def _driver(src: Path, out: Path, store: Path, workers: int, delay: float,
            pool: str = "dask") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipeline.driver", str(src), str(out), str(store),
         str(workers), str(delay), pool],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def _wait_group_gone(pgid: int, timeout: float = 20) -> None:
    """Worker processes of a killed driver exit by themselves (else: killed, and fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)  # our own process group: clean up, then fail
    pytest.fail("processes of the killed driver outlived it")


@pytest.mark.parametrize(("workers", "pool"), [(0, "dask"), (2, "dask"), (2, "processes")])
def test_sigkill_of_the_driver_then_rerun(workers: int, pool: str, archive: Path,
                                          reference: dict[str, str], tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    proc = _driver(archive, out, store, workers, 0.03, pool)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.rglob("*.dcm"))) >= 30:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must notice
    proc.communicate()
    written = len(list(out.rglob("*.dcm")))
    assert 30 <= written < FILES
    _wait_group_gone(proc.pid)

    rerun = _driver(archive, out, store, workers, 0.03, pool)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["done"] + summary["skipped"] == FILES
    assert summary["skipped"] > 0  # the journal of the killed run was kept
    assert not list(out.rglob(f"*{TEMP_MARKER}*"))
    assert tree_digest(out) == reference


FINGERPRINT = """
from pipeline.plan import op_fingerprint
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.profile import load_profile
print(op_fingerprint(Deidentify(DeidentifySettings(secret=b"k" * 32,
                                                   profile=load_profile("basic")))))
"""


def test_operation_fingerprint_is_stable_across_processes() -> None:
    seen = set()
    for seed in ("1", "2", "3"):
        proc = subprocess.run([sys.executable, "-c", FINGERPRINT], capture_output=True,
                              text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        seen.add(proc.stdout.strip())
    assert len(seen) == 1


def test_the_same_command_twice_resumes(archive: Path, tmp_path: Path) -> None:
    command = [ANONPIPE, "-e", "--irreversible", "-r",
               "--workers", "0", str(archive), str(tmp_path / "out")]
    env = {**os.environ, "ANONPIPE_STATE_DIR": str(tmp_path / "state")}
    reports = []
    for _ in range(2):
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        path = proc.stderr.strip().splitlines()[-1].removeprefix("report: ")
        reports.append(json.loads(Path(path).read_text()))
    assert reports[0]["counts"]["written"] == FILES
    assert (reports[1]["counts"]["written"], reports[1]["counts"]["already_done"]) == (0, FILES)


def test_a_rerun_redoes_only_the_outputs_gone_or_cut(archive: Path, tmp_path: Path) -> None:
    """Done files come back from the store as a count (their outputs listed with the size
    the journal recorded); an output removed or cut short since is written again."""
    out = tmp_path / "out"
    command = [ANONPIPE, "-e", "--irreversible", "-r", str(archive), str(out)]
    env = {**os.environ, "ANONPIPE_STATE_DIR": str(tmp_path / "state")}

    def run() -> dict[str, int]:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        path = proc.stderr.strip().splitlines()[-1].removeprefix("report: ")
        return json.loads(Path(path).read_text())["counts"]

    assert run()["written"] == FILES
    before = tree_digest(out)
    outputs = sorted(p for p in out.rglob("*") if p.is_file())
    outputs[0].unlink()
    with outputs[1].open("r+b") as fh:
        fh.truncate(100)
    counts = run()
    assert (counts["written"], counts["already_done"]) == (2, FILES - 2)
    assert tree_digest(out) == before
