"""Pass 1's compiled header loop (tasks/_inventory.c) gives the Python loop's row fields and
UID sets (``tasks.inventory._top_facts``) on every file of pydicom's test data and of the
privacy corpus, for the profiles' three kinds of replaced tags; it hands back to the Python
loop what it does not take, and ``ANONPIPE_PURE_PYTHON=1`` turns it off."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

from tasks import inventory
from tasks.dicomio import read_to_pixels
from tests.conftest import PYDICOM_FILES
from tests.corpus import build_privacy_corpus
from tests.inventory_loops import REPLACED, compare, facts


def test_both_loops_agree_on_pydicom_test_files() -> None:
    files = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())
    assert len(files) > 100
    assert sum(compare(path.read_bytes()) for path in files) > 300


def test_both_loops_agree_on_the_privacy_corpus() -> None:
    """Every attribute of Table E.1-1 at every depth, four encodings, unlisted UIDs."""
    corpus = build_privacy_corpus()
    assert sum(compare(data) for data in corpus.files.values()) == 3 * len(corpus.files)


def _implicit(*elements: tuple[int, str, str]) -> bytes:
    """An Implicit VR file of a secondary capture with ``elements`` (tag, VR, value) too."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.PatientID = "PID-7"
    for tag, vr, value in elements:
        ds.add_new(tag, vr, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _implicit_with_private_uid(uid: str) -> bytes:
    """A private element holding a UID: in Implicit VR its VR is unknown (UN)."""
    return _implicit((0x00090010, "LO", "SOME VENDOR"), (0x00091001, "UI", uid))


def test_a_private_uid_of_unknown_vr_is_mapped_as_the_python_loop_maps_it() -> None:
    data = _implicit_with_private_uid("1.2.3.99.1")
    df, _ = read_to_pixels(data, private_runs=True)
    assert any(el.vr == "UN" for el in df.elements)
    found = facts(inventory._LOOP, df, REPLACED[0])
    assert found is not None and "1.2.3.99.1" in found[3]
    assert found == facts(None, df, REPLACED[0])
    assert "1.2.3.99.1" not in facts(inventory._LOOP, df, REPLACED[1])[3]


def test_what_the_compiled_loop_does_not_take_goes_to_the_python_loop() -> None:
    """A body that is not bytes, or replaced tags that are not a frozenset: None from the
    compiled loop, the Python loop's answer from top_facts."""
    df, _ = read_to_pixels(_implicit_with_private_uid("1.2.3.99.2"), private_runs=True)
    loop = inventory._LOOP
    assert loop is not None
    expected = facts(None, df, REPLACED[0])
    assert loop.top_facts(df.elements, memoryview(df.body), inventory._FIELD_OF_TAG,
                          REPLACED[0], inventory.DEFINITION_UID_TAGS, inventory.registered,
                          {}, set(), set()) is None
    assert loop.top_facts(df.elements, df.body, inventory._FIELD_OF_TAG, set(REPLACED[0]),
                          inventory.DEFINITION_UID_TAGS, inventory.registered,
                          {}, set(), set()) is None
    row: dict[str, Any] = {}
    every: set[str] = set()
    mapped: set[str] = set()
    flags = inventory.top_facts(df, set(REPLACED[0]),  # type: ignore[arg-type]
                                row, every, mapped)
    assert (flags, row, every, mapped) == expected


def test_an_error_of_the_registry_reaches_the_caller() -> None:
    """Asked for a UID under a tag Table E.1-1 does not list (Referenced Color Palette
    Instance UID), the registry's error is the loop's."""
    df, _ = read_to_pixels(_implicit((0x00280304, "UI", "1.2.3.99.3")), private_runs=True)

    def broken(uid: str) -> None:
        raise LookupError(f"no registry for {uid}")

    with pytest.raises(LookupError, match="no registry"):
        inventory._LOOP.top_facts(df.elements, df.body, inventory._FIELD_OF_TAG,
                                  REPLACED[0], inventory.DEFINITION_UID_TAGS, broken, {},
                                  set(), set())


def test_pure_python_switch() -> None:
    probe = "import tasks.inventory as i; print(i._LOOP is None)"
    for value, expected in (("1", "True"), ("", "False")):
        env = {**os.environ, "ANONPIPE_PURE_PYTHON": value}
        out = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == expected, value
