"""A raw DICOM element walker and byte-range editor (PS3.5 Chapter 7).

Why not a pydicom ``Dataset`` round trip: it costs ~6 ms per small file and re-encodes what
it writes.  De-identification changes a few dozen values, so the engine locates elements by
offset, edits only the byte ranges that change (recomputing the lengths of enclosing
defined-length items, sequences and group lengths) and copies every other byte verbatim,
pixel data included.  The same byte ranges become the encrypted payload.

Supported encodings: Explicit VR Little Endian (and every encapsulated syntax), Implicit VR
Little Endian (VRs from pydicom's dictionary), Explicit VR Big Endian and Deflated Explicit
VR Little Endian.  CP-246 UN sequences and private sequences in implicit files are entered.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import operator
import os
import struct
import zlib
from bisect import bisect_left
from pathlib import Path
from typing import Any, NamedTuple

from tasks.errors import DicomFormatError
from tasks.tags import (
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    PIXEL_DATA,
    STUDY_ID,
    TRANSFER_SYNTAX_UID,
)
from tasks.vr import VRS

ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQ_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
#: How deep sequences may nest before a file is refused (a hostile file could recurse on)
_MAX_DEPTH = 64
#: Largest inflated data set of the deflated transfer syntax we accept.
MAX_INFLATED = 1 << 30

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

#: VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2), as
#: the header holds them (tasks.vr is the table)
LONG_VRS = frozenset(row.name.encode() for row in VRS.values() if row.long)
KNOWN_VRS = frozenset(name.encode() for name in VRS)


_HEAD_LE = struct.Struct("<HH2sH")
_HEAD_BE = struct.Struct(">HH2sH")
_LENGTH_LE = struct.Struct("<I")
_LENGTH_BE = struct.Struct(">I")
#: explicit VR bytes -> (VR, whether its header has the 4-byte length form)
_VR_INFO = {vrb: (vrb.decode("ascii"), vrb in LONG_VRS) for vrb in KNOWN_VRS}
#: the first 4 bytes of an item, little and big endian
_ITEM_TAG_BYTES = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")


class Encoding(NamedTuple):
    """How a data set is encoded: byte order and VR explicitness."""

    little: bool = True
    implicit: bool = False

    @property
    def endian(self) -> str:
        return "<" if self.little else ">"


EXPLICIT_LE_ENC = Encoding(True, False)
IMPLICIT_LE_ENC = Encoding(True, True)
EXPLICIT_BE_ENC = Encoding(False, False)


def encoding_for(transfer_syntax: str) -> Encoding:
    """The data set encoding of a transfer syntax UID (compressed ones are explicit LE)."""
    if transfer_syntax == IMPLICIT_LE:
        return IMPLICIT_LE_ENC
    if transfer_syntax == EXPLICIT_BE:
        return EXPLICIT_BE_ENC
    return EXPLICIT_LE_ENC


class Element:
    """One data element located in a buffer.  ``items`` is set for parsed sequences.

    The compiled walker makes these without calling ``__init__`` and the compiled edit
    loops read them, by the byte offsets of their slots (tasks/_slots.h)."""

    __slots__ = ("end", "item_enc", "items", "length", "start", "tag", "value_start", "vr")

    def __init__(self, tag: int, vr: str, start: int, value_start: int, length: int, end: int,
                 items: list[Item] | None = None, item_enc: Encoding | None = None) -> None:
        self.tag = tag
        self.vr = vr
        self.start = start
        self.value_start = value_start
        self.length = length
        self.end = end
        self.items = items
        #: encoding of the items (differs from the parent's for CP-246 UN sequences)
        self.item_enc = item_enc

    def __repr__(self) -> str:
        return (f"Element(tag={self.tag:#010x}, vr={self.vr!r}, start={self.start}, "
                f"value_start={self.value_start}, length={self.length}, end={self.end}, "
                f"items={None if self.items is None else len(self.items)})")

    @property
    def undefined(self) -> bool:
        return self.length == UNDEFINED

    @property
    def group(self) -> int:
        return self.tag >> 16

    def value(self, buf: bytes | bytearray | memoryview) -> bytes:
        """The raw value bytes (not meaningful for undefined-length elements)."""
        return bytes(buf[self.value_start:self.value_start + self.length])


class Item:
    """One sequence item: its header offset, declared length and parsed elements."""

    __slots__ = ("elements", "end", "length", "start", "value_start")

    def __init__(self, start: int, value_start: int, length: int, end: int,
                 elements: list[Element] | None = None) -> None:
        self.start = start
        self.value_start = value_start
        self.length = length
        self.end = end
        self.elements: list[Element] = [] if elements is None else elements

    def __repr__(self) -> str:
        return (f"Item(start={self.start}, value_start={self.value_start}, "
                f"length={self.length}, end={self.end}, elements={len(self.elements)})")

    @property
    def undefined(self) -> bool:
        return self.length == UNDEFINED


def tag_str(tag: int) -> str:
    """``(gggg,eeee)`` for messages."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


