"""The compiled element walker (tasks/_walker.c) gives the Python walker's trees, on every
file of pydicom's test data; ``ANONPIPE_PURE_PYTHON=1`` turns it off.  The fuzz target
``test_fuzz_walkers_agree`` compares them on damaged and generated files."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import PYDICOM_FILES
from tests.walkers import compare

TEST_FILES = PYDICOM_FILES


def test_both_walkers_agree_on_pydicom_test_files() -> None:
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    assert len(files) > 100
    walked = sum(compare(path.read_bytes()) for path in files)
    assert walked > 400  # the compiled walker did the work, not only the fallback


def test_pure_python_switch() -> None:
    probe = "import tasks.dicomio as d; print(d._WALKER is None)"
    for value, expected in (("1", "True"), ("", "False"), ("0", "False")):
        env = {**os.environ, "ANONPIPE_PURE_PYTHON": value}
        out = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == expected, value
