"""Per-file work leaves no reference cycles: each file's element tree is freed by reference
counting as soon as the file is done, not by the cyclic GC.  Why it matters: a cycle kept
~150 objects per file alive until a collection, and the collections that followed cost ~8 %
of pass 2 (issue 6, benchmarks/components.py)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dumb import DumbSettings, dumb_edit_bytes, parse_dumb_ops
from tasks.inventory import scan_file
from tasks.reidentify import ReidentifySettings, reidentify_bytes
from tests.conftest import pydicom_file

FILES = ("CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
         "rtplan.dcm", "image_dfl.dcm")


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _cyclic_garbage(work: Callable[[], object]) -> int:
    """Objects only the cyclic GC would free after ``work`` (warmed up once: caches)."""
    work()
    gc.collect()
    work()
    return gc.collect()


@pytest.mark.parametrize("name", FILES)
def test_each_operation_frees_its_file_by_reference_counting(
    name: str, encryptor: EnvelopeEncryptor, reid: ReidentifySettings, no_gc: None
) -> None:
    path = pydicom_file(name)
    data = path.read_bytes()
    reversible = DeidentifySettings(secret=b"s" * 32, profile="basic", encryptor=encryptor,
                                    allow_burned_in=True)
    gdcmanon = DeidentifySettings(secret=b"s" * 32, profile="gdcmanon", encryptor=encryptor,
                                  allow_burned_in=True)
    deidentified = deidentify_bytes(data, reversible)
    dumb = DumbSettings(parse_dumb_ops(["10,10"], ["10,20"], ["8,90"], ["10,30,19991231"]))
    work: dict[str, Callable[[], object]] = {
        "scan": lambda: scan_file(path),
        "deidentify": lambda: deidentify_bytes(data, reversible),
        "deidentify (gdcmanon profile)": lambda: deidentify_bytes(data, gdcmanon),
        "reidentify": lambda: reidentify_bytes(deidentified, reid),
        "dumb": lambda: dumb_edit_bytes(data, dumb),
    }
    garbage = {what: _cyclic_garbage(step) for what, step in work.items()}
    assert garbage == dict.fromkeys(work, 0)
