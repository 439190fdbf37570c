"""The compiled element walker and meta reader against the Python ones: the same trees,
or both refuse."""

from __future__ import annotations

from itertools import pairwise

from tasks import dicomio
from tasks.dicomio import DEFLATED_LE, KNOWN_VRS, Element, Encoding, encoding_for, split_file
from tasks.errors import DicomFormatError


def tree(elements: list[Element]) -> list[tuple[object, ...]]:
    """Every field of every element and item, nested, for comparison."""
    return [(el.tag, el.vr, el.start, el.value_start, el.length, el.end, el.item_enc,
             None if el.items is None else
             [(it.start, it.value_start, it.length, it.end, tree(it.elements))
              for it in el.items])
            for el in elements]


def data_set(data: bytes) -> tuple[bytes, Encoding] | None:
    """The body and encoding :func:`tasks.dicomio.read_dicom` would walk; None when the file
    fails before the walk (meta, inflation)."""
    try:
        _, _, _, syntax, body_start = split_file(data)
        body = data[body_start:]
        if syntax == DEFLATED_LE:
            body = dicomio._inflate(body)
    except DicomFormatError:
        return None
    enc = encoding_for(syntax)
    if not enc.implicit and len(body) >= 6 and body[4:6] not in KNOWN_VRS:
        enc = Encoding(enc.little, True)
    return body, enc


def compare(data: bytes) -> int:
    """Walk ``data``'s data set with both walkers in all four modes; raise AssertionError
    where they differ.  Returns how many walks the compiled walker completed itself."""
    walker = dicomio._WALKER
    assert walker is not None, "the compiled walker is not built (make install)"
    for start in (0, 4, 132):  # the file meta information, after each possible prefix
        meta = walker.meta(data, start, -start)
        try:
            elements, end = dicomio._meta_elements_python(data, start)
        except DicomFormatError:
            assert meta is None, f"only the Python reader refused the meta at {start}"
            continue
        assert meta is not None, f"only the compiled reader refused the meta at {start}"
        shifted = [dicomio._shift(el, -start) for el in elements]
        assert (tree(meta[0]), meta[1]) == (tree(shifted), end), f"meta differs at {start}"
    found = data_set(data)
    if found is None:
        return 0
    body, enc = found
    compiled_walks = 0
    for stop in (False, True):
        for runs in (False, True):
            compiled = walker.walk(body, enc, enc.little, enc.implicit, stop, runs,
                                   dicomio._MAX_DEPTH)
            try:
                elements, stopped, at_pixels = dicomio.walk_python(body, enc, stop, runs)
            except DicomFormatError:
                assert compiled is None, f"only the Python walker refused (stop={stop}, " \
                    f"runs={runs})"
                continue
            if compiled is None:  # gave up on private elements out of order inside a run
                assert runs, f"only the compiled walker refused (stop={stop})"
                continue
            assert (tree(compiled[0]), compiled[1], compiled[2]) == \
                (tree(elements), stopped, at_pixels), f"trees differ (stop={stop}, runs={runs})"
            compiled_walks += 1
    return compiled_walks


def compare_from(data: bytes) -> int:
    """Walk ``data``'s data set from each top-level element's start (a split file's tail,
    ``parse_elements`` with an offset) with both walkers; raise AssertionError where they
    differ.  Returns how many of those walks the compiled walker completed itself."""
    walker = dicomio._WALKER
    assert walker is not None, "the compiled walker is not built (make install)"
    found = data_set(data)
    if found is None:
        return 0
    body, enc = found
    try:
        starts = [el.start for el in dicomio.walk_python(body, enc, False, False)[0]]
    except DicomFormatError:
        starts = [0, 8, 12]  # a damaged body: a few offsets all the same
    compiled_walks = 0
    for start in starts[1:][-6:]:
        if start > len(body):
            continue
        compiled = walker.walk(body, enc, enc.little, enc.implicit, False, False,
                               dicomio._MAX_DEPTH, start)
        try:
            expected = dicomio._Parser(body).parse(start, len(body), enc)
        except DicomFormatError:
            assert compiled is None, f"only the Python walker refused from {start}"
            continue
        assert compiled is not None, f"only the compiled walker refused from {start}"
        assert tree(compiled[0]) == tree(expected), f"trees differ from {start}"
        compiled_walks += 1
    return compiled_walks


def compare_order(elements: list[Element]) -> None:
    """The compiled check of ascending top-level tags against the Python one."""
    walker = dicomio._WALKER
    assert walker is not None, "the compiled walker is not built (make install)"
    tags = [el.tag for el in elements]
    ascending = all(a < b for a, b in pairwise(tags))
    assert walker.ascending_tags(elements) == (tags if ascending else None)
