"""A large file in memory without its pixel data, which stays a range of the open file.

Why: de-identification never changes Pixel Data, yet reading a file whole costs memory in
proportion to it (a 2 GB multi-frame file, 2 GB per worker, twice over) and two copies
through the process.  Here the header up to Pixel Data (7FE0,0010) is read and parsed as
usual, and so are the elements after it (a trailing padding (FFFC,FFFC), say); in the
buffer the de-identifier sees, Pixel Data stands as a stand-in of the same tag and VR with
an empty value, and the writer puts the real element back as a
:class:`~tasks.fileio.FileRange`, which the kernel copies file to file.

Only the plain case splits: a data set that is not deflated, little endian, Pixel Data at
the top level with nothing of group 7FE0 before it (a (7FE0,0000) group length would be
measured with the stand-in), a defined length or encapsulated fragments up to the sequence
delimiter, within the file.  Anything else returns None and the caller reads the file
whole, so every other file is handled as before, errors included; when the attempt has
read the file to its end anyway (no Pixel Data: an encapsulated PDF, a structure set), it
hands those bytes over (:class:`WholeFile`) rather than have them read twice.  The callers
also give way (read whole) when an edit would touch Pixel Data itself: a profile acting on
it, a payload restoring it, or a dumb-mode operation naming it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import NamedTuple

from tasks.dicomio import (
    ITEM,
    SEQ_END,
    UNDEFINED,
    DicomFile,
    cut_element_end,
    parse_elements,
    read_to_pixels,
)
from tasks.edit import Chunk
from tasks.errors import DicomFormatError
from tasks.fileio import FileRange, Piece
from tasks.tags import PIXEL_DATA

#: files this large and larger are read up to their pixel data only (below, the extra copy
#: call costs more than it saves: 400 slices of 10-40 KB took 0.34-0.36 ms each split
#: against 0.33 read whole; 200 of 530 KB took 0.59-0.63 ms against 0.97-0.98)
SPLIT_FROM = 256 << 10
#: the first read of a file's head: as much as the last file split in this process needed
#: (the files of a batch are a series' slices, alike), rounded up to a power of two, and
#: at least MIN_FIRST_READ; doubled while the header runs past it, up to MAX_HEADER.  Why
#: not always plenty: a read copies every byte asked for out of the page cache (a 512x512
#: CT slice's output made with 64 KB read first took 0.037 ms of system time, with 16 KB
#: 0.017: ``benchmarks/components.py --first-reads``)
MIN_FIRST_READ = 16 << 10
MAX_HEADER = 64 << 20
_first_read = MIN_FIRST_READ
_ITEM_HEADER = struct.Struct("<HHI")
#: Pixel Data's VRs in explicit VR files (PS3.5 8.2, and UN from a converted file)
_PIXEL_VRS = frozenset({b"OB", b"OW", b"UN"})


class SplitFile(NamedTuple):
    """A file parsed with Pixel Data as a stand-in (empty value) at body offset ``at``;
    ``pixels`` is the real element, header and value, in the file."""

    df: DicomFile
    at: int
    pixels: FileRange


class WholeFile(NamedTuple):
    """The whole file's bytes, read by an attempt to split that found no Pixel Data before
    the end (an encapsulated PDF, a structure set): the caller uses them as read whole."""

    data: bytes


class _View(NamedTuple):
    """The file open at ``fd`` as the split sees it: without the ``hole_length`` bytes at
    ``hole_at`` when there is a hole (a top-level element never read: see ``without``)."""

    fd: int
    hole_at: int = -1
    hole_length: int = 0

    def real(self, offset: int) -> int:
        """The file offset of the view's ``offset``."""
        return offset + self.hole_length if offset >= self.hole_at >= 0 else offset


def split_pixel_tail(fd: int, size: int, private_runs: bool = False,
                     without: tuple[int, int] | None = None) -> SplitFile | WholeFile | None:
    """The file open at ``fd`` (``size`` bytes) parsed without its pixel data; None when it
    does not split (read it whole), or :class:`WholeFile` when the attempt read it all.
    ``without``: (offset, length) of whole top-level elements before the pixel data that
    are neither read nor parsed (a large encrypted payload, opened by itself): the file
    is split as if they were not there."""
    view = _View(fd) if without is None else _View(fd, *without)
    size -= view.hole_length
    head, df = _read_head(view, size, private_runs)
    split = None if df is None else _split(view, size, head, df)
    if (split is None and without is None and head and len(head) == size
            and not _pread_full(view, 1, size)):
        return WholeFile(head)  # read to its end (and not grown since): not read again
    return split


def _read_head(view: _View, size: int, private_runs: bool) -> tuple[bytes, DicomFile | None]:
    """The file's first bytes, and their parse when it reached the Pixel Data (else None):
    read in doublings up to MAX_HEADER, and past a long element at once."""
    global _first_read
    want = _first_read
    while True:
        head = _pread_full(view, min(want, size), 0)
        if len(head) < min(want, size):
            return head, None  # the file shrank under us: the whole read reports it
        try:
            df, at_pixels = read_to_pixels(head, private_runs)
        except DicomFormatError:
            df, at_pixels = None, False  # maybe only cut short by the read: read on
        if df is not None and at_pixels:
            if not df.deflated:  # what it needed: to the Pixel Data element, with room
                needed = len(head) - len(df.body) + (df.elements[-1].end if df.elements else 0)
                _first_read = max(MIN_FIRST_READ, 1 << (needed + 1024).bit_length())
            return head, df
        if len(head) >= size or want >= MAX_HEADER:
            return head, None
        # read past a long element at once (an encapsulated document): not in doublings
        want = max(want * 2, cut_element_end(head) + MIN_FIRST_READ)


