"""Pass 1 records the UIDs no row of Table E.1-1 names, so the store's mapping (the
crosswalk) holds every UID pass 2 replaces: a real directory run, then the store read."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian

from pipeline.cli import main as anonpipe
from pipeline.store import Store
from tasks.dicomio import read_dicom
from tests.conftest import Pki
from tests.tasks.test_unlisted_rules import UID_TAGS, Markers, build


def test_every_replaced_uid_is_in_the_store_mapping(tmp_path: Path, pki: Pki) -> None:
    markers = Markers()
    source = tmp_path / "in"
    source.mkdir()
    (source / "f.dcm").write_bytes(build(markers, ExplicitVRLittleEndian))
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    assert anonpipe(["-c", str(pki.cert), "-e", "-r", "-E", "--workers", "0", "--store",
                     str(store), str(source), str(out)]) == 0
    df = read_dicom((out / "f.dcm").read_bytes())
    with Store(store) as opened:
        mapping = opened.get_many("uids", sorted(markers.of("uid", "private")))
    assert markers.of("uid") <= set(mapping)
    for tag in UID_TAGS:  # the top-level places: the value written is the recorded one
        original = read_dicom((source / "f.dcm").read_bytes()).top_text(tag)
        assert original is not None and df.top_text(tag) == mapping[original]
