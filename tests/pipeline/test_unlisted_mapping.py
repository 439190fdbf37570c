"""Pass 1 records the UIDs no row of Table E.1-1 names, so the store's mapping (the
crosswalk) holds every UID pass 2 replaces: a real directory run, then the store read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipeline.cli import main as anonpipe
from pipeline.store import Store
from tasks.dicomio import read_dicom
from tests.conftest import Pki
from tests.tasks.test_unlisted_rules import ROOT, UID_TAGS, Markers, build

PRIVATE_UID = 0x01291002  # a slot of the safe list that defines a UI


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                         ids=["explicit", "implicit"])
def test_every_replaced_uid_is_in_the_store_mapping(tmp_path: Path, pki: Pki,
                                                    syntax: str) -> None:
    markers = Markers()
    source = tmp_path / "in"
    source.mkdir()
    (source / "f.dcm").write_bytes(build(markers, syntax))
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    assert anonpipe(["-c", str(pki.cert), "-e", "-r", "-E", "--workers", "0", "--store",
                     str(store), "--retain-safe-private", str(source), str(out)]) == 0
    df = read_dicom((out / "f.dcm").read_bytes())
    with Store(store) as opened:
        mapping = opened.get_many("uids", sorted(markers.of("uid", "private")))
    assert markers.of("uid") | {f"{ROOT}.9001"} <= set(mapping)
    kept = df.top_value(PRIVATE_UID)
    assert kept is not None and kept.rstrip(b"\0") == mapping[f"{ROOT}.9001"].encode()
    for tag in UID_TAGS:  # the top-level places: the value written is the recorded one
        original = read_dicom((source / "f.dcm").read_bytes()).top_text(tag)
        assert original is not None and df.top_text(tag) == mapping[original]
