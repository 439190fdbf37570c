"""Text in one 8-bit frame, found with Tesseract (the Debian ``tesseract-ocr`` binary).

Why Tesseract and not an ONNX OCR from the wheels (rapidocr-onnxruntime 1.4.4, measured on
the same 640x480 RGB ultrasound frame with two lines of drawn text): both read every line,
Tesseract in 140-180 CPU ms against 700-900 for RapidOCR, as word boxes (which blank less
of the image than RapidOCR's line boxes), and it adds nothing to the Python environment where
the ONNX engine brings about 500 MB (onnxruntime, OpenCV).
RapidOCR reads text on a noisy background without help; Tesseract needs the frame binarized
first, which :func:`text_mask` does tile by tile: on a flat dark background (the black
border of an ultrasound, a dark screen) whatever stands out from it is text, mid-grey
included; on a flat light background (a document, a form, a light panel of a screen
capture) whatever is darker is text, as black on white is read; elsewhere (the image
itself, and the background tiles next to it, where the image's edge would pass for text)
only bright pixels are, as devices burn in white, yellow or green.  One Tesseract
run per frame reads all three, and a frame with nothing in the mask starts none.

Nothing read is ever returned or logged: only boxes, so no patient value leaves this module.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

#: words at or above this confidence (0-100) are blanked; below it Tesseract reads speckle
DETECT_CONFIDENCE = 50.0
#: a word this sure, of at least VERIFY_CHARS letters or digits, left after cleaning refuses
VERIFY_CONFIDENCE = 60.0
VERIFY_CHARS = 3
#: frames are upscaled before OCR: the small fonts of device annotations read better
SCALE = 2
#: a pixel brighter than this share of the grey range may belong to text (in the image)
BRIGHT = 0.55
#: the tiles (pixels square) whose background is judged: flat dark, flat light, or image
TILE = 32
#: a flat tile: half its pixels or more within this share of the grey range of its median
#: (on the far side from the text: above a light one's median, below a dark one's)
FLAT = 0.06
#: a light background's median is this bright or brighter, a dark one's this dark or darker
LIGHT = 0.5
DARK = 0.2
#: text on a flat background differs from its median by this share of the grey range
CONTRAST = 0.2
TIMEOUT = 120


class OcrUnavailable(Exception):
    """Tesseract is not installed or failed (the reason)."""


@dataclass(frozen=True, slots=True)
class Word:
    """One word's box in frame pixels (x, y, width, height), its confidence and how many
    letters or digits it has.  The text itself is not kept."""

    x: int
    y: int
    width: int
    height: int
    confidence: float
    chars: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height


def tesseract() -> str:
    found = shutil.which("tesseract")
    if found is None:
        raise OcrUnavailable("tesseract is not installed (Debian: tesseract-ocr tesseract-ocr-eng)")
    return found


def text_mask(gray: np.ndarray) -> np.ndarray:
    """Where text may be in ``gray`` (2-D uint8): bright pixels in the image, and pixels that
    stand out from a flat dark or flat light background, brighter or darker than it."""
    mask = gray > BRIGHT * 255
    rows, columns = gray.shape
    down, across = -(-rows // TILE), -(-columns // TILE)
    padded = np.pad(gray, ((0, down * TILE - rows), (0, across * TILE - columns)), mode="edge")
    tiles = padded.reshape(down, TILE, across, TILE).swapaxes(1, 2).reshape(
        down, across, TILE * TILE)
    low, middle, high = (TILE * TILE) // 10, (TILE * TILE) // 2, (TILE * TILE) * 9 // 10
    ranked = np.partition(tiles, (low, middle, high), axis=2)
    lo, mid, hi = (ranked[..., k].astype(np.int16) for k in (low, middle, high))
    light = (mid >= LIGHT * 255) & (hi - mid <= FLAT * 255)
    dark = (mid <= DARK * 255) & (mid - lo <= FLAT * 255)
    # a background away from the image: a flat tile next to an image tile may hold the
    # image's edge (speckle, a vessel), which nothing tells from text there
    image = np.pad(~(light | dark), 1)
    near = np.zeros_like(light)
    for dy in range(3):
        for dx in range(3):
            near |= image[dy:dy + down, dx:dx + across]
    light &= ~near
    dark &= ~near
    if not (light.any() or dark.any()):
        return mask

    def pixels(per_tile: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(per_tile, TILE, 0), TILE, 1)[:rows, :columns]

    background = pixels(mid)
    contrast = CONTRAST * 255
    return np.where(pixels(light), gray < background - contrast,
                    np.where(pixels(dark), gray > background + contrast, mask))


def _png(mask: np.ndarray) -> bytes:
    """``mask`` black on white, upscaled, as PNG bytes (what Tesseract reads best)."""
    from PIL import Image

    image = Image.fromarray(np.where(mask, 0, 255).astype(np.uint8))
    image = image.resize((mask.shape[1] * SCALE, mask.shape[0] * SCALE), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def read_words(gray: np.ndarray, min_confidence: float = DETECT_CONFIDENCE) -> list[Word]:
    """The words Tesseract reads in ``gray`` (2-D uint8) at ``min_confidence`` or more."""
    if gray.size == 0:
        return []
    mask = text_mask(gray)
    if not mask.any():
        return []  # nothing that could be text: no process to start
    env = dict(os.environ, OMP_THREAD_LIMIT="1")  # one core per worker, as dask schedules
    try:
        done = subprocess.run([tesseract(), "stdin", "stdout", "--psm", "11", "tsv"],
                              input=_png(mask), capture_output=True, env=env,
                              timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OcrUnavailable(f"tesseract failed ({type(exc).__name__})") from None
    if done.returncode != 0:
        raise OcrUnavailable(f"tesseract exited with status {done.returncode}")
    words = []
    for line in done.stdout.decode("utf-8", "replace").splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) != 12 or not fields[11].strip():
            continue
        chars = sum(ch.isalnum() for ch in fields[11])
        confidence = float(fields[10])
        if chars == 0 or confidence < min_confidence:
            continue
        left, top, width, height = (int(v) // SCALE for v in fields[6:10])
        words.append(Word(left, top, max(width, 1), max(height, 1), confidence, chars))
    return words


def is_text(word: Word) -> bool:
    """Whether a word read after cleaning counts as text left (verification)."""
    return word.confidence >= VERIFY_CONFIDENCE and word.chars >= VERIFY_CHARS