#: VRs of a few tags the pipeline asks for on every run (as PS3.6 gives them), so that a
#: run of Explicit VR files never loads the data dictionary (``tasks.datadict``).  Implicit
#: VR files load it on first use.
_COMMON_VRS = {
    PATIENT_NAME: "PN",
    PATIENT_ID: "LO",
    PATIENT_BIRTH_DATE: "DA",
    STUDY_ID: "SH",
}


def dictionary_vr(tag: int) -> str:
    """The VR the data dictionary gives a tag (``tasks.datadict``: pydicom's, without
    importing pydicom); ``UN`` for private or unknown tags.

    Ambiguous VRs (``US or SS``, ``OB or OW``) resolve to the first, which only matters for
    byte-swapping big-endian payloads of implicit files (they never occur together).
    """
    if tag & 0x10000 and tag >> 16 > 0x0008:
        if tag & 0xFF00 == 0 and tag & 0xFFFF >= 0x0010:
            return "LO"  # private creator
        if tag & 0xFFFF == 0:
            return "UL"
        return "UN"
    vr = _COMMON_VRS.get(tag)
    return vr if vr is not None else _dictionary_lookup(tag)


@functools.lru_cache(maxsize=8192)  # an implicit file's tags repeat in every such file
def _dictionary_lookup(tag: int) -> str:
    """The dictionary's VR of a public tag: its own entry, a group length, else the entry
    of every repeating group PS3.6 names (50xx, 60xx, 7Fxx, 1000, 1010, 0020 and 0028
    masks: ``tasks.datadict.public_entry``)."""
    from tasks.datadict import own_entry, public_entry  # PS3.6 as data, loaded on first use

    entry = own_entry(tag)
    if entry is None:
        if tag & 0xFFFF == 0:
            return "UL"  # a group length, before a mask such as 1010xxxx takes it
        entry = public_entry(tag)
        if entry is None:
            return "UN"
    vr = entry[0]
    return vr[:2] if " or " in vr else vr


# --------------------------------------------------------------------------- parsing


#: VR of a private run element (see :func:`read_dicom`): opaque bytes
PRIVATE_RUN_VR = "UN"


class _RunOutOfOrder(Exception):
    """Private elements out of order inside a run: parse again without runs, so the order
    check reports them as it always does."""


_SIMPLE_VRS = {vrb: is_long for vrb, (vr, is_long) in _VR_INFO.items()
               if vr not in ("SQ", "UI", "UN")}


def _skip_private(buf: bytes | bytearray, pos: int, limit: int, last: int) -> tuple[int, int]:
    """Past the plain private elements from ``pos`` (explicit VR LE, defined lengths, no
    SQ/UI/UN, ascending): where the run stops and its last tag.  Anything else is left to
    the parser's general path, which also reports errors."""
    head = _HEAD_LE.unpack_from
    long_length = _LENGTH_LE.unpack_from
    simple = _SIMPLE_VRS
    while pos + 12 <= limit:
        group, elem, vrb, short = head(buf, pos)
        if not group & 1:
            break
        is_long = simple.get(vrb)
        if is_long is None:
            break
        if is_long:
            (length,) = long_length(buf, pos + 8)
            end = pos + 12 + length
        else:
            length = short
            end = pos + 8 + length
        tag = (group << 16) | elem
        if tag <= last or length == UNDEFINED or end > limit or tag >= 0xFFFE0000:
            break  # the general path decides (order error, truncation, delimiter...)
        last = tag
        pos = end
    return pos, last


def _private_run(tag: int, start: int, end: int) -> Element:
    return Element(tag, PRIVATE_RUN_VR, start, start, end - start, end)


