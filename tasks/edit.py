"""Byte-range edits on a parsed element tree, and transcoding between encodings.

An :class:`EditPlan` records, per located element (keyed by its start offset, unique in one
buffer), a replacement (full encoded element bytes, or ``b""`` to remove it) plus new
top-level elements.  :func:`render` copies every untouched byte range verbatim and rebuilds
only the items and sequences on the path to an edit, recomputing defined lengths and the
group lengths (gggg,0000) of groups whose size changed.
"""

from __future__ import annotations

import struct
from typing import Any

from tasks.dicomio import (
    UNDEFINED,
    Element,
    Encoding,
    Item,
    compiled,
    element_header,
    item_end,
    item_header,
    pad_value,
    sequence_end,
    swap_bytes,
    tag_str,
)
from tasks.errors import DicomFormatError
from tasks.vr import SWAP_WIDTH


class EditPlan:
    """What to change in one buffer."""

    __slots__ = ("changed_group_lengths", "dirty", "insert", "replace")

    def __init__(self) -> None:
        self.replace: dict[int, bytes] = {}
        #: start offsets of elements and items that contain an edit somewhere below them
        self.dirty: set[int] = set()
        #: new top-level elements, tag -> encoded bytes (replaces an existing one with
        #: that tag)
        self.insert: dict[int, bytes] = {}
        #: top-level group-length elements whose value :func:`render` had to change
        self.changed_group_lengths: list[Element] = []

    def set(self, element: Element, encoded: bytes, ancestors: list[Element | Item]) -> None:
        """Replace ``element`` with ``encoded`` (empty bytes remove it)."""
        self.replace[element.start] = encoded
        for node in ancestors:
            self.dirty.add(node.start)

    @property
    def empty(self) -> bool:
        return not self.replace and not self.insert


def encode_element(tag: int, vr: str, value: bytes, enc: Encoding) -> bytes:
    """One complete element with an even-padded value."""
    value = pad_value(value, vr)
    return element_header(tag, vr, len(value), enc) + value


#: untouched runs at least this long are passed on as memoryviews, not copied (pixel data)
BIG_SLICE = 1 << 16

Chunk = bytes | memoryview


def _slice(buf: bytes, start: int, end: int) -> Chunk:
    return buf[start:end] if end - start < BIG_SLICE else memoryview(buf)[start:end]


def render(
    buf: bytes, elements: list[Element], plan: EditPlan, enc: Encoding, top: bool = True
) -> bytes:
    """The data set ``elements`` of ``buf`` with ``plan`` applied.

    Runs of untouched elements are copied as one slice; only data sets that hold group
    length elements take the element-by-element path that can recompute them.
    """
    return b"".join(render_parts(buf, elements, plan, enc, top))


def render_parts(
    buf: bytes, elements: list[Element], plan: EditPlan, enc: Encoding, top: bool = True
) -> list[Chunk]:
    """:func:`render` as the list of its pieces, big untouched runs as views of ``buf``
    (what a writer passes to ``writev``: a 512x512 CT slice is then never copied).

    The compiled loop (``tasks/_editloops.c``) runs this loop for a data set without group
    length elements: a CT slice's renders took 14 us instead of 25 (benchmarks/README.md,
    thirteenth round)."""
    inserts = sorted(plan.insert.items()) if top else []
    if LOOPS is not None:
        chunks: list[Chunk] | None = LOOPS.render(buf, elements, plan.replace, plan.dirty,
                                                  inserts, _render_element, plan, enc)
        if chunks is not None:
            return chunks
    return _render_parts_python(buf, elements, plan, enc, top, inserts)


def _render_parts_python(buf: bytes, elements: list[Element], plan: EditPlan, enc: Encoding,
                         top: bool, inserts: list[tuple[int, bytes]]) -> list[Chunk]:
    for el in elements:
        if not el.tag & 0xFFFF:
            return _render_with_group_lengths(buf, elements, plan, enc, top, inserts)
    chunks: list[Chunk] = []
    append = chunks.append
    replace, dirty = plan.replace, plan.dirty
    run_start = run_end = -1
    k, n = 0, len(inserts)
    next_insert = inserts[0][0] if inserts else 0x100000000
    for el in elements:
        start = el.start
        if start not in replace and start not in dirty and next_insert > el.tag:
            if run_start < 0:
                run_start = start
            run_end = el.end
            continue
        if run_start >= 0:
            append(_slice(buf, run_start, run_end))
            run_start = -1
        if next_insert <= el.tag:
            while k < n and inserts[k][0] < el.tag:
                append(inserts[k][1])
                k += 1
            replaced = k < n and inserts[k][0] == el.tag
            if replaced:
                append(inserts[k][1])
                k += 1
            next_insert = inserts[k][0] if k < n else 0x100000000
            if replaced:
                continue
        replacement = replace.get(start)
        if replacement is not None:
            if replacement:
                append(replacement)
            continue
        append(_render_element(buf, el, plan, enc))
    if run_start >= 0:
        append(_slice(buf, run_start, run_end))
    chunks.extend(data for _, data in inserts[k:])
    return chunks


