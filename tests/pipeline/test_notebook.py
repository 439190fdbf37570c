"""The notebooks execute as shipped and draw their figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "run_report.ipynb"


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
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert ("300 DICOM files: written 300, already done 0, not DICOM 1, refused 0, failed 0"
            in text)
    assert "not a DICOM file" in text
    expected = "local cluster" if workers == "2" else "inline (no dask)"
    assert expected in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert list((tmp_path / "state" / "reports").glob("run-*.json"))
    assert os.environ["ANONPIPE_STATE_DIR"] == str(tmp_path / "state")


BENCH_NOTEBOOK = NOTEBOOK.with_name("benchmarks.ipynb")
RESULTS = NOTEBOOK.parents[1] / "benchmarks" / "results"


@pytest.mark.parametrize("which", ["shipped", "copied"])
def test_benchmarks_notebook_plots_every_result(which: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as shipped it finds benchmarks/results above its folder; ANONPIPE_BENCH_RESULTS
    points it at another folder (here two of the shipped results, oldest and newest)."""
    shipped = sorted(RESULTS.glob("bench-*.json"))
    assert len(shipped) >= 2
    chosen = shipped
    if which == "copied":
        chosen = [shipped[0], shipped[-1]]
        for path in chosen:
            (tmp_path / path.name).write_bytes(path.read_bytes())
        monkeypatch.setenv("ANONPIPE_BENCH_RESULTS", str(tmp_path))
    else:
        monkeypatch.delenv("ANONPIPE_BENCH_RESULTS", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(BENCH_NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(BENCH_NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    first, last = chosen[0].stem.removeprefix("bench-"), chosen[-1].stem.removeprefix("bench-")
    assert f"{len(chosen)} runs loaded ({first} .. {last})" in text
    newest = json.loads(chosen[-1].read_text())
    for target in newest["targets"]:
        assert f"{'PASS' if target['met'] else 'MISS'}  {target['target']}" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_the_executed_copy_is_of_this_notebook_and_shows_its_plots() -> None:
    """A reader sees the plots without running anything; ``make notebooks`` remakes it."""
    source = nbformat.read(NOTEBOOK, as_version=4)
    executed = nbformat.read(NOTEBOOK.with_name("run_report.executed.ipynb"), as_version=4)
    assert [c.source for c in executed.cells] == [c.source for c in source.cells]
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.output_type == "error"]


def test_the_report_to_plot_comes_from_the_environment(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """ANONPIPE_REPORT plots an existing report: no run, no edit of the notebook."""
    from pipeline.runner import run_tree
    from pipeline.sample import generate_archive
    from tests.pipeline.conftest import deid_job

    monkeypatch.setenv("ANONPIPE_STATE_DIR", str(tmp_path / "state"))
    generate_archive(tmp_path / "in", patients=1, studies=1, series=1, instances=3, seed=4)
    summary = run_tree(deid_job(tmp_path / "in", tmp_path / "out"))
    monkeypatch.setenv("ANONPIPE_REPORT", str(summary.report_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "DICOM files: written" not in text  # no demo run
    assert "inline (no dask)" in text and any("image/png" in o.get("data", {}) for o in outputs)
    assert len(list((tmp_path / "state" / "reports").glob("run-*.json"))) == 1