class _Parser:
    """Walks a buffer into :class:`Element` trees; raises DicomFormatError on bad data."""

    def __init__(self, buf: bytes | bytearray, stop_at_pixels: bool = False,
                 max_depth: int = _MAX_DEPTH,
                 private_runs: bool = False):
        self.buf = buf
        self.size = len(buf)
        self.stop_at_pixels = stop_at_pixels
        self.private_runs = private_runs
        self.max_depth = max_depth
        self.stopped = False  # stop_at_pixels: the walk ended early (either reason below)
        self.at_pixels = False  # ... because it reached the pixel data: the header is whole
        self.too_deep = False

    def parse(self, pos: int, end: int, enc: Encoding, depth: int = 0) -> list[Element]:
        """Elements from ``pos`` up to ``end`` (or an item delimiter when ``end`` is None)."""
        return self._dataset(pos, end, enc, depth, until_item_end=False)[0]

    def _dataset(
        self, pos: int, end: int | None, enc: Encoding, depth: int, until_item_end: bool
    ) -> tuple[list[Element], int]:
        if depth > self.max_depth:
            self.too_deep = True
            raise DicomFormatError(f"sequences nested deeper than {self.max_depth} levels")
        buf = self.buf
        limit = self.size if end is None else end
        if limit > self.size:
            raise DicomFormatError("truncated: an item or sequence runs past the end of the file")
        elements: list[Element] = []
        append = elements.append
        head = (_HEAD_LE if enc.little else _HEAD_BE).unpack_from
        long_length = (_LENGTH_LE if enc.little else _LENGTH_BE).unpack_from
        implicit = enc.implicit
        stop = self.stop_at_pixels and depth == 0
        vr_info = _VR_INFO
        # private runs (see read_dicom): top level, Explicit VR Little Endian only
        runs = self.private_runs and depth == 0 and not implicit and enc.little
        run_start = run_tag = run_last = -1
        while pos < limit:
            if pos + 8 > limit:
                if until_item_end and end is None:
                    raise DicomFormatError("truncated: missing item delimiter")
                if depth == 0 and not buf[pos:limit].strip(b"\0"):
                    break  # trailing NUL padding after the last element: copied verbatim
                raise DicomFormatError(f"truncated element header at byte {pos}")
            group, elem, vrb, short = head(buf, pos)
            tag = (group << 16) | elem
            if tag >= 0xFFFE0000:
                if tag == ITEM_END and until_item_end:
                    return elements, pos + 8
                raise DicomFormatError(f"unexpected item or delimiter tag at byte {pos}")
            if stop and tag >= PIXEL_DATA:
                self.stopped = self.at_pixels = True
                if run_start >= 0:
                    if tag <= run_last:
                        raise _RunOutOfOrder
                    append(_private_run(run_tag, run_start, pos))
                return elements, pos
            if implicit:
                (length,) = long_length(buf, pos + 4)
                vr = dictionary_vr(tag)
                value_start = pos + 8
            else:
                info = vr_info.get(vrb)
                if info is None:
                    if tag == 0 and depth == 0 and not buf[pos:limit].strip(b"\0"):
                        break
                    raise DicomFormatError(
                        f"invalid VR for element {tag_str(tag)} at byte {pos} (not a known VR)"
                    )
                vr, is_long = info
                if is_long:
                    if pos + 12 > limit:
                        raise DicomFormatError(f"truncated element header at byte {pos}")
                    (length,) = long_length(buf, pos + 8)
                    value_start = pos + 12
                else:
                    length = short
                    value_start = pos + 8
            if runs:
                if (tag & 0x10000 and length != UNDEFINED and vr != "SQ" and vr != "UI"
                        and value_start + length <= limit
                        and (vr != "UN" or buf[value_start:value_start + 4] not in _ITEM_TAG_BYTES)):
                    if run_start < 0:
                        run_start = pos
                        run_tag = tag
                    elif tag <= run_last:
                        raise _RunOutOfOrder
                    pos, run_last = _skip_private(buf, value_start + length, limit, tag)
                    continue
                if run_start >= 0:
                    if tag <= run_last:
                        raise _RunOutOfOrder
                    append(_private_run(run_tag, run_start, pos))
                    run_start = -1
            if length == UNDEFINED:
                el = Element(tag, vr, pos, value_start, length, 0)
                el.end = self._undefined(el, enc, depth)
            else:
                el_end = value_start + length
                if el_end > limit:
                    if self.stop_at_pixels and el_end > self.size and end is None:
                        self.stopped = True
                        return elements, pos
                    raise DicomFormatError(
                        f"truncated: element {tag_str(tag)} declares {length} bytes, "
                        f"only {max(limit - value_start, 0)} remain"
                    )
                el = Element(tag, vr, pos, value_start, length, el_end)
                if vr == "SQ":
                    el.items = self._items(value_start, el_end, enc, depth)
                    el.item_enc = enc
                elif (vr == "UN" and length >= 8 and tag != PIXEL_DATA
                      and buf[value_start:value_start + 4] in _ITEM_TAG_BYTES):
                    # an unknown-VR value that starts with an item tag may hide a sequence
                    # (PHI inside): CP-246, implicit little endian unless the file is implicit
                    sub = enc if enc.implicit else IMPLICIT_LE_ENC
                    try:
                        el.items = self._items(value_start, el_end, sub, depth)
                        el.item_enc = sub
                    except DicomFormatError:
                        if self.too_deep:
                            raise  # not "no sequence after all": that would hide what is inside
                        el.items = None
            append(el)
            pos = el.end
        if run_start >= 0:
            append(_private_run(run_tag, run_start, pos))
        if until_item_end and end is None:
            raise DicomFormatError("truncated: missing item delimiter")
        return elements, pos

    def _undefined(self, el: Element, enc: Encoding, depth: int) -> int:
        """Parse an undefined-length value; returns the offset after its delimiter."""
        if el.tag == PIXEL_DATA or el.vr in ("OB", "OW"):
            return self._fragments(el.value_start, enc)
        sub = enc
        if el.vr == "UN":
            sub = IMPLICIT_LE_ENC  # CP-246: UN of undefined length is an implicit LE sequence
        elif el.vr != "SQ":
            raise DicomFormatError(f"undefined length on non-sequence element {tag_str(el.tag)}")
        items, pos = self._items_undefined(el.value_start, sub, depth)
        el.items = items
        el.item_enc = sub
        return pos

    def _fragments(self, pos: int, enc: Encoding) -> int:
        """Skip encapsulated pixel data fragments up to the sequence delimiter."""
        buf, e = self.buf, enc.endian
        while True:
            if pos + 8 > self.size:
                raise DicomFormatError("truncated encapsulated pixel data")
            group, elem, length = struct.unpack_from(e + "HHI", buf, pos)
            tag = (group << 16) | elem
            if tag == SEQ_END:
                return pos + 8
            if tag != ITEM or length == UNDEFINED:
                raise DicomFormatError(f"bad fragment in encapsulated pixel data at byte {pos}")
            pos += 8 + length
            if pos > self.size:
                raise DicomFormatError("truncated encapsulated pixel data")

    def _items(self, pos: int, end: int, enc: Encoding, depth: int) -> list[Item]:
        """Items of a defined-length sequence value ``[pos, end)``."""
        items: list[Item] = []
        e = enc.endian
        while pos < end:
            if pos + 8 > end:
                raise DicomFormatError(f"truncated item header at byte {pos}")
            group, elem, length = struct.unpack_from(e + "HHI", self.buf, pos)
            tag = (group << 16) | elem
            if tag == SEQ_END:  # tolerated stray delimiter inside a defined-length sequence
                pos += 8
                continue
            if tag != ITEM:
                raise DicomFormatError(f"expected an item at byte {pos}, found {tag_str(tag)}")
            items.append(self._item(pos, length, enc, depth, end))
            pos = items[-1].end
        if pos != end:
            raise DicomFormatError("item lengths overrun their sequence")
        return items

    def _items_undefined(self, pos: int, enc: Encoding, depth: int) -> tuple[list[Item], int]:
        items: list[Item] = []
        e = enc.endian
        while True:
            if pos + 8 > self.size:
                raise DicomFormatError("truncated: missing sequence delimiter")
            group, elem, length = struct.unpack_from(e + "HHI", self.buf, pos)
            tag = (group << 16) | elem
            if tag == SEQ_END:
                return items, pos + 8
            if tag != ITEM:
                raise DicomFormatError(f"expected an item at byte {pos}, found {tag_str(tag)}")
            items.append(self._item(pos, length, enc, depth, None))
            pos = items[-1].end

    def _item(self, pos: int, length: int, enc: Encoding, depth: int, end: int | None) -> Item:
        value_start = pos + 8
        if length == UNDEFINED:
            elements, after = self._dataset(value_start, None, enc, depth + 1, until_item_end=True)
            return Item(pos, value_start, length, after, elements)
        item_end = value_start + length
        if item_end > (self.size if end is None else end):
            raise DicomFormatError(f"truncated: item at byte {pos} runs past its sequence")
        elements, _ = self._dataset(value_start, item_end, enc, depth + 1, until_item_end=False)
        return Item(pos, value_start, length, item_end, elements)


