"""Frames out of a Pixel Data element and back into the same transfer syntax.

- native (uncompressed) pixels, 8 to 32 bits allocated, any photometric interpretation with
  one or three samples (either planar configuration), little or big endian: edited in place,
  so only the blanked pixels change;
- RLE Lossless, JPEG-LS (lossless and near-lossless) and JPEG 2000 (lossless and lossy; one
  sample per pixel: the colour transform of colour JPEG 2000 is not reproduced): decoded and
  re-encoded losslessly with pydicom's codecs (its own RLE, pyjpegls, pylibjpeg-openjpeg),
  so only the blanked pixels change (a lossless code stream is valid in the lossy syntaxes);
- JPEG Baseline (Process 1): blanked in the compressed domain (``tasks.pixels.jpegblocks``:
  the boxes widened to whole MCUs, every other block keeps its bits, no further loss); when
  a code stream does not allow that, decoded and re-encoded with Pillow (quality 95, the
  original chroma subsampling), which is lossy over the whole frame, and the file says so in
  (0028,2110) Lossy Image Compression, (0028,2112) Ratio and (0028,2114) Method.
- anything else (JPEG Extended and JPEG Lossless, colour JPEG 2000, 1-bit, native
  YBR_*_422, ...) raises
  :class:`PixelCodecError` with the reason: the file is refused, never written half-clean.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.dicomio import DicomFile, Element, Encoding, element_header
from tasks.edit import encode_element
from tasks.fileio import FileRange, Stream, read_range
from tasks.tags import (
    BITS_ALLOCATED,
    BITS_STORED,
    COLUMNS,
    HIGH_BIT,
    LOSSY_IMAGE_COMPRESSION,
    LOSSY_METHOD,
    LOSSY_RATIO,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC_INTERPRETATION,
    PIXEL_DATA,
    PIXEL_REPRESENTATION,
    PLANAR_CONFIGURATION,
    ROWS,
    SAMPLES_PER_PIXEL,
)

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
          "1.2.840.10008.1.2.1.99"}
RLE = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
#: decoded and re-encoded without loss by pydicom's codecs: the syntax's name, and the
#: syntax whose encoder writes the new frames (a lossless JPEG-LS or JPEG 2000 code stream
#: is valid in the near-lossless and lossy syntaxes too: no further loss)
LOSSLESS = {RLE: ("RLE Lossless", RLE),
            JPEG_LS_LOSSLESS: ("JPEG-LS Lossless", JPEG_LS_LOSSLESS),
            JPEG_LS_NEAR_LOSSLESS: ("JPEG-LS Near-Lossless", JPEG_LS_LOSSLESS),
            JPEG_2000_LOSSLESS: ("JPEG 2000 Lossless", JPEG_2000_LOSSLESS),
            JPEG_2000: ("JPEG 2000", JPEG_2000_LOSSLESS)}
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\0\0\0\0"
#: JPEG Baseline re-encoding quality (Pillow's scale): visually lossless on US/SC images
JPEG_QUALITY = 95


class PixelCodecError(Exception):
    """The pixel data cannot be decoded and re-encoded here (the reason, no patient data)."""


def _us(df: DicomFile, tag: int, default: int | None = None) -> int:
    from tasks.pixels.rules import header_value

    value = header_value(df, tag)
    if value is None or value == "":
        if default is None:
            raise PixelCodecError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is missing")
        return default
    try:
        return int(str(value).split("\\")[0].strip())
    except ValueError:
        raise PixelCodecError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not a number") from None


@dataclass
class Frames:
    """The frames of one Pixel Data element, (rows, columns) or (rows, columns, samples),
    read one at a time so that a long cine never has to be decoded whole: native frames
    are views of one copy of the element (blanked in place, written back as they are);
    encapsulated ones are decoded when asked for (the OCR sample) and, in :meth:`encode`,
    one by one (JPEG Baseline with editable code streams: not decoded at all).  For a large
    file whose pixel data stays in the file (``tasks.pixeltail``) native frames and code
    streams are read from it when asked for, and the new element is a
    :class:`~tasks.fileio.Stream`."""

    transfer_syntax: str
    photometric: str
    bits_stored: int
    signed: bool
    count: int
    shape: tuple[int, ...]
    element: Element
    header: bytes  # the original element's header (native: same length after editing)
    lossy: bool = False
    original_size: int = 0
    range: tuple[float, float] | None = None
    #: every box blanked so far, applied to each frame as it is read or encoded
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: encapsulated: the code streams, one per frame (JPEG Baseline: the MCU size when
    #: they can be edited block by block)
    encoded: Sequence[bytes] = field(default_factory=list)
    mcu: tuple[int, int] | None = None
    #: why the frames were re-encoded rather than blanked block by block (JPEG Baseline)
    reencoded: str | None = None

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index``, writable, every box blanked so far blanked in it."""
        if self._native is not None:
            return self._native[index]
        found = self._decoded.get(index)
        if found is None:
            found = (self._read_frame(index)[1] if self._read_frame is not None
                     else self._decode_frame(self.encoded[index]))
            self._blank_frame(found, self.boxes)
            self._decoded[index] = found
        return found

    def blank(self, boxes: list[tuple[int, int, int, int]]) -> None:
        """Blank ``boxes`` on every frame (native: now, in place; encapsulated: on the frames
        decoded so far now, on the others as :meth:`encode` reads them)."""
        self.boxes += boxes
        if self._native is not None:
            for index in range(self.count):
                self._blank_frame(self._native[index], boxes)
        else:
            for frame in self._decoded.values():
                self._blank_frame(frame, boxes)

    def _blank_frame(self, frame: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> None:
        if not boxes:
            return
        value = self.blank_value(frame)
        for x, y, w, h in boxes:
            frame[y:y + h, x:x + w] = value

    def blank_value(self, frame: np.ndarray) -> np.ndarray | int:
        """Black in this photometric interpretation."""
        if self.photometric == "MONOCHROME1":
            return int(frame.max())
        if self.photometric.startswith("YBR") and frame.ndim == 3:
            return np.array([0, 1 << (self.bits_stored - 1), 1 << (self.bits_stored - 1)],
                            dtype=frame.dtype)
        if frame.ndim == 3:
            return 0
        return int(frame.min())

    def gray8(self, index: int) -> np.ndarray:
        """Frame ``index`` as 8-bit grey, bright meaning bright on screen (what OCR reads),
        scaled by the range the frames had when decoded (:meth:`fix_range`): after blanking
        the text the brightest pixels left are not promoted to text's brightness."""
        grey = self._grey(self.frame(index))
        if self.range is None:
            self.fix_range()
        assert self.range is not None
        lo, hi = self.range
        scaled = np.clip((grey - lo) * (255.0 / (hi - lo)), 0, 255) if hi > lo else grey * 0
        if self.photometric == "MONOCHROME1":
            scaled = 255.0 - scaled
        return scaled.astype(np.uint8)

    def fix_range(self, indices: list[int] | None = None) -> None:
        """Fix the grey range (of ``indices``, default all frames) before anything changes."""
        lo, hi = float("inf"), float("-inf")
        for index in indices or range(self.count):
            grey = self._grey(self.frame(index))
            lo, hi = min(lo, float(grey.min())), max(hi, float(grey.max()))
        self.range = lo, hi

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        """What a viewer shows: the stored bits only (bits above them may hold an overlay
        plane, PS3.5 8.1.2, and would hide the image's range from OCR)."""
        if frame.dtype.kind == "u" and self.bits_stored < frame.dtype.itemsize * 8:
            frame = (frame >> self._low_bit) & ((1 << self.bits_stored) - 1)
        if frame.ndim == 3:
            return (frame[..., 0].astype(np.float32) if self.photometric.startswith("YBR")
                    else frame.max(axis=2).astype(np.float32))
        return frame.astype(np.float32)

    def aligned(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """``box`` as it will be blanked: widened to whole MCUs for JPEG Baseline."""
        if self.mcu is None:
            return box
        from tasks.pixels.jpegblocks import align

        rows, columns = self.shape[:2]
        return align(box, self.mcu, columns, rows)

    def encode(self, enc: Encoding) -> dict[int, bytes]:
        """The new Pixel Data element (and the lossy attributes when re-encoded lossy).
        Native: the edited copy itself (no further copy); encapsulated: frame by frame."""
        if self._read_frame is not None:
            return {PIXEL_DATA: self._streamed()}  # type: ignore[dict-item]
        if self._native is not None:
            assert self._buffer is not None
            if self._swapped:
                _swap_in_place(self._buffer, len(self.header))
                self._swapped = False
            self._native = None  # the buffer is the element's now, no longer the frames'
            return {PIXEL_DATA: self._buffer}  # type: ignore[dict-item]
        if self.transfer_syntax == JPEG_BASELINE and self.mcu is not None:
            from tasks.pixels.jpegblocks import JpegBlockError, blank

            try:
                fragments = [blank(code, self.boxes) for code in self.encoded]
            except JpegBlockError as exc:
                self.reencoded = str(exc)
            else:
                self.lossy = False
                return {PIXEL_DATA: self._element(fragments, enc)}
        fragments = []
        for index in range(self.count):
            frame = self._decoded.pop(index, None)
            if frame is None:
                frame = self.frame(index)
                del self._decoded[index]
            fragments.append(self._encode_frame(frame))
        out = {PIXEL_DATA: self._element(fragments, enc)}
        if self.lossy:
            total = sum(len(f) for f in fragments)
            ratio = f"{self.original_size / max(total, 1):.2f}".encode()
            out[LOSSY_IMAGE_COMPRESSION] = encode_element(LOSSY_IMAGE_COMPRESSION, "CS", b"01",
                                                          enc)
            out[LOSSY_RATIO] = encode_element(LOSSY_RATIO, "DS", ratio, enc)
            out[LOSSY_METHOD] = encode_element(LOSSY_METHOD, "CS", b"ISO_10918_1", enc)
        return out

    #: native: every frame, a writable view of ``_buffer`` (the element, header included)
    _native: np.ndarray | None = None
    _buffer: bytearray | None = None
    _swapped: bool = False
    #: encapsulated: the frames decoded so far, by index, and how to decode one
    _decoded: dict[int, np.ndarray] = field(default_factory=dict)
    _decode_frame: Callable[[bytes], np.ndarray] = field(default=lambda code: np.zeros(0))
    _low_bit: int = 0  # High Bit + 1 - Bits Stored: where the stored bits start
    _subsampling: int = 2
    #: native pixels left in the file (a large file, ``tasks.pixeltail``): frame ``index``
    #: read from it, as its bytes and the writable frame over them
    _read_frame: Callable[[int], tuple[bytearray, np.ndarray]] | None = None
    #: the element as it is in the file (header and value) when its frames are read from
    #: there: the new element is then a Stream
    _source: FileRange | None = None

    def _element(self, fragments: list[bytes], enc: Encoding) -> bytes:
        """The encapsulated element of ``fragments``: joined, or, for frames read from the
        file, a :class:`~tasks.fileio.Stream` of its pieces (not one more copy)."""
        parts = _encapsulated_parts(fragments, enc)
        if self._source is None:
            return b"".join(parts)
        return Stream(sum(map(len, parts)), lambda: parts)  # type: ignore[return-value]

    def _streamed(self) -> Stream:
        """The new Pixel Data element made while it is written: each frame read from the
        file again, every box blanked in it (the same bytes as blanking the one copy of
        the element in place: a box's black does not depend on the boxes blanked before)."""
        source, read = self._source, self._read_frame
        assert source is not None and read is not None
        header_length = len(self.header)

        def chunks() -> Iterator[bytes | memoryview]:
            yield self.header
            end = header_length
            for index in range(self.count):
                data, frame = read(index)
                self._blank_frame(frame, self.boxes)
                yield memoryview(data)
                end += len(data)
            if end < source.length:  # the value's padding past the last frame
                yield from read_range(FileRange(source.fd, source.offset + end,
                                                source.length - end))

        return Stream(source.length, chunks)

    def _encode_frame(self, frame: np.ndarray) -> bytes:
        if self.transfer_syntax == JPEG_BASELINE:
            from PIL import Image

            image = Image.fromarray(frame, "RGB" if frame.ndim == 3 else "L")
            out = io.BytesIO()
            image.save(out, "JPEG", quality=JPEG_QUALITY, subsampling=self._subsampling)
            data = out.getvalue()
            return data + b"\0" if len(data) % 2 else data
        from pydicom.pixels.encoders.base import get_encoder

        bits = frame.dtype.itemsize * 8
        options = _codec_options(frame.shape[0], frame.shape[1],
                                 1 if frame.ndim == 2 else frame.shape[2], bits,
                                 bits if self.transfer_syntax == RLE else self.bits_stored,
                                 self.photometric,
                                 self.signed and self.transfer_syntax != RLE)
        data = get_encoder(LOSSLESS[self.transfer_syntax][1]).encode(frame, **options)
        return data + b"\0" if len(data) % 2 else data


def _swap_in_place(buffer: bytearray, start: int) -> None:
    """Swap the bytes of ``buffer`` from ``start`` in pairs (an even length)."""
    words = np.frombuffer(buffer, np.uint16, (len(buffer) - start) // 2, start)
    words.byteswap(inplace=True)


def _encapsulated_parts(fragments: list[bytes], enc: Encoding) -> list[bytes]:
    """A Pixel Data element of one fragment per frame (PS3.5 A.4), even lengths, with a
    Basic Offset Table when there are several frames, in pieces (to be joined once: a
    cine's fragments are not copied again and again)."""
    parts = [element_header(PIXEL_DATA, "OB", 0xFFFFFFFF, enc)]
    offsets = []
    at = 0
    for fragment in fragments:
        offsets.append(at)
        at += 8 + len(fragment) + len(fragment) % 2
    if at > 0xFFFFFFFF:
        raise PixelCodecError("the cleaned frames need an Extended Offset Table")
    table = struct.pack(f"<{len(offsets)}I", *offsets) if len(fragments) > 1 else b""
    parts += [_ITEM + struct.pack("<I", len(table)), table]
    for fragment in fragments:
        odd = len(fragment) % 2
        parts += [_ITEM + struct.pack("<I", len(fragment) + odd), fragment, b"\0" * odd]
    parts.append(SEQUENCE_DELIMITER)
    return parts


_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian as every encapsulated syntax


def decode(df: DicomFile, transfer_syntax: str, source: FileRange | None = None) -> Frames:
    """The frames of ``df``'s top-level Pixel Data, editable.  ``source``: the element as it
    stands in the file, when ``df`` holds a stand-in for it (``tasks.pixeltail``): native
    frames are then read from the file one at a time, and compressed ones from their
    fragments (one a frame), never the element whole."""
    el = df.top(PIXEL_DATA)
    if el is None:
        raise PixelCodecError("no Pixel Data")
    rows, columns = _us(df, ROWS), _us(df, COLUMNS)
    samples = _us(df, SAMPLES_PER_PIXEL, 1)
    allocated = _us(df, BITS_ALLOCATED)
    stored = _us(df, BITS_STORED, allocated)
    signed = _us(df, PIXEL_REPRESENTATION, 0) == 1
    planar = _us(df, PLANAR_CONFIGURATION, 0) == 1
    count = _us(df, NUMBER_OF_FRAMES, 1) or 1
    if count < 1:
        raise PixelCodecError(f"Number of Frames {count}")
    photometric = (df.top_text(PHOTOMETRIC_INTERPRETATION) or "").strip().upper()
    if samples not in (1, 3) or rows == 0 or columns == 0:
        raise PixelCodecError(f"{samples} samples per pixel of {rows}x{columns} not supported")
    header = df.body[el.start:el.value_start]
    if transfer_syntax in NATIVE:
        if el.undefined:
            raise PixelCodecError("native pixel data of undefined length")
        if allocated not in (8, 16, 32):
            raise PixelCodecError(f"{allocated}-bit allocated pixels are not supported")
        if photometric.endswith(("_422", "_420")):
            raise PixelCodecError(f"native {photometric} pixels are not supported")
        endian = "<" if df.enc.little else ">"
        dtype = np.dtype(f"{endian}{'i' if signed else 'u'}{allocated // 8}")
        per_frame = rows * columns * samples
        if source is not None:
            return _file_frames(df, transfer_syntax, photometric, stored, signed, count,
                                (rows, columns, samples, planar), dtype, el, source)
        if el.end - el.value_start < per_frame * count * dtype.itemsize:
            raise PixelCodecError("Pixel Data is shorter than its rows, columns and frames say")
        # one copy of the element, header and padding included: the frames are views of it,
        # blanked in place, and it is the new element as it stands
        buffer = bytearray(memoryview(df.body)[el.start:el.end])
        # 8-bit samples in an OW value of a big endian file are swapped in pairs (PS3.5 8.1.1)
        swapped = not df.enc.little and allocated == 8 and el.vr == "OW"
        if swapped:
            _swap_in_place(buffer, len(header))  # the whole (even) value, padding included
        native = _frames_of(buffer, dtype, count, (rows, columns, samples, planar), len(header))
        out = Frames(transfer_syntax, photometric, stored, signed, count, native.shape[1:], el,
                     header)
        out._native, out._buffer, out._swapped = native, buffer, swapped
        out._low_bit = max(0, _us(df, HIGH_BIT, stored - 1) + 1 - stored)
        return out
    encoded: Sequence[bytes]
    if source is not None:  # one fragment per frame, each read from the file when asked for
        header = b"".join(read_range(FileRange(source.fd, source.offset, len(header))))
        ranges = file_fragments(source, len(header))
        if ranges is None or header[-4:] != b"\xff\xff\xff\xff":
            raise PixelCodecError("encapsulated pixel data is malformed")
        encoded = _FileCodes(ranges)
    else:
        if not el.undefined:
            raise PixelCodecError("encapsulated pixel data of defined length")
        from pydicom.encaps import generate_frames

        value = df.body[el.value_start:el.end]
        try:
            encoded = list(generate_frames(value, number_of_frames=count))
        except Exception as exc:  # noqa: BLE001 - a malformed encapsulation, whatever pydicom says
            raise PixelCodecError(f"encapsulated pixel data is malformed "
                                  f"({type(exc).__name__})") from None
        del value
    if len(encoded) != count:
        raise PixelCodecError(f"{len(encoded)} frames in the pixel data, {count} said")
    shape = (rows, columns) if samples == 1 else (rows, columns, samples)
    if transfer_syntax == JPEG_BASELINE:
        frames = _jpeg_frames(encoded, photometric, el, header, shape)
        frames._source = source
        return frames
    if transfer_syntax in LOSSLESS:
        if transfer_syntax in (JPEG_2000_LOSSLESS, JPEG_2000) and samples != 1:
            raise PixelCodecError("colour JPEG 2000 cannot be re-encoded here (its colour "
                                  "transform is not reproduced)")
        frames = _lossless_frames(transfer_syntax, encoded, photometric, el, header, shape,
                                  _codec_options(rows, columns, samples, allocated, stored,
                                                 photometric, signed and transfer_syntax != RLE),
                                  stored, signed)
        frames._source = source
        return frames
    raise PixelCodecError(f"transfer syntax {transfer_syntax} cannot be re-encoded here "
                          "(native, RLE, JPEG-LS, grey JPEG 2000 and JPEG Baseline can)")


class _FileCodes(Sequence[bytes]):
    """The code streams of a cine left in the file, one fragment a frame, each read from
    the file when asked for (never all at once)."""

    def __init__(self, ranges: list[FileRange]):
        self.ranges = ranges

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]
        part = self.ranges[index]
        return b"".join(read_range(part, max(part.length, 1)))


def streams_from_file(df: DicomFile, transfer_syntax: str, source: FileRange) -> bool:
    """Whether :func:`decode` reads ``df``'s frames from the file (``source``, the Pixel
    Data element there) one at a time: native pixels, or one fragment per frame."""
    if transfer_syntax in NATIVE:
        return True
    el = df.top(PIXEL_DATA)
    if el is None:
        return False
    ranges = file_fragments(source, el.value_start - el.start)
    try:
        count = _us(df, NUMBER_OF_FRAMES, 1) or 1
    except PixelCodecError:
        return False
    return ranges is not None and len(ranges) == count


def file_fragments(source: FileRange, header_length: int) -> list[FileRange] | None:
    """The fragments (PS3.5 A.4) of the encapsulated Pixel Data element ``source`` (header
    and value in the file), after the Basic Offset Table; None when the items are not
    well formed.  Item headers only are read, never the fragments."""
    pos, end = source.offset + header_length, source.offset + source.length
    out: list[FileRange] = []
    first = True
    while pos + 8 <= end:
        try:
            item = os.pread(source.fd, 8, pos)
        except OSError:
            return None
        if len(item) < 8:
            return None
        tag, length = item[:4], struct.unpack_from("<I", item, 4)[0]
        if tag == SEQUENCE_DELIMITER[:4]:
            return out if pos + 8 == end else None
        if tag != _ITEM or length == 0xFFFFFFFF or pos + 8 + length > end:
            return None
        if not first:
            out.append(FileRange(source.fd, pos + 8, length))
        first = False
        pos += 8 + length
    return None


def _frames_of(buffer: bytearray, dtype: np.dtype[Any], count: int,
               layout: tuple[int, int, int, bool], offset: int = 0) -> np.ndarray:
    """``count`` native frames as writable views of ``buffer`` from ``offset``: (frames,
    rows, columns) or (frames, rows, columns, samples), either planar configuration."""
    rows, columns, samples, planar = layout
    flat = np.frombuffer(buffer, dtype, rows * columns * samples * count, offset)
    if samples == 1:
        return flat.reshape(count, rows, columns)
    if planar:
        return np.moveaxis(flat.reshape(count, samples, rows, columns), 1, 3)
    return flat.reshape(count, rows, columns, samples)


def _file_frames(df: DicomFile, transfer_syntax: str, photometric: str, stored: int,
                 signed: bool, count: int, layout: tuple[int, int, int, bool],
                 dtype: np.dtype[Any], el: Element, source: FileRange) -> Frames:
    """Native frames left in the file (little endian: the files ``tasks.pixeltail`` splits),
    read when asked for: the OCR sample, then each frame once more as the new element is
    written (:meth:`Frames._streamed`)."""
    if not df.enc.little:
        raise PixelCodecError("big endian pixel data is not read from the file in frames")
    header_length = el.value_start - el.start
    header = b"".join(read_range(FileRange(source.fd, source.offset, header_length)))
    rows, columns, samples, _ = layout
    size = rows * columns * samples * dtype.itemsize
    value = FileRange(source.fd, source.offset + header_length, source.length - header_length)
    if value.length < size * count:
        raise PixelCodecError("Pixel Data is shorter than its rows, columns and frames say")

    def read(index: int) -> tuple[bytearray, np.ndarray]:
        data = bytearray(size)
        at = 0
        for chunk in read_range(FileRange(value.fd, value.offset + index * size, size), size):
            data[at:at + len(chunk)] = chunk
            at += len(chunk)
        return data, _frames_of(data, dtype, 1, layout)[0]

    out = Frames(transfer_syntax, photometric, stored, signed, count,
                 (rows, columns) if samples == 1 else (rows, columns, samples), el, header)
    out._read_frame, out._source = read, source
    out._low_bit = max(0, _us(df, HIGH_BIT, stored - 1) + 1 - stored)
    return out


def _jpeg_frames(encoded: Sequence[bytes], photometric: str, el: Element, header: bytes,
                 shape: tuple[int, ...]) -> Frames:
    from PIL import Image, JpegImagePlugin

    rows, columns = shape[:2]
    mode = "RGB" if len(shape) == 3 else "L"

    def decode_one(code: bytes) -> np.ndarray:
        try:
            image = Image.open(io.BytesIO(code))
            image.load()
        except Exception as exc:  # noqa: BLE001 - Pillow's many decoder errors
            raise PixelCodecError(f"JPEG frame cannot be decoded ({type(exc).__name__})"
                                  ) from None
        if image.size != (columns, rows):
            raise PixelCodecError("JPEG frame size differs from Rows/Columns")
        return np.array(image.convert(mode))

    out = Frames(JPEG_BASELINE, photometric if mode == "L" else "RGB", 8, False,
                 len(encoded), shape, el, header, lossy=True,
                 original_size=rows * columns * (3 if mode == "RGB" else 1) * len(encoded))
    out._decode_frame = decode_one
    out.encoded = encoded
    try:
        first = Image.open(io.BytesIO(encoded[0]))
        if isinstance(first, JpegImagePlugin.JpegImageFile):
            found = JpegImagePlugin.get_sampling(first)
            out._subsampling = found if found in (0, 1, 2) else 2
    except Exception:  # noqa: BLE001, S110 - decoding the frame says what is wrong with it
        pass
    from tasks.pixels.jpegblocks import JpegBlockError, layout

    try:
        layouts = {layout(code) for code in encoded}
    except JpegBlockError as exc:
        out.reencoded = str(exc)
        return out
    if len(layouts) != 1:
        out.reencoded = "frames with different MCU sizes"
        return out
    mcu, width, height = layouts.pop()
    if (width, height) != (columns, rows):
        raise PixelCodecError("JPEG frame size differs from Rows/Columns")
    out.mcu = mcu
    return out


def _codec_options(rows: int, columns: int, samples: int, allocated: int, stored: int,
                   photometric: str, signed: bool) -> dict[str, Any]:
    """One frame's description for pydicom's decoders and encoders."""
    return {"rows": rows, "columns": columns, "samples_per_pixel": samples,
            "bits_allocated": allocated, "bits_stored": stored,
            "pixel_representation": int(signed),
            "photometric_interpretation": photometric, "number_of_frames": 1,
            "planar_configuration": 0}


def _lossless_frames(transfer_syntax: str, encoded: Sequence[bytes], photometric: str,
                     el: Element, header: bytes, shape: tuple[int, ...],
                     options: dict[str, Any], stored: int, signed: bool) -> Frames:
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import get_decoder

    decoder = get_decoder(transfer_syntax)
    if not decoder.is_available:
        raise PixelCodecError(f"no decoder for {LOSSLESS[transfer_syntax][0]} is installed")

    def decode_one(code: bytes) -> np.ndarray:
        try:
            array, _ = decoder.as_array(encapsulate([code]), **options)
        except Exception as exc:  # noqa: BLE001 - the codecs' many errors
            raise PixelCodecError(f"{LOSSLESS[transfer_syntax][0]} frame cannot be decoded "
                                  f"({type(exc).__name__})") from None
        return np.array(array).reshape(shape)

    out = Frames(transfer_syntax, photometric, stored, signed, len(encoded), shape, el, header)
    out._decode_frame = decode_one
    out.encoded = encoded
    return out
