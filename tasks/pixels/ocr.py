"""Text in one 8-bit frame, found with Tesseract (the Debian ``tesseract-ocr`` binary).

Why Tesseract and not an ONNX OCR from the wheels (rapidocr-onnxruntime 1.4.4, measured on
the same 640x480 RGB ultrasound frame with two lines of drawn text): both read every line,
Tesseract in 140-180 CPU ms against 700-900 for RapidOCR, as word boxes (which blank less
of the image than RapidOCR's line boxes), and it adds nothing to the Python environment where
the ONNX engine brings about 500 MB (onnxruntime, OpenCV).
RapidOCR reads text on a noisy background without help; Tesseract needs the frame binarized
first, which :func:`_binarized` does for bright text (white, yellow, green annotations: what
devices burn in).  Dark text on a bright background is not looked for.

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
#: a pixel brighter than this share of the grey range may belong to text
BRIGHT = 0.55
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


def _binarized(gray: np.ndarray) -> bytes:
    """Bright pixels black on white, upscaled, as PNG bytes (what Tesseract reads best)."""
    from PIL import Image

    mask = gray > BRIGHT * 255
    image = Image.fromarray(np.where(mask, 0, 255).astype(np.uint8))
    image = image.resize((gray.shape[1] * SCALE, gray.shape[0] * SCALE), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def read_words(gray: np.ndarray, min_confidence: float = DETECT_CONFIDENCE) -> list[Word]:
    """The words Tesseract reads in ``gray`` (2-D uint8) at ``min_confidence`` or more."""
    if gray.size == 0 or int(gray.max()) <= BRIGHT * 255:
        return []  # nothing bright: no text to read (and no process to start)
    env = dict(os.environ, OMP_THREAD_LIMIT="1")  # one core per worker, as dask schedules
    try:
        done = subprocess.run([tesseract(), "stdin", "stdout", "--psm", "11", "tsv"],
                              input=_binarized(gray), capture_output=True, env=env,
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