def parse_elements(
    buf: bytes | bytearray, pos: int, end: int | None, enc: Encoding
) -> list[Element]:
    """Parse a data set occupying ``buf[pos:end]``; one that runs to the end of ``buf`` (a
    decrypted payload, a few hundred elements where a scanner's private groups went into
    it; the elements from a split file's Pixel Data on) through :func:`walk`, by the
    compiled walker when there is one."""
    if end is None or end == len(buf):
        return walk(buf, enc, False, False, pos)[0]
    return _Parser(buf).parse(pos, end, enc)


# --------------------------------------------------------------------------- files


class DicomFile:
    """A parsed DICOM file: preamble and meta kept as bytes, the body as an element tree.

    ``body`` is the data set bytes (inflated for the deflated transfer syntax); element
    offsets index into it.
    """

    __slots__ = ("body", "complete", "deflated", "elements", "enc", "meta", "meta_bytes",
                 "raw_prefix", "tags", "transfer_syntax")

    def __init__(self, raw_prefix: bytes, meta: list[Element], meta_bytes: bytes,
                 transfer_syntax: str, enc: Encoding, body: bytes, elements: list[Element],
                 deflated: bool = False, complete: bool = True,
                 tags: list[int] | None = None) -> None:
        self.raw_prefix = raw_prefix  # preamble + "DICM" (may be empty without them)
        self.meta = meta  # offsets into ``meta_bytes``
        self.meta_bytes = meta_bytes
        self.transfer_syntax = transfer_syntax
        self.enc = enc
        self.body = body
        self.elements = elements
        self.deflated = deflated
        self.complete = complete
        #: tags of ``elements`` (ascending, checked by read_dicom), built on first use
        self.tags = tags

    def __repr__(self) -> str:
        return (f"DicomFile(transfer_syntax={self.transfer_syntax!r}, "
                f"elements={len(self.elements)}, body={len(self.body)} bytes, "
                f"deflated={self.deflated}, complete={self.complete})")

    def top(self, tag: int) -> Element | None:
        """The top-level element with ``tag`` (binary search: elements are sorted)."""
        tags = self.tags
        if tags is None:
            tags = self.tags = [el.tag for el in self.elements]
        index = bisect_left(tags, tag)
        if index < len(tags) and tags[index] == tag:
            return self.elements[index]
        return None

    def top_value(self, tag: int) -> bytes | None:
        el = self.top(tag)
        if el is None or el.undefined:
            return None
        return el.value(self.body)

    def top_text(self, tag: int) -> str | None:
        value = self.top_value(tag)
        if value is None:
            return None
        return value.rstrip(b"\0 ").decode("latin-1")

    @property
    def trailer(self) -> bytes:
        """Bytes after the last top-level element (NUL padding some writers leave)."""
        return self.body[self.elements[-1].end:] if self.elements else self.body

    def meta_element(self, tag: int) -> Element | None:
        for el in self.meta:
            if el.tag == tag:
                return el
        return None


