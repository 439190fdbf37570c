"""Run notebooks/run_report.ipynb once and save it with its outputs as
notebooks/run_report.executed.ipynb, so a reader sees the plots without running anything
(``make notebooks``; tests/pipeline/test_notebook.py checks the copy is of the same code)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks" / "run_report.ipynb"
EXECUTED = SOURCE.with_name("run_report.executed.ipynb")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="anonpipe-notebook-") as work:
        os.environ["ANONPIPE_STATE_DIR"] = str(Path(work) / "state")
        os.environ.pop("ANONPIPE_REPORT", None)
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        nb = nbformat.read(SOURCE, as_version=4)
        NotebookClient(nb, timeout=240, kernel_name="python3",
                       resources={"metadata": {"path": work}}).execute()
    for cell in nb.cells:  # no machine-specific timings in the shipped copy's metadata
        cell.metadata.pop("execution", None)
    nbformat.write(nb, EXECUTED)
    print(f"wrote {EXECUTED.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
