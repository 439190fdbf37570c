"""`tasks` is the per-file engine: it must run in a worker with nothing of the driver.

Two checks, because either alone can be fooled: the import statements of every module (a
lazy import inside a function counts too), and what a fresh interpreter has loaded after
importing every module of the package.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TASKS = REPO / "tasks"
FORBIDDEN = {"pipeline", "dask", "distributed", "dask_jobqueue", "sqlitedict", "rich"}


def _modules() -> list[Path]:
    return sorted(TASKS.rglob("*.py"))


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_of_tasks_imports_the_driver_side(path: Path) -> None:
    assert _imported_roots(path) & FORBIDDEN == set()


def test_importing_all_of_tasks_loads_none_of_the_driver_side() -> None:
    names = [
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in _modules()
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(set({sorted(FORBIDDEN)!r}) & {{m.split('.')[0] for m in sys.modules}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert len(names) > 10
    assert out.stdout.strip() == "[]"