def meta_elements(data: bytes, pos: int, shift: int = 0) -> tuple[list[Element], int]:
    """Read group 0002 elements one by one (explicit VR LE) without overrunning the body;
    their offsets plus ``shift``.  By the compiled walker when there is one (see
    :func:`walk`)."""
    if _WALKER is not None:
        found = _WALKER.meta(data, pos, shift)
        if found is not None:
            return found  # type: ignore[no-any-return]
    elements, pos = _meta_elements_python(data, pos)
    return [_shift(el, shift) for el in elements] if shift else elements, pos


def _meta_elements_python(data: bytes, pos: int) -> tuple[list[Element], int]:
    elements: list[Element] = []
    size = len(data)
    while pos + 8 <= size:
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vrb = bytes(data[pos + 4:pos + 6])
        if vrb in LONG_VRS:
            if pos + 12 > size:
                raise DicomFormatError("truncated file meta information")
            (length,) = struct.unpack_from("<I", data, pos + 8)
            value_start = pos + 12
        elif vrb in KNOWN_VRS:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            value_start = pos + 8
        else:
            raise DicomFormatError("invalid VR in file meta information (not a known VR)")
        if length == UNDEFINED or value_start + length > size:
            raise DicomFormatError("truncated file meta information")
        elements.append(
            Element((group << 16) | elem, vrb.decode(), pos, value_start, length,
                    value_start + length)
        )
        pos = value_start + length
    return elements, pos


