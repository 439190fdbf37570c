"""``--pixels-preview DIR``: the first frame of each cleaned file, before and after side by
side, every blanked box outlined (rule boxes blue, OCR boxes red), for a person to check a
sample before release.  The "before" half shows what was burned in: the folder holds
patient data and is the user's to protect and delete.  Named by the new SOP Instance UID,
so a preview leads to its output file and its name carries nothing of the original.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from tasks.pixels.clean import PixelResult


def _rgb(frame: np.ndarray, photometric: str) -> np.ndarray:
    import numpy as np

    data = frame.astype(np.float32)
    if data.ndim == 3 and photometric.startswith("YBR"):
        data = data[..., :1].repeat(3, axis=2)
    lo, hi = float(data.min()), float(data.max())
    data = (data - lo) * (255.0 / (hi - lo)) if hi > lo else data * 0
    if photometric == "MONOCHROME1":
        data = 255 - data
    if data.ndim == 2:
        data = data[..., None].repeat(3, axis=2)
    return data.astype(np.uint8)


def write_preview(folder: str, name: str, result: PixelResult) -> Path:
    """Write ``folder/name.png`` atomically; returns its path."""
    import numpy as np
    from PIL import Image, ImageDraw

    assert result.before is not None and result.after is not None
    photometric = result.photometric
    before = _rgb(result.before, photometric)
    after = _rgb(result.after, photometric)
    width = before.shape[1]
    image = Image.fromarray(np.concatenate([before, np.zeros((before.shape[0], 8, 3), np.uint8),
                                            after], axis=1))
    draw = ImageDraw.Draw(image)
    for boxes, colour in ((result.rule_boxes, (0, 128, 255)), (result.ocr_boxes, (255, 0, 0))):
        for x, y, w, h in boxes:
            for left in (0, width + 8):
                draw.rectangle([left + x, y, left + x + w - 1, y + h - 1], outline=colour)
    target = Path(folder) / f"{name or 'unnamed'}.png"
    os.makedirs(target.parent, mode=0o700, exist_ok=True)  # it holds PHI: the user's only
    import tempfile  # with shutil and the compression modules: not for every run

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".preview-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as out:
            image.save(out, "PNG")
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target
