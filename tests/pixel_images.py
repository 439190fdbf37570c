"""DICOM files with names, IDs and dates drawn into their pixels (the burned-in text of
ultrasound, screen captures and angiography), made in code for the pixel-cleaning tests."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

US = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
XA = "1.2.840.10008.5.1.4.1.1.12.1"
CT = "1.2.840.10008.5.1.4.1.1.2"

#: drawn into every image; OCR must read them on the input and none of them on the output
BANNER = "DOE JANE ID 4820193"
FOOTER = "2024-03-15 ST MARY HOSPITAL"
WORDS = ("DOE", "JANE", "4820193", "2024-03-15", "MARY", "HOSPITAL")


@dataclass(frozen=True)
class Made:
    path: Path
    kind: str


def _canvas(rows: int, columns: int, seed: int, brightest: int = 110) -> Image.Image:
    """A dark image with a speckled fan in the middle (an ultrasound sector, roughly)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    inside = ((x - columns / 2) ** 2 + (y - rows * 0.1) ** 2 < (rows * 0.75) ** 2) & (
        y > rows * 0.2) & (y < rows * 0.8)
    speckle = (rng.random((rows, columns)) * brightest).astype(np.uint8)
    return Image.fromarray(np.where(inside, speckle, 0).astype(np.uint8))


#: whether _draw writes (off while a no-text twin is made: :func:`without_text`)
_WRITING = [True]


def _draw(image: Image.Image, fill: int | tuple[int, int, int], size: int = 18) -> None:
    if not _WRITING[0]:
        return
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    rows = image.size[1]
    draw.text((12, 10), BANNER, fill=fill, font=font)
    draw.text((12, rows - size - 14), FOOTER, fill=fill, font=font)


def _dataset(sop_class: str, rows: int, columns: int, transfer_syntax: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "4820193"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240315"
    ds.Modality = {US: "US", US_MULTIFRAME: "US", XA: "XA", CT: "CT"}.get(sop_class, "OT")
    ds.Manufacturer = "ANONPIPE EXAMPLE US" if ds.Modality == "US" else "ANONPIPE TEST"
    ds.Rows, ds.Columns = rows, columns
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def us_rgb(path: Path, transfer_syntax: str = ExplicitVRLittleEndian,
           progressive: bool = False) -> Path:
    """Ultrasound, 640x480 RGB, text in the banner the example rule names and in a footer
    only OCR finds; native, RLE or JPEG Baseline (``progressive``: a code stream that is
    not baseline, as some writers put under the Baseline syntax)."""
    image = _canvas(480, 640, 1).convert("RGB")
    _draw(image, (255, 255, 0))
    ds = _dataset(US, 480, 640, transfer_syntax)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 8, 8, 7
    ds.PixelRepresentation, ds.PlanarConfiguration = 0, 0
    array = np.asarray(image)
    if transfer_syntax == JPEGBaseline8Bit:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90, subsampling=1, progressive=progressive)
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.PixelData = encapsulate([out.getvalue()])
        ds["PixelData"].VR = "OB"
    elif transfer_syntax == RLELossless:
        ds.PhotometricInterpretation = "RGB"
        ds.compress(RLELossless, array, encoding_plugin="pydicom")
    else:
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = array.tobytes()
    return _save(ds, path)


def us_multiframe(path: Path, frames: int = 9) -> Path:
    """Ultrasound cine, 8-bit grey: the speckle changes, the text stays where it is."""
    stack = []
    for index in range(frames):
        image = _canvas(240, 400, 10 + index)
        _draw(image, 255)
        stack.append(np.asarray(image))
    ds = _dataset(US_MULTIFRAME, 240, 400, ExplicitVRLittleEndian)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 33.3
    ds.PixelData = np.stack(stack).tobytes()
    return _save(ds, path)


