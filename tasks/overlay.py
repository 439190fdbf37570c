"""Overlay planes held in the unused bits of Pixel Data (PS3.5 8.1.2 and PS3.3 C.9.2, retired
usage).

Older writers stored an overlay's bitmap in the pixel words themselves: (60xx,0100)
Overlay Bits Allocated equal to Bits Allocated, (60xx,0102) Overlay Bit Position naming a
bit above the stored bits, and no (60xx,3000) Overlay Data.  A profile that removes the
overlay plane removes its 60xx group, yet the bitmap (often text: a name, a date) stays
readable in those bits.  So when the profile removes such a plane, every bit outside the
stored bits (Bits Stored ending at High Bit) is cleared in every pixel word - they carry
nothing of the image (PS3.5 8.1.1) - and the original Pixel Data goes into the encrypted
payload, so re-identification restores it.  Compressed pixel data cannot be cleared
without decoding it: such a file is refused with that reason.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable

from tasks.dicomio import DicomFile, Element
from tasks.errors import UnsupportedFileError
from tasks.profile import Action, Decision
from tasks.tags import (
    BITS_ALLOCATED,
    BITS_STORED,
    HIGH_BIT,
    PIXEL_DATA,
)

OVERLAY_BITS_ALLOCATED = 0x0100
OVERLAY_DATA = 0x3000
#: the repeating overlay groups 6000-601E (even: PS3.5 7.6)
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)


def _us(df: DicomFile, tag: int) -> int | None:
    """A top-level US value (the first, when there are several), or None."""
    value = df.top_value(tag)
    if value is None or len(value) < 2:
        return None
    return int(struct.unpack(df.enc.endian + "H", value[:2])[0])


def removed_planes_in_pixel_bits(df: DicomFile, decide: Callable[[int, int], Decision | None]
                                 ) -> list[int]:
    """The overlay groups whose plane lies in the pixel words and that the profile removes
    (``decide``: the profile's decision for a top-level tag); empty when the pixel words
    have no unused bits."""
    allocated, stored = _us(df, BITS_ALLOCATED), _us(df, BITS_STORED)
    if allocated is None or stored is None or allocated <= stored:
        return []
    tags = df.tags if df.tags is not None else [el.tag for el in df.elements]
    groups: set[int] = set()
    for tag in tags[bisect_left(tags, 0x60000000):bisect_left(tags, 0x60200000)]:
        if tag >> 16 in _OVERLAY_GROUPS:
            groups.add(tag >> 16)
    found = []
    for group in sorted(groups):
        base = group << 16
        planes_bits = _us(df, base | OVERLAY_BITS_ALLOCATED)
        in_pixels = df.top(base | OVERLAY_DATA) is None or (planes_bits or 1) > 1
        decision = decide(base | OVERLAY_DATA, 0)
        removed = decision is not None and decision.action not in (Action.K, Action.C)
        if in_pixels and removed:
            found.append(group)
    return found


def cleared_pixel_data(df: DicomFile, value: bytes | None = None) -> tuple[Element, bytes]:
    """Pixel Data and its new value: every bit outside the stored bits of ``value`` (by
    default the file's) cleared.

    Raises UnsupportedFileError when that cannot be done safely (compressed pixel data,
    a pixel word that is not whole bytes, inconsistent Bits Stored / High Bit).
    """
    pixels = df.top(PIXEL_DATA)
    allocated, stored = _us(df, BITS_ALLOCATED), _us(df, BITS_STORED)
    high = _us(df, HIGH_BIT)
    if pixels is None or allocated is None or stored is None:
        raise UnsupportedFileError("overlay plane in unused Pixel Data bits, but no native "
                                   "Pixel Data described by Bits Allocated and Bits Stored")
    if pixels.undefined:
        raise UnsupportedFileError(
            "overlay plane in unused Pixel Data bits of compressed pixel data: it cannot be "
            "cleared without decoding the pixels")
    if high is None:
        high = stored - 1
    low = high - stored + 1
    if allocated % 8 or allocated > 64 or low < 0 or high >= allocated or stored < 1:
        raise UnsupportedFileError(
            f"overlay plane in unused Pixel Data bits: Bits Allocated {allocated}, Bits "
            f"Stored {stored}, High Bit {high} do not describe whole-byte pixel words")
    width = allocated // 8
    if width > 2 and not df.enc.little:
        raise UnsupportedFileError(
            "overlay plane in unused Pixel Data bits of big endian words wider than 16 bits")
    if value is None:
        value = pixels.value(df.body)
    return pixels, clear_unused_bits(value, width, ((1 << stored) - 1) << low, df.enc.little)


def clear_unused_bits(value: bytes, width: int, mask: int, little: bool) -> bytes:
    """``value`` (pixel words of ``width`` bytes, in that byte order) ANDed with ``mask``;
    trailing bytes that make no whole word (the pad byte) are kept."""
    whole = len(value) // width * width
    if not whole:
        return value
    pattern = mask.to_bytes(width, "little" if little else "big") * (whole // width)
    words = int.from_bytes(value[:whole], "little") & int.from_bytes(pattern, "little")
    return words.to_bytes(whole, "little") + value[whole:]
