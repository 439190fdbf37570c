"""A large file as its header in memory plus its pixel data as a range of the open file.

Why: de-identification never changes Pixel Data, yet reading a file whole costs memory in
proportion to it (a 2 GB multi-frame file, 2 GB per worker) and two copies through the
process.  When Pixel Data (7FE0,0010) is the last element of the file, the header before
it is parsed as usual and the pixel bytes go to the output as a
:class:`~tasks.fileio.FileRange`, which the kernel copies file to file.

Only the plain case splits: a data set that is not deflated, little endian, Pixel Data at
the top level with nothing of group 7FE0 before it (a (7FE0,0000) group length would be
measured without it), and its value (defined length, or encapsulated fragments up to the
sequence delimiter) ending exactly at the end of the file.  Anything else returns None and
the caller reads the file whole, so every other file is handled as before, errors included.
"""

from __future__ import annotations

import os
import struct

from tasks.dicomio import (
    ITEM,
    PIXEL_DATA,
    SEQ_END,
    UNDEFINED,
    DicomFile,
    read_to_pixels,
)
from tasks.errors import DicomFormatError
from tasks.fileio import FileRange

#: files this large and larger are read up to their pixel data only (below, the extra copy
#: call costs more than it saves: 400 slices of 10-40 KB took 0.34-0.36 ms each split
#: against 0.33 read whole; 200 of 530 KB took 0.59-0.63 ms against 0.97-0.98)
SPLIT_FROM = 256 << 10
#: the first read; doubled while the header runs past it, up to MAX_HEADER
FIRST_READ = 64 << 10
MAX_HEADER = 64 << 20
_ITEM_HEADER = struct.Struct("<HHI")
#: Pixel Data's VRs in explicit VR files (PS3.5 8.2, and UN from a converted file)
_PIXEL_VRS = frozenset({b"OB", b"OW", b"UN"})


def split_pixel_tail(fd: int, size: int, private_runs: bool = False
                     ) -> tuple[DicomFile, FileRange] | None:
    """The file open at ``fd`` (``size`` bytes) parsed up to its Pixel Data, and the range
    from Pixel Data's first byte to the end of the file; None when it does not split."""
    want = FIRST_READ
    while True:
        head = _pread_full(fd, min(want, size), 0)
        try:
            df, at_pixels = read_to_pixels(head, private_runs)
        except DicomFormatError:
            df, at_pixels = None, False  # maybe only cut short by the read: read on
        if at_pixels or len(head) >= size or want >= MAX_HEADER:
            break
        want *= 2
    if df is None or not at_pixels or df.deflated or not df.enc.little:
        return None  # read whole: the usual path decides, errors included
    cut = df.elements[-1].end if df.elements else 0
    if df.elements and df.elements[-1].tag >> 16 == PIXEL_DATA >> 16:
        return None
    body_start = len(head) - len(df.body)
    end = _pixel_data_end(fd, size, df, cut, body_start)
    if end != size:
        return None
    df.body = df.body[:cut]
    return df, FileRange(fd, body_start + cut, size - body_start - cut)


def _pixel_data_end(fd: int, size: int, df: DicomFile, cut: int, body_start: int
                    ) -> int | None:
    """Where the Pixel Data element at body offset ``cut`` ends in the file; None when it
    is not Pixel Data or its fragments are not well formed."""
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
    if length != UNDEFINED:
        return value_start + length
    pos = value_start
    while pos + 8 <= size:  # encapsulated: item headers only, never the fragments
        group, elem, length = _ITEM_HEADER.unpack(_pread_full(fd, 8, pos))
        tag = group << 16 | elem
        if tag == SEQ_END:
            return pos + 8
        if tag != ITEM or length == UNDEFINED:
            return None
        pos += 8 + length
    return None


def _pread_full(fd: int, count: int, offset: int) -> bytes:
    """``count`` bytes at ``offset`` (fewer only at the end of the file)."""
    chunks = []
    while count > 0:
        data = os.pread(fd, count, offset)
        if not data:
            break
        chunks.append(data)
        count -= len(data)
        offset += len(data)
    return b"".join(chunks)