def _render_with_group_lengths(
    buf: bytes, elements: list[Element], plan: EditPlan, enc: Encoding, top: bool,
    inserts: list[tuple[int, bytes]],
) -> list[Chunk]:
    parts: list[tuple[int, Chunk, Element | None]] = []
    k = 0
    for el in elements:
        while k < len(inserts) and inserts[k][0] < el.tag:
            parts.append((inserts[k][0], inserts[k][1], None))
            k += 1
        if k < len(inserts) and inserts[k][0] == el.tag:
            parts.append((el.tag, inserts[k][1], el))
            k += 1
            continue
        parts.append((el.tag, _render_element(buf, el, plan, enc), el))
    parts.extend((tag, data, None) for tag, data in inserts[k:])
    _fix_group_lengths(buf, parts, plan, enc, top)
    return [data for _, data, _ in parts]


def _render_element(buf: bytes, el: Element, plan: EditPlan, enc: Encoding) -> Chunk:
    replacement = plan.replace.get(el.start)
    if replacement is not None:
        return replacement
    if el.start not in plan.dirty or el.items is None:
        return _slice(buf, el.start, el.end)
    sub_enc = el.item_enc or enc
    body = b"".join(_render_item(buf, item, plan, sub_enc) for item in el.items)
    header = buf[el.start:el.value_start]
    if el.undefined:
        return header + body + buf[el.end - 8:el.end]
    return _with_length(header, len(body), enc) + body


def _render_item(buf: bytes, item: Item, plan: EditPlan, enc: Encoding) -> bytes:
    if item.start not in plan.dirty:
        return buf[item.start:item.end]
    body = render(buf, item.elements, plan, enc, top=False)
    if item.undefined:
        return buf[item.start:item.value_start] + body + buf[item.end - 8:item.end]
    return item_header(len(body), enc) + body


def _with_length(header: bytes, length: int, enc: Encoding) -> bytes:
    """``header`` (8 or 12 bytes) with its length field set to ``length``."""
    if len(header) == 12:
        return header[:8] + struct.pack(enc.endian + "I", length)
    if enc.implicit:
        return header[:4] + struct.pack(enc.endian + "I", length)
    return header[:6] + struct.pack(enc.endian + "H", length)


def _fix_group_lengths(
    buf: bytes, parts: list[tuple[int, Chunk, Element | None]], plan: EditPlan,
    enc: Encoding, top: bool,
) -> None:
    """Recompute (gggg,0000) values that no longer match their group's rendered size."""
    for index, (tag, data, original) in enumerate(parts):
        if tag & 0xFFFF or original is None or original.start in plan.replace:
            continue
        if tag in plan.insert or original.length != 4:
            continue
        group = tag >> 16
        size = 0
        for other_tag, other, _ in parts[index + 1:]:
            if other_tag >> 16 != group:
                break
            size += len(other)
        old = struct.unpack_from(enc.endian + "I", buf, original.value_start)[0]
        if old != size:
            parts[index] = (tag, bytes(data[:-4]) + struct.pack(enc.endian + "I", size),
                            original)
            if top:
                plan.changed_group_lengths.append(original)


def _load_loops() -> Any:
    """The compiled edit loops, set up with this module's classes; None when there are
    none (:func:`tasks.dicomio.compiled`)."""
    loops = compiled("_editloops")
    if loops is not None:
        loops.setup(Element, BIG_SLICE)
    return loops


LOOPS = _load_loops()


# --------------------------------------------------------------------------- transcoding


def transcode(buf: bytes, el: Element, src: Encoding, dst: Encoding) -> bytes:
    """``el`` re-encoded from ``src`` to ``dst`` (values byte-swapped, VRs added or dropped).

    Deterministic and invertible for well-formed input, which is what lets our own
    re-identification restore an implicit or big-endian file byte for byte from an
    Explicit VR Little Endian payload.
    """
    if src == dst:
        return buf[el.start:el.end]
    if el.items is not None:
        sub_src = el.item_enc or src
        body = b"".join(_transcode_item(buf, item, sub_src, dst) for item in el.items)
        if el.undefined:
            return element_header(el.tag, "SQ", UNDEFINED, dst) + body + sequence_end(dst)
        return element_header(el.tag, "SQ", len(body), dst) + body
    if el.undefined:
        # encapsulated data is only valid in Explicit VR Little Endian (PS3.5 A.4)
        raise DicomFormatError(
            f"encapsulated (undefined-length) value {tag_str(el.tag)} cannot be carried "
            "between Explicit VR Little Endian and Implicit VR or big-endian")
    value = buf[el.value_start:el.end]
    if src.little != dst.little and el.vr in SWAP_WIDTH:
        value = swap_bytes(value, SWAP_WIDTH[el.vr])
    return element_header(el.tag, el.vr, len(value), dst) + value


def _transcode_item(buf: bytes, item: Item, src: Encoding, dst: Encoding) -> bytes:
    body = b"".join(transcode(buf, el, src, dst) for el in item.elements)
    if item.undefined:
        return item_header(UNDEFINED, dst) + body + item_end(dst)
    return item_header(len(body), dst) + body