def _split(view: _View, size: int, head: bytes, df: DicomFile) -> SplitFile | None:
    """``df`` (parsed from ``head`` up to its Pixel Data) with the pixel data as a stand-in
    and the elements after it parsed; None unless it is the plain case."""
    if df.deflated or not df.enc.little:
        return None  # read whole: the usual path decides, errors included
    cut = df.elements[-1].end if df.elements else 0
    if df.elements and df.elements[-1].tag >> 16 == PIXEL_DATA >> 16:
        return None
    body_start = len(head) - len(df.body)
    located = _pixel_data_end(view, size, df, cut, body_start)
    if located is None:
        return None
    header_length, end = located
    tail = _pread_full(view, size - end, end)
    if len(tail) != size - end:
        return None  # the file changed under us
    stand_in = df.body[cut:cut + header_length - 4] + b"\0\0\0\0"
    body = df.body[:cut] + stand_in + tail
    try:
        after = parse_elements(body, cut, len(body), df.enc)
    except DicomFormatError:
        return None
    # the header's order is checked, and it ends below (7FE0,0010): the rest must ascend too
    if not after or after[0].tag != PIXEL_DATA or any(
            a.tag >= b.tag for a, b in pairwise(after)):
        return None
    tags = df.tags if df.tags is not None else [el.tag for el in df.elements]
    df.elements += after
    df.body, df.tags, df.complete = body, tags + [el.tag for el in after], True
    if body_start + cut < view.hole_at:
        return None  # the hole is not before the pixel data
    return SplitFile(df, cut, FileRange(view.fd, view.real(body_start + cut),
                                        end - body_start - cut))


#: what an engine renders a split file with: the file parsed with its Pixel Data a stand-in,
#: and (the stand-in's body offset, the object to render in its place); None: give way
Render = Callable[[DicomFile, tuple[int, bytes]], Sequence[Chunk] | None]


def split_rendered(fd: int, size: int, render: Render, private_runs: bool = False
                   ) -> list[Piece] | WholeFile | None:
    """The pieces ``render`` makes of the file open at ``fd`` split, with the real pixel
    data put back in the stand-in's place as a :class:`~tasks.fileio.FileRange`.  None, or
    the file's bytes when already read, when it does not split or ``render`` did not keep
    the stand-in (an edit of the pixel data itself): the caller handles the file whole."""
    split = read_split(fd, size, private_runs)
    if not isinstance(split, SplitFile):
        return split
    # a new object, found again by identity in the rendered pieces
    marker = bytes(bytearray(b"pixel data"))
    return put_back(render(split.df, (split.at, marker)), marker, split.pixels)


def read_split(fd: int, size: int, private_runs: bool = False,
               without: tuple[int, int] | None = None) -> SplitFile | WholeFile | None:
    """:func:`split_pixel_tail`, a read error being the input's (one line, no traceback)."""
    try:
        return split_pixel_tail(fd, size, private_runs, without)
    except OSError as exc:  # the input's error, not an output error
        raise DicomFormatError(f"cannot read: {exc.strerror or exc}") from None


def put_back(pieces: Sequence[Chunk] | None, marker: bytes, pixels: FileRange
             ) -> list[Piece] | None:
    """``pieces`` with the one ``marker`` among them (found by identity) replaced by
    ``pixels``; None when there is not exactly one (the stand-in was edited)."""
    if pieces is None:
        return None
    spots = [i for i, piece in enumerate(pieces) if piece is marker]
    if len(spots) != 1:
        return None
    out: list[Piece] = list(pieces)
    out[spots[0]] = pixels
    return out


def _pixel_data_end(view: _View, size: int, df: DicomFile, cut: int, body_start: int
                    ) -> tuple[int, int] | None:
    """The length of the header of the Pixel Data element at body offset ``cut``, and where
    the element ends in the file; None when it is not Pixel Data, runs past the end of the
    file, or its fragments are not well formed."""
    header = df.body[cut:cut + 12]
    if len(header) < 12:
        return None
    group, elem = struct.unpack_from("<HH", header)
    if (group << 16 | elem) != PIXEL_DATA:
        return None  # a later tag (private, padding) at the cut: not the plain case
    if df.enc.implicit:
        (length,) = struct.unpack_from("<I", header, 4)
        value_start = body_start + cut + 8
    elif header[4:6] in _PIXEL_VRS:
        (length,) = struct.unpack_from("<I", header, 8)
        value_start = body_start + cut + 12
    else:
        return None  # any other VR: the usual parser judges it
    header_length = value_start - body_start - cut
    if length != UNDEFINED:
        end = value_start + length
        return (header_length, end) if end <= size else None
    pos = value_start
    while pos + 8 <= size:  # encapsulated: item headers only, never the fragments
        header = _pread_full(view, 8, pos)
        if len(header) < 8:
            return None  # the file shrank under us: the whole read reports it
        group, elem, length = _ITEM_HEADER.unpack(header)
        tag = group << 16 | elem
        if tag == SEQ_END:
            return header_length, pos + 8
        if tag != ITEM or length == UNDEFINED:
            return None
        pos += 8 + length
    return None


def _pread_full(view: _View, count: int, offset: int) -> bytes:
    """``count`` bytes at the view's ``offset`` (fewer only at the end of the file)."""
    if offset < view.hole_at < offset + count:  # on both sides of the hole
        first = view.hole_at - offset
        return _pread_full(view, first, offset) + _pread_full(view, count - first,
                                                              view.hole_at)
    fd, offset = view.fd, view.real(offset)
    chunks = []
    while count > 0:
        data = os.pread(fd, count, offset)
        if not data:
            break
        chunks.append(data)
        count -= len(data)
        offset += len(data)
    return b"".join(chunks)
