"""The Clean Pixel Data policy for one file (PS3.15 E.3.1; CID 7050 code 113101).

``--pixels clean`` (the default): files the burned-in check flags or a region rule names
have the rule's rectangles blanked on every frame, then OCR looks for text left, blanks each
word's box with a margin, and looks again (up to ``ROUNDS`` times, while a round reads a
word as sure as verification's); text still read after that refuses the file (:class:`BurnedInTextError`, nothing written).  A long cine is read on
a sample: up to ``SAMPLE`` frames spread evenly from the first to the last for detection, the
boxes found blanked on every frame (device annotations stay in one place through a cine),
and up to ``SAMPLE`` other frames, between those, for verification.  ``refuse`` refuses
flagged files (the behaviour before cleaning existed); ``keep`` passes their pixels through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.dicomio import DicomFile, Encoding
from tasks.edit import encode_element
from tasks.errors import UnsupportedFileError
from tasks.fileio import FileRange
from tasks.pixels.rules import Box, RegionRule, matching_rules
from tasks.tags import (
    BURNED_IN_ANNOTATION,
    SOP_CLASS_UID,
    TRANSFER_SYNTAX_UID,
)

if TYPE_CHECKING:  # numpy, Pillow and the codecs load with the first file cleaned
    import numpy as np

    from tasks.profile import CompiledProfile

POLICIES = ("clean", "refuse", "keep")
DEFAULT_POLICY = "clean"
#: CID 7050 (PS3.16): what (0012,0064) gains when pixels were cleaned
CLEAN_PIXEL_CODE = ("113101", "DCM", "Clean Pixel Data Option")
#: the value (0012,0063) De-identification Method gains
CLEAN_PIXEL_METHOD = b"Clean Pixel Data: region rules, OCR, verified by OCR"
SAMPLE = 6
ROUNDS = 3
#: pixels added around each OCR word box (and at least a quarter of its height)
MARGIN = 3


class BurnedInTextError(UnsupportedFileError):
    """Text is still read in the pixels after cleaning (verification refused the file)."""


class PixelResult:
    """What cleaning did to one file (boxes only: never the text read)."""

    __slots__ = ("after", "before", "detect_frames", "elements", "frames", "lossy",
                 "ocr_boxes", "photometric", "reason", "reencoded", "rule_boxes", "rules",
                 "verify_frames")

    def __init__(self, reason: str, rules: list[str] | None = None) -> None:
        self.reason = reason
        self.rules: list[str] = [] if rules is None else rules
        self.rule_boxes: list[Box] = []
        self.ocr_boxes: list[Box] = []
        self.frames = 0
        self.detect_frames: list[int] = []
        self.verify_frames: list[int] = []
        self.lossy = False
        #: why JPEG Baseline frames were re-encoded, not blanked in the code stream
        self.reencoded: str | None = None
        #: new top-level elements, tag -> encoded (Pixel Data when changed, (0028,0301), ...)
        self.elements: dict[int, bytes] = {}
        #: the frames' photometric interpretation as decoded (for --pixels-preview)
        self.photometric = ""
        #: the first frame before and after cleaning (for --pixels-preview)
        self.before: np.ndarray | None = None
        self.after: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"PixelResult(reason={self.reason!r}, how={self.how!r}, "
                f"frames={self.frames}, lossy={self.lossy})")

    @property
    def how(self) -> str:
        """``rule``, ``ocr`` (some box came from OCR) or ``checked`` (nothing to blank)."""
        if self.ocr_boxes:
            return "ocr"
        return "rule" if self.rule_boxes else "checked"


def candidate(df: DicomFile, reason: str | None, rule_files: tuple[str, ...]
              ) -> tuple[str | None, list[RegionRule]]:
    """Why ``df``'s pixels are looked at (the burned-in check's reason, or the rules that
    match), and the matching rules; (None, []) for every other file: no pixel work."""
    rules = matching_rules(df, rule_files) if rule_files else []
    if reason is None and rules:
        reason = "region rule " + ", ".join(rule.name for rule in rules)
    return reason, rules


def sample(count: int, size: int = SAMPLE) -> tuple[list[int], list[int]]:
    """Frames read for detection and, disjoint where there are enough, for verification."""
    if count <= size:
        return list(range(count)), list(range(count))
    step = (count - 1) / (size - 1)
    detect = sorted({round(i * step) for i in range(size)})
    verify = sorted({round((i + 0.5) * step) for i in range(size - 1)} - set(detect))
    return detect, verify or detect


def _grow(box: Box, shape: tuple[int, ...]) -> Box:
    x, y, w, h = box
    margin = max(MARGIN, h // 4)
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(shape[1], x + w + margin), min(shape[0], y + h + margin)
    return x0, y0, x1 - x0, y1 - y0


def clean(df: DicomFile, reason: str, rules: list[RegionRule], enc: Encoding,
          source: FileRange | None = None) -> PixelResult:
    """Blank ``df``'s burned-in text; the new elements, or BurnedInTextError.  ``source``:
    the Pixel Data element in the file when ``df`` holds a stand-in (``tasks.pixeltail``);
    the new element is then a :class:`~tasks.fileio.Stream` made as it is written."""
    from tasks.pixels.codecs import PixelCodecError

    try:
        return _clean(df, reason, rules, enc, source)
    except PixelCodecError as exc:  # a frame read late (a cine's) may fail too
        raise UnsupportedFileError(f"burned-in annotation: {reason}; pixel data cannot be "
                                   f"cleaned: {exc} (--pixels keep processes it anyway)"
                                   ) from None


def _clean(df: DicomFile, reason: str, rules: list[RegionRule], enc: Encoding,
           source: FileRange | None) -> PixelResult:
    from tasks.pixels import ocr
    from tasks.pixels.codecs import decode

    result = PixelResult(reason, rules=[rule.name for rule in rules])
    frames = decode(df, transfer_syntax_of(df), source)
    result.photometric = frames.photometric
    result.before = frames.frame(0).copy()
    result.frames = frames.count
    shape = frames.shape
    result.rule_boxes = [frames.aligned(box) for rule in rules for box in rule.boxes]
    detect, verify = sample(frames.count)
    frames.fix_range(sorted(set(detect + verify)))
    frames.blank(result.rule_boxes)
    result.detect_frames, result.verify_frames = detect, verify
    try:
        for _ in range(ROUNDS):
            words = [word for index in detect for word in ocr.read_words(frames.gray8(index))]
            found = sorted({frames.aligned(_grow(word.box, shape)) for word in words})
            result.ocr_boxes += found
            frames.blank(found)
            if not any(map(ocr.is_text, words)):
                break  # fragments (speckle read as a letter or two): no text to look beside
        left = [word for index in verify for word in ocr.read_words(frames.gray8(index))
                if ocr.is_text(word)]
    except ocr.OcrUnavailable as exc:
        raise UnsupportedFileError(f"burned-in annotation: {reason}; OCR unavailable: {exc}"
                                   ) from None
    if left:
        raise BurnedInTextError(
            f"burned-in annotation: {reason}; {len(left)} word(s) still read after cleaning "
            f"(--explain shows the boxes; --pixels keep processes it anyway)")
    result.after = frames.frame(0).copy()
    if result.rule_boxes or result.ocr_boxes:
        result.elements.update(frames.encode(enc))
        result.lossy = frames.lossy
        result.reencoded = frames.reencoded if frames.lossy else None
    result.elements[BURNED_IN_ANNOTATION] = encode_element(
        BURNED_IN_ANNOTATION, "CS", b"NO", enc)
    return result


def transfer_syntax_of(df: DicomFile) -> str:
    el = df.meta_element(TRANSFER_SYNTAX_UID)
    if el is None:
        return "1.2.840.10008.1.2"  # no meta: PS3.10 7.1 default (Implicit VR Little Endian)
    return el.value(df.meta_bytes).rstrip(b"\0 ").decode("latin-1")


def _burned_in_reason(df: DicomFile, profile: CompiledProfile) -> str | None:
    """The profile's burned-in reason for ``df``, decided once per profile and raw values
    of (0008,0016) and (0028,0301): a run's files share a few of each."""
    key = (profile, df.top_value(SOP_CLASS_UID), df.top_value(BURNED_IN_ANNOTATION))
    try:
        return _REASONS[key]
    except KeyError:
        pass
    reason = profile.burned_in_reason(df.top_text(SOP_CLASS_UID),
                                      df.top_text(BURNED_IN_ANNOTATION))
    if len(_REASONS) >= _MAX_REASONS:
        _REASONS.clear()
    _REASONS[key] = reason
    return reason


