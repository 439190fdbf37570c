"""Driver memory stays flat: a scan of 200,000 tiny files peaks under 300 MB.

About a minute and a half on 2 cores (part of ``make test``; the figures print with ``-s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.pipeline.memscan import write_tiny_tree

FILES = int(os.environ.get("ANONPIPE_MEMORY_FILES", "200000"))
LIMIT_MB = 300

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "in"
    write_tiny_tree(root, FILES)
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_scan_of_200k_files_keeps_driver_rss_flat(tiny_tree: Path, workers: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.pipeline.memscan", str(tiny_tree), str(workers)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n{FILES:,} files, workers={workers}: {result['seconds']} s, "
          f"{FILES / result['seconds']:,.0f} files/s, driver peak RSS {result['rss_mb']} MB")
    assert result["rss_mb"] < LIMIT_MB