def _headerless_syntax(data: bytes) -> str:
    """Transfer syntax of a file with neither preamble nor meta, judged by its first tag."""
    if len(data) < 8:
        raise DicomFormatError("not a DICOM file (too short)")
    if struct.unpack_from("<H", data, 0)[0] == 0x0008:
        return EXPLICIT_LE if data[4:6] in KNOWN_VRS else IMPLICIT_LE
    if struct.unpack_from(">H", data, 0)[0] == 0x0008 and data[4:6] in KNOWN_VRS:
        return EXPLICIT_BE
    raise DicomFormatError("not a DICOM file (no DICM prefix, no recognisable header)")


def split_file(data: bytes, meta_relative: bool = False
               ) -> tuple[bytes, list[Element], bytes, str, int]:
    """Locate preamble, meta and body start.  Returns prefix, meta, meta bytes, TS, offset.
    The meta's offsets index ``data``, or the meta bytes with ``meta_relative``."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        prefix_end = 132
    elif data[:4] == b"DICM":
        prefix_end = 4
    else:
        prefix_end = 0
    meta, meta_end = meta_elements(data, prefix_end, -prefix_end if meta_relative else 0)
    if prefix_end and not meta:
        raise DicomFormatError("no file meta information after the DICM prefix")
    if prefix_end == 0 and not meta:
        return b"", [], b"", _headerless_syntax(data), 0
    ts = ""
    shift = prefix_end if meta_relative else 0
    for el in meta:
        if el.tag == TRANSFER_SYNTAX_UID:
            start = el.value_start + shift
            ts = data[start:start + el.length].rstrip(b"\0 ").decode("ascii", "replace")
    if not ts:
        if meta_end + 8 > len(data):  # the file ends inside group 0002
            raise DicomFormatError("truncated file meta information (no transfer syntax)")
        raise DicomFormatError("file meta information has no transfer syntax (0002,0010)")
    return data[:prefix_end], meta, data[prefix_end:meta_end], ts, meta_end


def read_dicom(data: bytes, stop_at_pixels: bool = False, private_runs: bool = False
               ) -> DicomFile:
    """Parse a whole file held in memory.

    With ``stop_at_pixels`` the walk stops at the first top-level tag >= (7FE0,0010) and
    tolerates a buffer that ends before it (for header-only scans of partial reads).

    With ``private_runs`` (Explicit VR Little Endian data sets only), consecutive top-level
    private elements that are neither sequences (SQ, or UN holding items) nor UIDs come
    back as one element per run: the first element's tag, VR ``UN``, the run's bytes as its
    value.  For callers that handle every such element alike - the de-identifier when the
    profile removes all private attributes, the scan that only wants UIDs and sequences:
    a typical CT header is two thirds private elements, and each costs a Python object.
    """
    return _read_dicom(data, stop_at_pixels, private_runs)[0]


def read_to_pixels(data: bytes, private_runs: bool = False) -> tuple[DicomFile, bool]:
    """:func:`read_dicom` with ``stop_at_pixels``, and whether the walk reached the pixel
    data (the header is then whole, whatever follows in ``data``)."""
    return _read_dicom(data, True, private_runs)


def _read_dicom(data: bytes, stop_at_pixels: bool, private_runs: bool = False
                ) -> tuple[DicomFile, bool]:
    """:func:`read_dicom`, and whether the walk stopped because it reached the pixel data."""
    prefix, meta, meta_bytes, ts, body_start = split_file(data, meta_relative=True)
    enc = encoding_for(ts)
    deflated = ts == DEFLATED_LE
    body = data[body_start:]
    if deflated:
        body = _inflate(body)
    if not enc.implicit and len(body) >= 6 and body[4:6] not in KNOWN_VRS:
        enc = Encoding(enc.little, True)  # meta says explicit, data set is implicit: tolerated
    elements, stopped, at_pixels = walk(body, enc, stop_at_pixels, private_runs)
    if not elements and not stop_at_pixels:
        raise DicomFormatError("empty data set")
    tags = _check_order(elements)
    return (DicomFile(prefix, meta, meta_bytes, ts, enc, body, elements, deflated,
                      complete=not stopped, tags=tags), at_pixels)


def walk_python(body: bytes | bytearray, enc: Encoding, stop_at_pixels: bool,
                private_runs: bool, start: int = 0) -> tuple[list[Element], bool, bool]:
    """A data set's element tree from ``start`` to the end of ``body``, whether the walk
    stopped early, and whether at the pixel data (:class:`_Parser`; raises
    DicomFormatError on bad data)."""
    parser = _Parser(body, stop_at_pixels=stop_at_pixels, private_runs=private_runs)
    try:
        elements = parser.parse(start, len(body), enc)
    except _RunOutOfOrder:
        parser = _Parser(body, stop_at_pixels=stop_at_pixels)
        elements = parser.parse(start, len(body), enc)
    return elements, parser.stopped, parser.at_pixels


def walk(body: bytes | bytearray, enc: Encoding, stop_at_pixels: bool,
         private_runs: bool, start: int = 0) -> tuple[list[Element], bool, bool]:
    """:func:`walk_python`, by the compiled walker when there is one.

    Why: the walk is a byte loop, ~0.3 us per element in Python and a fifth of the CPU of a
    small file.  The compiled walker (``tasks/_walker.c``) builds the same trees; where the
    Python walker would raise it returns None and the Python walker runs, so every error
    and its message come from one place.  ``ANONPIPE_PURE_PYTHON=1`` turns it off."""
    if _WALKER is not None:
        walked = _WALKER.walk(body, enc, enc.little, enc.implicit, stop_at_pixels,
                              private_runs, _MAX_DEPTH, start)
        if walked is not None:
            return walked  # type: ignore[no-any-return]
    return walk_python(body, enc, stop_at_pixels, private_runs, start)


def compiled(name: str) -> Any:
    """The compiled module ``tasks.<name>`` (``_walker``, ``_editloops``, ``_inventory``);
    None when ``ANONPIPE_PURE_PYTHON`` turns the compiled modules off, or when it is not
    built (a source tree without `make install`): its caller's Python code then gives the
    same results."""
    if os.environ.get("ANONPIPE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(f"tasks.{name}")
    except ImportError:
        return None


def _load_walker() -> Any:
    """The compiled walker, set up with this module's classes; None when there is none."""
    walker = compiled("_walker")
    if walker is not None:
        walker.setup(Element, Item, IMPLICIT_LE_ENC, dictionary_vr)
    return walker