#: _burned_in_reason by (profile, raw SOP Class UID, raw Burned In Annotation)
_REASONS: dict[tuple[CompiledProfile, bytes | None, bytes | None], str | None] = {}
_MAX_REASONS = 1024


def pixels_wanted(df: DicomFile, profile: CompiledProfile, policy: str) -> bool:
    """Whether ``df``'s pixels will be decoded (then it is read whole, not split)."""
    return policy == "clean" and candidate(df, _burned_in_reason(df, profile),
                                           profile.spec.pixel_rules)[0] is not None


def pixel_step(df: DicomFile, profile: CompiledProfile, policy: str,
               source: FileRange | None = None) -> PixelResult | None:
    """The pixel step of de-identification under ``policy`` (clean, refuse, keep): None
    when the pixels stay as they are; refusals raise.  ``refuse`` refuses what the
    burned-in check flags, as before cleaning existed; region rules name files to clean."""
    if policy == "keep":
        return None
    if policy == "refuse":
        flagged = _burned_in_reason(df, profile)
        if flagged is not None:
            raise UnsupportedFileError(
                f"burned-in annotation: {flagged}; --pixels refuse (--pixels clean blanks it)")
        return None
    reason, rules = candidate(df, _burned_in_reason(df, profile), profile.spec.pixel_rules)
    if reason is None:
        return None
    return clean(df, reason, rules, df.enc, source)
