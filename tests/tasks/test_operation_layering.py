"""The three per-file operations stand side by side: -d and --dumb never go through -e.

De-identification, re-identification and dumb mode share the frame of ``tasks.engine``
(input opened, whole or split, output assembled and written), the payload of
``tasks.payload`` and the reader of ``tasks.dicomio``; none of them depends on another, and
none reaches into another module's private names.  Checked on the import statements
(lazy imports count) and on what a fresh interpreter loads.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

OPERATIONS = ("deidentify", "reidentify", "dumb")


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from M import name`` and (module, "") of ``import M``."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.module, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("name", OPERATIONS)
def test_an_operation_imports_no_other_operation(name: str) -> None:
    modules = {module for module, _ in _imports(REPO / "tasks" / f"{name}.py")}
    others = {f"tasks.{other}" for other in OPERATIONS if other != name}
    assert "tasks.engine" in modules
    assert modules & others == set()


@pytest.mark.parametrize("path", ["tasks/deidentify.py", "tasks/reidentify.py", "tasks/dumb.py",
                                  "tasks/payload.py", "tasks/engine.py", "pipeline/cli.py"])
def test_no_private_name_is_imported_from_tasks(path: str) -> None:
    private = [(module, name) for module, name in _imports(REPO / path)
               if module.startswith("tasks") and name.startswith("_")]
    assert private == []


def test_reidentify_and_dumb_load_without_deidentify() -> None:
    code = ("import sys, tasks.reidentify, tasks.dumb\n"
            "print('tasks.deidentify' in sys.modules, 'tasks.engine' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.split() == ["False", "True"]