def us_cine(path: Path, frames: int = 300, transfer_syntax: str = ExplicitVRLittleEndian,
            rows: int = 480, columns: int = 640) -> Path:
    """A long RGB ultrasound cine (default 300 frames of 640x480: 276 MB native), native or
    JPEG Baseline one fragment per frame; the text stays in place, the speckle moves."""
    image = _canvas(rows, columns, 7).convert("RGB")
    _draw(image, (255, 255, 0))
    base = np.asarray(image)
    ds = _dataset(US_MULTIFRAME, rows, columns, transfer_syntax)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 8, 8, 7
    ds.PixelRepresentation, ds.PlanarConfiguration = 0, 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 33.3
    band = slice(rows // 5, rows * 4 // 5)  # the sector moves, the text rows do not

    def frame(index: int) -> np.ndarray:
        out = base.copy()
        out[band] = np.roll(base[band], 3 * index, axis=1)
        return out

    if transfer_syntax == JPEGBaseline8Bit:
        fragments = []
        for index in range(frames):
            out = io.BytesIO()
            Image.fromarray(frame(index)).save(out, "JPEG", quality=90, subsampling=2)
            fragments.append(out.getvalue())
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.PixelData = encapsulate(fragments, has_bot=True)
        ds["PixelData"].VR = "OB"
    else:
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = b"".join(frame(index).tobytes() for index in range(frames))
    return _save(ds, path)


def secondary_capture(path: Path, bits_stored: int = 12, monochrome1: bool = False,
                      transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """A 16-bit allocated grey screen capture (12 or 16 bits stored); MONOCHROME1 draws the
    text dark in stored values, bright on screen; native or JPEG-LS / JPEG 2000 Lossless."""
    image = _canvas(400, 512, 3)
    _draw(image, 255)
    top = (1 << bits_stored) - 1
    array = np.asarray(image).astype(np.uint32) * top // 255
    if monochrome1:
        array = top - array
    ds = _dataset(SECONDARY_CAPTURE, 400, 512, transfer_syntax)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored = 1, 16, bits_stored
    ds.HighBit, ds.PixelRepresentation = bits_stored - 1, 0
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.ConversionType = "WSD"
    if transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = array.astype("<u2").tobytes()
    elif transfer_syntax == ExplicitVRBigEndian:
        ds.PixelData = array.astype(">u2").tobytes()
        ds["PixelData"].VR = "OW"
    else:
        ds.compress(transfer_syntax, array.astype("<u2"))
    return _save(ds, path)


def xa_burned_in(path: Path) -> Path:
    """Angiography, two 8-bit frames, Burned In Annotation YES."""
    frames = []
    for index in range(2):
        image = _canvas(384, 512, 20 + index)
        _draw(image, 255)
        frames.append(np.asarray(image))
    ds = _dataset(XA, 384, 512, ExplicitVRLittleEndian)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.NumberOfFrames = 2
    ds.FrameIncrementPointer = 0x00181063
    ds.BurnedInAnnotation = "YES"
    ds.PixelData = np.stack(frames).tobytes()
    return _save(ds, path)


def us_grey_text(path: Path) -> Path:
    """Ultrasound, 640x480 RGB, the text drawn in mid grey on the black border while the
    speckle reaches white: the text is not among the brightest pixels of the frame."""
    image = _canvas(480, 640, 5, brightest=255).convert("RGB")
    _draw(image, (118, 118, 118))
    ds = _dataset(US, 480, 640, ExplicitVRLittleEndian)
    ds.Manufacturer = "ANONPIPE GREY US"  # no rule: OCR alone finds the text
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 8, 8, 7
    ds.PixelRepresentation, ds.PlanarConfiguration = 0, 0
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = np.asarray(image).tobytes()
    return _save(ds, path)


def sc_dark_text(path: Path) -> Path:
    """A screen capture, 8-bit grey: dark text on a light panel above and below a dark
    image (a report or a viewer's screen), Burned In Annotation absent."""
    rng = np.random.default_rng(9)
    panel = (226 + rng.random((400, 512)) * 8).astype(np.uint8)
    image = Image.fromarray(panel)
    image.paste(_canvas(280, 512, 11, brightest=200), (0, 60))
    _draw(image, 24)
    ds = _dataset(SECONDARY_CAPTURE, 400, 512, ExplicitVRLittleEndian)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.ConversionType = "WSD"
    ds.PixelData = np.asarray(image).tobytes()
    return _save(ds, path)


def ct_plain(path: Path) -> Path:
    """A CT slice with no text and no flag: never a candidate."""
    ds = _dataset(CT, 64, 64, ExplicitVRLittleEndian)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.PixelData = (np.arange(64 * 64) % 4096).astype("<u2").tobytes()
    return _save(ds, path)


def without_text(make: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """``make`` with nothing drawn: the same image without its text (what a candidate file
    with no burned-in text costs)."""
    def made(path: Path) -> Path:
        _WRITING[0] = False
        try:
            return make(path)
        finally:
            _WRITING[0] = True
    return made


ALL = {
    "us_rgb": us_rgb,
    "us_jpeg": lambda p: us_rgb(p, JPEGBaseline8Bit),
    "us_rle": lambda p: us_rgb(p, RLELossless),
    "us_multiframe": us_multiframe,
    "sc_12bit": secondary_capture,
    "sc_16bit_monochrome1": lambda p: secondary_capture(p, 16, True),
    "sc_12bit_big_endian": lambda p: secondary_capture(p, 12, False, ExplicitVRBigEndian),
    "sc_12bit_jpegls": lambda p: secondary_capture(p, 12, False, JPEGLSLossless),
    "sc_12bit_j2k": lambda p: secondary_capture(p, 12, False, JPEG2000Lossless),
    "xa_burned_in": xa_burned_in,
    "us_jpeg_cine": lambda p: us_cine(p, 8, JPEGBaseline8Bit),
    "us_grey_text": us_grey_text,
    "sc_dark_text": sc_dark_text,
}
#: the same kinds of file with no text in their pixels
NO_TEXT = {kind: without_text(ALL[kind]) for kind in
           ("us_rgb", "us_jpeg", "us_multiframe", "sc_12bit", "xa_burned_in", "us_jpeg_cine")}


def _tesseract(image: Image.Image) -> str:
    image = image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)
    png = io.BytesIO()
    image.save(png, "PNG")
    done = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11"],
                          input=png.getvalue(), capture_output=True, check=True)
    return done.stdout.decode()


def ocr_text(path: Path) -> str:
    """Every frame of ``path`` (decoded by pydicom, not by the code under test) through
    Tesseract twice, twice the size: bright pixels black on white, and the frame as a
    viewer shows it in 8-bit grey (Tesseract's own thresholds, inverted lines tried)."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array if int(ds.get("NumberOfFrames", 1) or 1) > 1 else [ds.pixel_array]
    text = []
    for frame in frames:
        grey = frame.max(axis=2) if frame.ndim == 3 else frame
        grey = grey.astype(np.float64)
        top = float((1 << int(ds.BitsStored)) - 1)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            grey = top - grey
        mask = grey > 0.55 * top
        text.append(_tesseract(Image.fromarray(np.where(mask, 0, 255).astype(np.uint8))))
        text.append(_tesseract(Image.fromarray((grey * (255 / top)).astype(np.uint8))))
    return " ".join(text).upper()
