"""JPEG Baseline (ISO 10918-1 process 1) blanked in the compressed domain.

Why: most ultrasound arrives as JPEG Baseline; decoding and re-encoding it would lose
quality over the whole image.  Here the entropy-coded data is parsed down to its 8x8 blocks
(Huffman decoding only: no inverse DCT), the blocks of each rectangle get a flat black
block (DC only, AC an end-of-block), and every other block keeps its bits; only the DC
difference of the block after a blanked one is re-coded (its predictor changed).  The
quantisation and Huffman tables, markers and all other bytes stay as they were.

Rectangles are widened to whole MCUs (:func:`align`) so that every component is blanked
over the same area; a decoder's chroma upsampling (4:2:2, 4:2:0) still blends the flat
chroma into the pixel next to a blanked MCU, so that one pixel may change slightly too.  What is not handled (progressive or arithmetic coding, a scan that
does not hold every component, a DC difference the file's Huffman table has no code for)
raises :class:`JpegBlockError`; the caller then re-encodes the frame instead.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]


class JpegBlockError(Exception):
    """This code stream cannot be edited block by block (the reason)."""


@dataclass
class _Component:
    ident: int
    h: int
    v: int
    tq: int
    td: int = 0
    ta: int = 0


@dataclass
class _Huffman:
    """A Huffman table: for every 16-bit peek the code's length (0: no code) and symbol, and
    symbol -> (code, length) for writing."""

    length: np.ndarray
    symbol: np.ndarray
    codes: dict[int, tuple[int, int]] = field(default_factory=dict)

    @staticmethod
    @functools.lru_cache(maxsize=64)  # the same tables in every frame of a cine
    def parse(counts: bytes, symbols: bytes) -> _Huffman:
        length = np.zeros(65536, np.uint8)
        symbol = np.zeros(65536, np.uint8)
        codes: dict[int, tuple[int, int]] = {}
        code = index = 0
        for size in range(1, 17):
            for _ in range(counts[size - 1]):
                codes[symbols[index]] = (code, size)
                first = code << (16 - size)
                length[first:first + (1 << (16 - size))] = size
                symbol[first:first + (1 << (16 - size))] = symbols[index]
                index += 1
                code += 1
            code <<= 1
        return _Huffman(length, symbol, codes)

    @functools.cached_property
    def dc_steps(self) -> list[int]:
        """A DC code at a 16-bit peek: 32 times the bits to its block's AC codes (0: no
        code) plus its size."""
        steps = np.where(self.length > 0, (self.length.astype(np.int32) + self.symbol) * 32
                         + self.symbol, 0)
        return [int(step) for step in steps]

    @functools.cached_property
    def ac_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """An AC code at a peek: bits to the next code, and how far it moves the coefficient
        index (run + 1; 16 for ZRL; END for end-of-block; INVALID for no code)."""
        size = self.symbol & 15
        run = self.symbol >> 4
        step = np.where(size > 0, run + 1, np.where(run == 15, 16, _END)).astype(np.uint8)
        step[self.length == 0] = _INVALID
        return (self.length + size).astype(np.uint8), step


#: AC index steps past the 64 coefficients: end of block, and no such code (an error)
_END = 100
_INVALID = 200


@dataclass
class _Stream:
    """A code stream split at its scan: header bytes, components, tables, data."""

    head: bytes
    width: int
    height: int
    components: list[_Component]
    quant: dict[int, list[int]]
    dc: dict[int, _Huffman]
    ac: dict[int, _Huffman]
    restart: int
    data: bytes  # entropy-coded segment(s), RST markers included
    tail: bytes  # EOI and anything after

    @property
    def mcu(self) -> tuple[int, int]:
        return (8 * max(c.h for c in self.components), 8 * max(c.v for c in self.components))


def _parse(code: bytes) -> _Stream:
    if code[:2] != b"\xff\xd8":
        raise JpegBlockError("not a JPEG code stream")
    pos = 2
    quant: dict[int, list[int]] = {}
    dc: dict[int, _Huffman] = {}
    ac: dict[int, _Huffman] = {}
    components: list[_Component] = []
    width = height = restart = 0
    while pos + 4 <= len(code):
        if code[pos] != 0xFF:
            raise JpegBlockError("marker expected")
        marker = code[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", code, pos + 2)
        segment = code[pos + 4:pos + 2 + length]
        if marker in (0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            raise JpegBlockError("not baseline (progressive, extended, lossless or arithmetic)")
        if marker == 0xC0:
            if segment[0] != 8:
                raise JpegBlockError("baseline JPEG with other than 8-bit samples")
            height, width = struct.unpack_from(">HH", segment, 1)
            for i in range(segment[5]):
                ident, hv, tq = segment[6 + 3 * i:9 + 3 * i]
                components.append(_Component(ident, hv >> 4, hv & 15, tq))
        elif marker == 0xDB:
            at = 0
            while at < len(segment):
                precision, table = segment[at] >> 4, segment[at] & 15
                size = 128 if precision else 64
                values = (struct.unpack_from(">64H", segment, at + 1) if precision
                          else segment[at + 1:at + 65])
                quant[table] = list(values)
                at += 1 + size
        elif marker == 0xC4:
            at = 0
            while at < len(segment):
                kind, table = segment[at] >> 4, segment[at] & 15
                counts = segment[at + 1:at + 17]
                total = sum(counts)
                huffman = _Huffman.parse(bytes(counts), bytes(segment[at + 17:at + 17 + total]))
                (ac if kind else dc)[table] = huffman
                at += 17 + total
        elif marker == 0xDD:
            (restart,) = struct.unpack_from(">H", segment)
        elif marker == 0xDA:
            count = segment[0]
            if count != len(components):
                raise JpegBlockError("a scan without every component")
            by_id = {c.ident: c for c in components}
            for i in range(count):
                ident, tables = segment[1 + 2 * i:3 + 2 * i]
                by_id[ident].td, by_id[ident].ta = tables >> 4, tables & 15
            start = pos + 2 + length
            end = _scan_end(code, start)
            if not code[end:].startswith(b"\xff\xd9"):
                raise JpegBlockError("more than one scan")
            return _Stream(code[:start], width, height, components, quant, dc, ac, restart,
                           code[start:end], code[end:])
        pos += 2 + length
    raise JpegBlockError("no scan")


def _scan_end(code: bytes, start: int) -> int:
    pos = start
    while True:
        pos = code.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(code):
            raise JpegBlockError("scan runs to the end of the data")
        following = code[pos + 1]
        if following == 0 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


def _intervals(data: bytes) -> list[str]:
    """The entropy-coded data as bit strings, one per restart interval (unstuffed)."""
    chunks = _RESTART.split(data)
    return [format(int.from_bytes(c, "big"), f"0{8 * len(c)}b") if c else ""
            for c in (chunk.replace(b"\xff\x00", b"\xff") for chunk in chunks)]


_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def align(box: Box, mcu: tuple[int, int], width: int, height: int) -> Box:
    """``box`` widened to whole MCUs (and clipped to the image)."""
    x, y, w, h = box
    mx, my = mcu
    x0, y0 = x // mx * mx, y // my * my
    x1 = min(-(-(x + w) // mx) * mx, width)
    y1 = min(-(-(y + h) // my) * my, height)
    return x0, y0, x1 - x0, y1 - y0


def mcu_size(code: bytes) -> tuple[int, int]:
    return layout(code)[0]


def layout(code: bytes) -> tuple[tuple[int, int], int, int]:
    """The MCU size, width and height of a code stream that can be edited here."""
    try:
        stream = _parse(code)
    except (IndexError, ValueError, KeyError, struct.error):
        raise JpegBlockError("malformed JPEG header") from None
    return stream.mcu, stream.width, stream.height


def blank(code: bytes, boxes: list[Box]) -> bytes:
    """``code`` with the MCUs under ``boxes`` (already aligned) flat black."""
    try:
        return _blank(code, boxes)
    except (IndexError, ValueError, KeyError, ZeroDivisionError, struct.error):
        raise JpegBlockError("malformed JPEG data") from None


def _blank(code: bytes, boxes: list[Box]) -> bytes:
    stream = _parse(code)
    mx, my = stream.mcu
    across = -(-stream.width // mx)
    down = -(-stream.height // my)
    hit = set()
    for x, y, w, h in boxes:
        for row in range(y // my, min(-(-(y + h) // my), down)):
            for col in range(x // mx, min(-(-(x + w) // mx), across)):
                hit.add(row * across + col)
    if not hit:
        return code
    # the flat block's DC (quantised): Y at 0 (black), chroma at 128 (no colour)
    flat = []
    for index, component in enumerate(stream.components):
        q0 = stream.quant[component.tq][0]
        level = -1024 if index == 0 else 0  # (sample - 128) * 8 over the 8x8 DC scale
        flat.append(round(level / q0))
    per_interval = stream.restart or across * down
    data = bytearray()
    mcu = 0
    for index, chunk in enumerate(_RESTART.split(stream.data)):
        if mcu >= across * down:
            break
        if index:
            data += bytes((0xFF, 0xD0 + (index - 1) % 8))
        count = min(per_interval, across * down - mcu)
        if hit.isdisjoint(range(mcu, mcu + count)):
            data += chunk  # an interval with nothing to blank keeps its bytes
        else:
            data += _stuffed(_recode_interval(stream, chunk.replace(b"\xff\x00", b"\xff"),
                                              mcu, count, hit, flat))
        mcu += per_interval
    return stream.head + bytes(data) + stream.tail


def _peeks(data: bytes) -> np.ndarray:
    """The 16 bits from every bit position of ``data`` on (1-bits past its end)."""
    padded = np.frombuffer(data + b"\xff\xff", np.uint8).astype(np.uint32)
    words = (padded[:-2] << 16) | (padded[1:-1] << 8) | padded[2:]
    shifts = np.arange(8, 0, -1, dtype=np.uint32)
    return ((words[:, None] >> shifts) & 0xFFFF).ravel()


def _recode_interval(stream: _Stream, data: bytes, first_mcu: int, count: int,
                     hit: set[int], flat: list[int]) -> str:
    """One restart interval's bits with the blocks of ``hit`` MCUs flat.  Why it is fast
    enough for a cine: the codes at every bit position are looked up at once (numpy), so
    walking the blocks costs two byte look-ups per code; unchanged runs of blocks are
    copied as one slice of the original bits, only blanked blocks and the DC of the block
    after them are written anew."""
    bits = format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""
    padded = bits + "1" * 16
    peeks = _peeks(data)
    gathered: dict[int, tuple[bytes, bytes]] = {}  # Cb and Cr share their tables
    steps = []
    for component in stream.components:
        dc_table = stream.dc.get(component.td)
        ac_table = stream.ac.get(component.ta)
        if dc_table is None or ac_table is None:
            raise JpegBlockError("a Huffman table is missing")
        if id(ac_table) not in gathered:
            bit_steps, index_steps = ac_table.ac_steps
            gathered[id(ac_table)] = bit_steps[peeks].tobytes(), index_steps[peeks].tobytes()
        steps.append((dc_table.dc_steps, *gathered[id(ac_table)], component.h * component.v,
                      dc_table, ac_table))
    del peeks
    components = len(stream.components)
    predictor = [0] * components
    new_predictor = [0] * components
    rewrite = [False] * components  # the next block's DC difference must be re-coded
    pieces: list[str] = []
    copied = pos = 0
    for mcu in range(first_mcu, first_mcu + count):
        blanked = mcu in hit
        for index, (dc_steps, ac_bits, ac_index, blocks, dc_table, ac_table
                    ) in enumerate(steps):
            for _ in range(blocks):
                start = pos
                step = dc_steps[int(padded[pos:pos + 16], 2)]
                if step == 0:
                    raise JpegBlockError("invalid Huffman code")
                size = step & 31
                pos += step >> 5
                if size:
                    predictor[index] += _extend(bits[pos - size:pos], size)
                ac_start = pos
                k = 1
                while k < 64:
                    k += ac_index[pos]
                    pos += ac_bits[pos]
                if k >= _INVALID:
                    raise JpegBlockError("invalid Huffman code")
                if pos > len(bits):
                    raise JpegBlockError("scan data ends inside a block")
                value = flat[index] if blanked else predictor[index]
                if blanked or rewrite[index]:
                    pieces.append(bits[copied:start])
                    pieces.append(_dc_code(dc_table, value - new_predictor[index]))
                    pieces.append(_eob(ac_table) if blanked else bits[ac_start:pos])
                    copied = pos
                rewrite[index] = blanked
                new_predictor[index] = value
    pieces.append(bits[copied:pos])
    return "".join(pieces)


def _extend(text: str, size: int) -> int:
    if size == 0:
        return 0
    value = int(text, 2)
    return value if value >= 1 << (size - 1) else value - (1 << size) + 1


def _dc_code(table: _Huffman, diff: int) -> str:
    size = abs(diff).bit_length()
    code = table.codes.get(size)
    if code is None:
        raise JpegBlockError(f"the DC table has no code for a difference of {size} bits")
    value, length = code
    head = format(value, f"0{length}b")
    if size == 0:
        return head
    extra = diff if diff > 0 else diff + (1 << size) - 1
    return head + format(extra, f"0{size}b")


def _eob(table: _Huffman) -> str:
    code = table.codes.get(0x00)
    if code is None:
        raise JpegBlockError("the AC table has no end-of-block code")
    return format(code[0], f"0{code[1]}b")


def _stuffed(bits: str) -> bytes:
    """Bits to bytes, padded with 1-bits, 0xFF stuffed with 0x00 (ISO 10918-1 F.1.2.3)."""
    if not bits:
        return b""
    bits += "1" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return raw.replace(b"\xff", b"\xff\x00")
