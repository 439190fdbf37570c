"""The README's shell examples, run as written: they cannot rot.

Every line of every ```sh block runs, in README order, in one scratch folder holding what
the examples name (a demo key pair, pydicom's CT_small as the single files, sample archives
as the folders), with the installed commands first on PATH.  A trailing ``# exit N`` is the
exit status the README promises (0 otherwise).  Only the lines SKIPPED names do not run,
each for the reason given there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.sample import generate_archive
from tests.conftest import BIN, REPO, Pki, pydicom_file

#: examples that cannot run on one machine in a test, and why
SKIPPED = {
    "make ": "the Makefile targets are what runs this test",
    "10.0.0.5": "an example address: no scheduler listens there",
    "--cluster slurm in/": "submits SLURM jobs (tests/pipeline/test_cluster.py runs them)",
}


def examples(text: str) -> list[tuple[str, int]]:
    """(command, expected exit status) of every line of every ```sh block."""
    found: list[tuple[str, int]] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.strip()
            if not command or command.startswith("#"):
                continue
            status = re.search(r"#\s*exit (\d+)", command)
            found.append((command, int(status.group(1)) if status else 0))
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Path:
    work = tmp_path_factory.mktemp("readme")
    for key in ("privatekey.pem", "key.pem"):
        shutil.copy(pki.key, work / key)
    for cert in ("certificate.pem", "cert.pem"):
        shutil.copy(pki.cert, work / cert)
    for name in ("original.dcm", "input.dcm", "012345.002.050.dcm"):
        shutil.copy(pydicom_file("CT_small.dcm"), work / name)
    for folder in ("dicom_in", "in", "archive"):
        generate_archive(work / folder, patients=2, studies=1, series=1, instances=2, seed=9)
    return work


def test_every_readme_example_runs_as_documented(scratch: Path) -> None:
    listed = examples((REPO / "README.md").read_text())
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
           "ANONPIPE_STATE_DIR": str(scratch / "state")}
    ran = 0
    for command, status in listed:
        if any(marker in command for marker in SKIPPED):
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=scratch, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == status, (command, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (command, proc.stderr)
        ran += 1
    assert ran >= 30 and ran == len(listed) - sum(
        1 for command, _ in listed if any(marker in command for marker in SKIPPED))
    # what the examples say they produce
    assert (scratch / "original.dcm").read_bytes() == (scratch / "original_copy.dcm").read_bytes()
    assert (scratch / "crosswalk.csv").read_text().startswith("id_old,id_new,kind\n")
    assert (scratch / "plan.txt").read_text().splitlines() == sorted(
        (scratch / "plan.tsv").read_text().splitlines())
    assert (scratch / "one" / "P0002/ST01/SE01/IM0001.dcm").is_file()


def test_the_skip_list_names_only_examples_that_exist() -> None:
    commands = [c for c, _ in examples((REPO / "README.md").read_text())]
    for marker in SKIPPED:
        assert any(marker in c for c in commands), marker


def test_make_demo_is_quiet_and_works(tmp_path: Path) -> None:
    """What a newcomer sees: the demo's steps, no warnings, the restored file identical."""
    proc = subprocess.run(["bash", "scripts/demo.sh", str(tmp_path / "demo")], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "restored file is byte-identical to the original" in text
    assert "anonpipe-crosswalk:" in text and "written 80" in text
    assert not re.search(r"warning", text, re.IGNORECASE), text
    assert len(text.splitlines()) < 60
