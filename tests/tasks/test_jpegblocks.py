"""JPEG Baseline blanked in the compressed domain (tasks.pixels.jpegblocks): the MCUs under
a box decode flat black, every other block decodes as before, and no edit is no change."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.pixels.jpegblocks import JpegBlockError, align, blank, mcu_size


def _jpeg(mode: str, subsampling: int, **options: int) -> bytes:
    rng = np.random.default_rng(7)
    shape = (120, 200, 3) if mode == "RGB" else (120, 200)
    image = Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, subsampling=subsampling, **options)
    return out.getvalue()


def _pixels(code: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(code)).convert("RGB")).astype(int)


@pytest.mark.parametrize("mode,subsampling,options,mcu", [
    ("RGB", 0, {}, (8, 8)),
    ("RGB", 1, {}, (16, 8)),
    ("RGB", 2, {}, (16, 16)),
    ("RGB", 2, {"restart_marker_blocks": 3}, (16, 16)),
    ("L", 0, {"restart_marker_rows": 1}, (8, 8)),
])
def test_blanked_mcus_are_black_and_the_rest_unchanged(mode: str, subsampling: int,
                                                       options: dict[str, int],
                                                       mcu: tuple[int, int]) -> None:
    code = _jpeg(mode, subsampling, **options)
    assert mcu_size(code) == mcu
    assert blank(code, []) == code  # parsed and written back: the same bytes
    box = align((21, 35, 50, 20), mcu, 200, 120)
    assert box[0] % mcu[0] == 0 and box[1] % mcu[1] == 0
    before, after = _pixels(code), _pixels(blank(code, [box]))
    x, y, w, h = box
    # black (up to the DC step's rounding), the edge pixels blended with the neighbours' chroma
    assert after[y + 1:y + h - 1, x + 1:x + w - 1].max() <= 2
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1] = False  # chroma upsampling
    assert (before[outside] == after[outside]).all()


def test_streams_it_cannot_edit_say_why() -> None:
    out = io.BytesIO()
    Image.new("RGB", (32, 32)).save(out, "JPEG", progressive=True)
    with pytest.raises(JpegBlockError, match="not baseline"):
        blank(out.getvalue(), [(0, 0, 8, 8)])
    with pytest.raises(JpegBlockError, match="not a JPEG"):
        mcu_size(b"\0\0\0\0")


def test_damaged_streams_raise_only_jpeg_block_errors() -> None:
    """Whatever the damage, the caller gets JpegBlockError (and falls back), nothing else."""
    code = _jpeg("RGB", 1)
    rng = np.random.default_rng(3)
    for _ in range(15):
        damaged = bytearray(code)
        for at in rng.integers(2, len(code), size=3):
            damaged[at] = int(rng.integers(0, 256))
        cut = bytes(damaged[:int(rng.integers(4, len(code) + 1))])
        for data in (bytes(damaged), cut):
            try:
                blank(data, [(0, 0, 16, 8)])
            except JpegBlockError:
                pass


def test_restart_intervals_with_nothing_to_blank_keep_their_bytes() -> None:
    """With a restart marker after every MCU row, a box in the first row re-codes that
    interval only: from the first marker on, the code stream is the original's."""
    code = _jpeg("RGB", 2, restart_marker_rows=1)
    edited = blank(code, [align((20, 0, 40, 10), (16, 16), 200, 120)])
    first = code.index(b"\xff\xd0")
    assert edited != code
    assert edited[edited.index(b"\xff\xd0"):] == code[first:]


def test_the_same_tables_are_parsed_once_per_cine() -> None:
    """Every frame of a cine carries the same Huffman tables: they are built once."""
    from tasks.pixels.jpegblocks import _Huffman

    _Huffman.parse.cache_clear()
    frames = [_jpeg("RGB", 2) for _ in range(3)]
    for frame in frames:
        blank(frame, [(0, 0, 16, 16)])
    assert _Huffman.parse.cache_info().misses == 4  # DC and AC, luminance and chrominance