_WALKER = _load_walker()


def _inflate(stream: bytes) -> bytes:
    """Raw inflate (PS3.5 A.5), capped: deflate expands up to ~1000-fold, and a small hostile
    file must not exhaust a worker's memory."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(stream, MAX_INFLATED)
    except zlib.error as exc:
        raise DicomFormatError(f"corrupt deflated data set: {exc}") from None
    if inflater.unconsumed_tail:
        raise DicomFormatError(
            f"deflated data set inflates to more than {MAX_INFLATED >> 20} MiB: refused")
    if not inflater.eof:
        raise DicomFormatError("corrupt deflated data set: incomplete or truncated stream")
    return body


def _shift(el: Element, delta: int) -> Element:
    return Element(el.tag, el.vr, el.start + delta, el.value_start + delta, el.length,
                   el.end + delta)


def _check_order(elements: list[Element]) -> list[int]:
    """The top-level tags, checked to be strictly ascending (PS3.5 7.1): by the compiled
    walker where there is one, the error found here."""
    if _WALKER is not None:
        ascending = _WALKER.ascending_tags(elements)
        if ascending is not None:
            return ascending  # type: ignore[no-any-return]
    tags = [el.tag for el in elements]
    if not all(map(operator.lt, tags, itertools.islice(tags, 1, None))):
        previous = -1
        for tag in tags:
            if tag <= previous:
                raise DicomFormatError(f"elements out of order or repeated at {tag_str(tag)}")
            previous = tag
    return tags


def cut_element_end(data: bytes) -> int:
    """Where in the file the top-level element ends that runs past ``data`` (the file's
    first bytes), found from the top-level element headers alone; 0 when not known (a data
    set neither Explicit nor Implicit VR Little Endian, an undefined length on the way, a
    damaged header).  Why: a reader looking for the end of a header reads past a long
    element (an encapsulated document) at once, not in doublings each parsed again."""
    try:
        _, _, _, syntax, pos = split_file(data)
    except DicomFormatError:
        return 0
    if syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        return 0
    implicit = syntax == IMPLICIT_LE
    while pos + 8 <= len(data):
        header = data[pos:pos + 12]
        if implicit:
            (length,) = _LENGTH_LE.unpack_from(header, 4)
            value_start = pos + 8
        elif header[4:6] in LONG_VRS:
            if len(header) < 12:
                return 0
            (length,) = _LENGTH_LE.unpack_from(header, 8)
            value_start = pos + 12
        elif header[4:6] in KNOWN_VRS:
            length = _HEAD_LE.unpack_from(header)[3]
            value_start = pos + 8
        else:
            return 0
        if length == UNDEFINED:
            return 0
        pos = value_start + length
        if pos > len(data):
            return pos
    return 0


def read_header(path: Path, first_chunk: int = 16384, private_runs: bool = False) -> DicomFile:
    """Parse ``path`` up to its pixel data, reading as little of the file as possible
    (:func:`read_header_at`)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_header_at(fd, first_chunk, private_runs)
    finally:
        os.close(fd)


