"""Which code a benchmark result measured: the checkout's commit, whether tracked files
differed from it (a result of uncommitted code is marked as such, not passed off as the
commit's), and the Python that ran it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def interpreter() -> dict[str, str]:
    """The Python's version and executable: which build ran the code (a distribution's
    CPython, built with PGO and LTO, runs it ~10 % faster than a default source build)."""
    return {"python": platform.python_version(),
            "python_executable": os.path.realpath(sys.executable)}


def code_version(root: Path) -> dict[str, object]:
    """``{"commit": sha or None, "changed": bool or None}`` for the git checkout at ``root``
    (None where git or the repository is missing)."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30, check=False)
        except OSError:
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip() if commit else None,
            "changed": None if status is None else bool(status.strip())}
