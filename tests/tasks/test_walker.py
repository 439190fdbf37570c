"""The compiled element walker (tasks/_walker.c) gives the Python walker's trees, on every
file of pydicom's test data; ``ANONPIPE_PURE_PYTHON=1`` turns it off.  The fuzz target
``test_fuzz_walkers_agree`` compares them on damaged and generated files."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import pytest

from tasks import dicomio
from tasks.errors import DicomFormatError
from tests.conftest import PYDICOM_FILES
from tests.walkers import compare, compare_from, compare_order, data_set, tree

TEST_FILES = PYDICOM_FILES


def test_both_walkers_agree_on_pydicom_test_files() -> None:
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    assert len(files) > 100
    walked = sum(compare(path.read_bytes()) for path in files)
    assert walked > 400  # the compiled walker did the work, not only the fallback


def test_a_walk_from_an_offset_is_the_python_parsers() -> None:
    """From each of the last top-level elements of every test file (a split file's tail is
    parsed from its Pixel Data on): the same trees, or both refuse."""
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    assert sum(compare_from(path.read_bytes()) for path in files) > 300


def test_an_offset_outside_the_buffer_is_refused() -> None:
    walker = dicomio._WALKER
    assert walker is not None
    with pytest.raises(ValueError, match="outside the buffer"):
        walker.walk(b"\0" * 8, dicomio.IMPLICIT_LE_ENC, True, True, False, False, 4, 9)


def test_ascending_tags_are_checked_as_the_python_check_does() -> None:
    """The tags of every test file's top level, and the same elements out of order,
    repeated, or not elements at all: the list, or None for the Python check to raise."""
    checked = 0
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        found = data_set(path.read_bytes())
        if found is None:
            continue
        try:
            elements = dicomio.walk_python(found[0], found[1], False, False)[0]
        except DicomFormatError:
            continue
        compare_order(elements)
        if len(elements) > 2:
            compare_order(elements[::-1])
            compare_order(elements + elements[-1:])
            checked += 1
    assert checked > 100
    first = dicomio.Element(0x00080016, "UI", 0, 8, 0, 8)
    assert dicomio._WALKER.ascending_tags([first, "not an element"]) is None
    assert dicomio._WALKER.ascending_tags([]) == []
    with pytest.raises(DicomFormatError, match=r"out of order or repeated at \(0008,0016\)"):
        dicomio._check_order([first, first])


def test_more_distinct_values_than_the_walkers_int_caches_hold() -> None:
    """The compiled walker makes each tag, offset and length once per process and shares
    it: 6,000 distinct tags (more than its cache of large values holds) and offsets past
    its table of small ones come back as the Python walker's values, walk after walk."""
    body = b"".join(struct.pack("<HH2sH", 0x0009, 0x1000 + i, b"LO", 2) + b"AB"
                    for i in range(6000)) + struct.pack("<HH2sHI", 0x0011, 0x0010, b"OB", 0,
                                                         70000) + bytes(70000)
    enc = dicomio.EXPLICIT_LE_ENC
    expected = tree(dicomio.walk_python(body, enc, False, False)[0])
    walker = dicomio._WALKER
    assert walker is not None
    for _ in range(3):
        walked = walker.walk(body, enc, True, False, False, False, dicomio._MAX_DEPTH)
        assert walked is not None and tree(walked[0]) == expected
    assert min(expected[-1][4], expected[-1][5]) > 65536  # a length and an end past the table
    assert len({el[0] for el in expected}) == 6001


def test_pure_python_switch() -> None:
    probe = "import tasks.dicomio as d; print(d._WALKER is None)"
    for value, expected in (("1", "True"), ("", "False"), ("0", "False")):
        env = {**os.environ, "ANONPIPE_PURE_PYTHON": value}
        out = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == expected, value


def test_a_whole_buffer_is_parsed_as_the_python_parser_does() -> None:
    """``parse_elements`` of a whole buffer (a decrypted payload) goes through the compiled
    walker: the Python parser's tree, or its error and message."""
    walker = dicomio._WALKER
    assert walker is not None, "the compiled walker is not built (make install)"
    compiled = refused = 0
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        found = data_set(path.read_bytes())
        if found is None:
            continue
        body, enc = found
        try:
            expected = tree(dicomio._Parser(body).parse(0, len(body), enc))
        except DicomFormatError as exc:
            with pytest.raises(DicomFormatError, match=re.escape(str(exc))):
                dicomio.parse_elements(body, 0, None, enc)
            refused += 1
            continue
        assert tree(dicomio.parse_elements(body, 0, None, enc)) == expected, path.name
        compiled += walker.walk(body, enc, enc.little, enc.implicit, False, False,
                                dicomio._MAX_DEPTH) is not None
    assert compiled > 100 and refused > 0