def read_header_at(fd: int, first_chunk: int = 16384, private_runs: bool = False
                   ) -> DicomFile:
    """Parse the file open at ``fd`` up to its pixel data, reading as little of it as
    possible (positioned reads: the descriptor's offset is left alone).

    Reads ``first_chunk`` bytes, then doubles the buffer until the walk reaches the pixel
    data or the end of the file: each buffer is parsed once (a walk that reached the pixel
    data is final, whatever the size of the buffer).
    """
    data = os.pread(fd, first_chunk, 0)
    if not data:
        raise DicomFormatError("empty file")
    eof = len(data) < first_chunk
    while True:
        try:
            parsed, at_pixels = _read_dicom(data, True, private_runs)
        except DicomFormatError:
            if eof:
                raise
            parsed = None
            at_pixels = False
        if parsed is not None and (at_pixels or eof):
            return parsed
        # the buffer ended inside the header: read on (or the truncation is real),
        # past a long element at once (as far as the file goes: a length may lie)
        long_end = min(cut_element_end(data), os.fstat(fd).st_size)
        want = max(len(data), 65536, long_end + 65536 - len(data))
        more = os.pread(fd, want, len(data))
        eof = len(more) < want
        if not more:
            if parsed is None:
                return read_dicom(data, True, private_runs)  # raises the real error
            return parsed
        data += more


# --------------------------------------------------------------------------- encoding


# the three element header layouts by byte order, compiled once: a changed element of every
# file is encoded through them (PS3.5 7.1.1-7.1.3)
_IMPLICIT_HEADER = {e: struct.Struct(e + "HHI").pack for e in "<>"}
_LONG_HEADER = {e: struct.Struct(e + "HH2sHI").pack for e in "<>"}
_SHORT_HEADER = {e: struct.Struct(e + "HH2sH").pack for e in "<>"}
_VR_BYTES = {row.name: row.name.encode() for row in VRS.values()}


def element_header(tag: int, vr: str, length: int, enc: Encoding) -> bytes:
    """Header bytes of one element in ``enc``."""
    e = "<" if enc.little else ">"
    group, elem = tag >> 16, tag & 0xFFFF
    if enc.implicit:
        return _IMPLICIT_HEADER[e](group, elem, length)
    vrb = _VR_BYTES.get(vr) or vr.encode("ascii")
    if vrb in LONG_VRS:
        return _LONG_HEADER[e](group, elem, vrb, 0, length)
    if length > 0xFFFF:
        return _LONG_HEADER[e](group, elem, b"UN", 0, length)
    return _SHORT_HEADER[e](group, elem, vrb, length)


def item_header(length: int, enc: Encoding) -> bytes:
    return struct.pack(enc.endian + "HHI", 0xFFFE, 0xE000, length)


def item_end(enc: Encoding) -> bytes:
    return struct.pack(enc.endian + "HHI", 0xFFFE, 0xE00D, 0)


def sequence_end(enc: Encoding) -> bytes:
    return struct.pack(enc.endian + "HHI", 0xFFFE, 0xE0DD, 0)


def pad_value(value: bytes, vr: str) -> bytes:
    """Pad to even length: NUL for UI (and binary), space for text (PS3.5 6.2)."""
    if len(value) % 2 == 0:
        return value
    if vr in ("UI", "OB", "UN"):
        return value + b"\0"
    return value + b" "


def swap_bytes(value: bytes, width: int) -> bytes:
    """Reverse the byte order of each ``width``-byte unit."""
    if width <= 1 or len(value) % width:
        return value
    arr = bytearray(len(value))
    for i in range(width):
        arr[i::width] = value[width - 1 - i::width]
    return bytes(arr)
