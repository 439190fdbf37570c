"""The run-report notebook executes as shipped and draws its figure."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "run_report.ipynb"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_run_report_notebook_executes(workers: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANONPIPE_NOTEBOOK_WORKERS", workers)
    monkeypatch.setenv("ANONPIPE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "300 files: done 300, skipped 0, failed 0" in text
    expected = "local cluster" if workers == "2" else "inline (no dask)"
    assert expected in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert list((tmp_path / "state" / "reports").glob("run-*.json"))
    assert os.environ["ANONPIPE_STATE_DIR"] == str(tmp_path / "state")
