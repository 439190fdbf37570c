"""Fixtures of the pipeline tests: a sample archive, jobs, trees (the private state folder is
the suite's, in tests/conftest.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from pipeline.job import Mode, TreeJob, Tuning
from pipeline.sample import generate_archive
from tasks.deidentify import Deidentify, DeidentifySettings
from tests.conftest import SECRET
from tests.pipeline.slurm import slurm  # noqa: F401 - the single-node SLURM fixture

#: 3 patients x 2 studies x 2 series x 10 instances = 120 files
SHAPE = {"patients": 3, "studies": 2, "series": 2, "instances": 10, "seed": 7}
FILES = 120


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention sample archive (do not modify: copy it first)."""
    root = tmp_path_factory.mktemp("archive") / "in"
    generate_archive(root, **SHAPE)
    return root


def deid_job(src: Path, out: Path, store: Path | None = None, secret: bytes = SECRET,
             **overrides: Any) -> TreeJob:
    """An irreversible de-identification job (deterministic bytes, no certificate);
    ``overrides`` may name :class:`Tuning` fields as well as :class:`TreeJob` ones."""
    knobs = set(Tuning._fields)
    tuning = Tuning(**{k: overrides.pop(k) for k in list(overrides) if k in knobs})
    values: dict[str, Any] = {
        "mode": Mode.DEIDENTIFY, "input": src, "output": out,
        "operation": Deidentify(DeidentifySettings(secret=secret)),
        "recursive": True, "workers": 0, "verbosity": 0, "tuning": tuning,
        "store": store or out.parent / f"{out.name}.store.sqlite",
    }
    values.update(overrides)
    return TreeJob(**values)


def tree_digest(folder: Path) -> dict[str, str]:
    """rel path -> sha256 of every file (temp files included, so leftovers show up)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def reference_out(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted inline run of the archive (do not modify)."""
    from pipeline.runner import run_tree

    base = tmp_path_factory.mktemp("reference")
    summary = run_tree(deid_job(archive, base / "out"))
    assert (summary.done, summary.failed) == (FILES, 0)
    return base / "out"


@pytest.fixture(scope="session")
def reference(reference_out: Path) -> dict[str, str]:
    """Digests of the uninterrupted inline run: what every other way of running must give."""
    return tree_digest(reference_out)
