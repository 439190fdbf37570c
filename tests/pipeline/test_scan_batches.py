"""How pass 1 cuts the listing into batches (pipeline.scan._Batcher)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.scan import _Batcher
from pipeline.walk import iter_files
from tasks.inventory import replaced_tags
from tests.pipeline.conftest import deid_job


@pytest.mark.parametrize(("files", "workers", "sizes"), [
    (600, 2, [500, 50, 50]), (100, 2, [50, 50]), (100, 3, [34, 34, 32]), (30, 2, [30]),
    (100, 1, [100]), (1000, 2, [500, 500]), (1200, 2, [500, 500, 100, 100])])
def test_what_the_listing_leaves_is_shared_by_the_workers(
        tmp_path: Path, files: int, workers: int, sizes: list[int]) -> None:
    """Full batches as the listing goes, then the rest cut into one batch per worker
    (none under 20 files), every file once and in order."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:04d}").write_bytes(b"x")
    batcher = _Batcher(deid_job(src, tmp_path / "out"), iter_files(src), replaced_tags(), 500,
                       workers=workers)
    batches = list(batcher)
    assert [len(b.rels) for b in batches] == sizes
    assert [rel for b in batches for rel in b.rels] == [f"f{i:04d}" for i in range(files)]
