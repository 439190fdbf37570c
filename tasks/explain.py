"""``--explain FILE``: what the profile does to each attribute of one file, and why.

Rules that describe themselves: the walk that builds the edit plan records each
decision it takes (``trace``), so the explanation comes from the same table and the same
code that do the work.  No attribute value is printed, only tags, names and actions.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_keyword

from tasks import _profile_table
from tasks.deidentify import DeidentifySettings, Trace, deidentify_bytes
from tasks.dicomio import DicomFile, read_dicom, tag_str
from tasks.errors import UnsupportedFileError
from tasks.filemeta import preamble_data
from tasks.overlay import removed_planes_in_pixel_bits
from tasks.pixels.clean import candidate, pixel_step
from tasks.profile import CompiledProfile
from tasks.tags import BURNED_IN_ANNOTATION, SOP_CLASS_UID

ACTION_WORDS = {
    "X": "remove", "Z": "empty", "D": "dummy", "K": "keep", "C": "clean", "U": "new UID",
}


_META_LINE = ("file meta: rebuilt (version, SOP Class and new SOP Instance UID, transfer "
              "syntax, anonpipe's implementation); preamble: zeros")


def _keyword(tag: int) -> str:
    if tag >> 16 & 1:
        return "(private)"
    try:
        return dictionary_keyword(tag) or ""
    except KeyError:
        return ""


def _pixel_lines(df: DicomFile, profile: CompiledProfile, settings: DeidentifySettings
                 ) -> list[str]:
    """What Clean Pixel Data does to this file: the rules and boxes (never the text read)."""
    reason, rules = candidate(df, profile.burned_in_reason(
        df.top_text(SOP_CLASS_UID), df.top_text(BURNED_IN_ANNOTATION)), profile.spec.pixel_rules)
    if reason is None:
        return []
    policy = settings.pixel_policy
    lines = [f"pixels: {reason}; --pixels {policy}"]
    if policy == "refuse":
        flagged = profile.burned_in_reason(df.top_text(SOP_CLASS_UID),
                                           df.top_text(BURNED_IN_ANNOTATION))
        return lines + ["pixels: the file is refused" if flagged else
                        "pixels: kept as they are (--pixels refuse refuses flagged files only)"]
    if policy == "keep":
        return lines + ["pixels: kept as they are (burned-in text is not cleaned)"]
    for rule in rules:
        lines.append(f"pixels: rule {rule.name} ({rule.source or 'no source named'}) blanks "
                     + ", ".join(_box(box) for box in rule.boxes))
    try:
        result = pixel_step(df, profile, settings.pixel_policy)
    except UnsupportedFileError as exc:
        return lines + [f"pixels: refused: {exc}"]
    if result is None:
        return lines
    if result.ocr_boxes:
        lines.append(f"pixels: OCR boxes (frames {_frames(result.detect_frames)} read, blanked "
                     f"on all {result.frames}): " + ", ".join(_box(b) for b in result.ocr_boxes))
    else:
        lines.append(f"pixels: OCR read no text (frames {_frames(result.detect_frames)})")
    lines.append(f"pixels: verified by OCR on frames {_frames(result.verify_frames)}: no text "
                 "left" + (f"; JPEG Baseline re-encoded, lossy ({result.reencoded})"
                           if result.lossy else ""))
    return lines


def _box(box: tuple[int, int, int, int]) -> str:
    x, y, w, h = box
    return f"[x={x} y={y} w={w} h={h}]"


def _frames(indices: list[int]) -> str:
    return ",".join(str(i + 1) for i in indices)


def explain_bytes(data: bytes, settings: DeidentifySettings) -> str:
    """The explanation of one file as text (one line per attribute, nested items indented)."""
    irreversible = settings._replace(encryptor=None)
    trace: Trace = []
    deidentify_bytes(data, irreversible, trace=trace)
    profile = settings.compiled_profile()
    df = read_dicom(data)
    sop_class = df.top_text(SOP_CLASS_UID)
    resolver = profile.resolver(sop_class)
    edition = f", PS3.15 Table E.1-1 {_profile_table.EDITION}" if profile.spec.table else ""
    lines = [
        f"profile {profile.name} ({profile.spec.source}){edition}",
        "options: " + (", ".join(o for o in _profile_table.OPTIONS if o in profile.options)
                       or "none"),
        (f"SOP Class {sop_class or '(none)'} -> IOD "
         f"{resolver.iod or 'unknown (conditional codes take the code valid for any Type)'}"),
    ]
    lines += _pixel_lines(df, profile, settings)
    if profile.dates == "modified":
        lines.append("dates: shifted by a per-patient whole-day offset; (0028,0303) = MODIFIED")
    lines.append(_META_LINE + (" (this file's preamble holds data, a TIFF view say: it is "
                               "lost)" if preamble_data(df.raw_prefix) else ""))
    planes = removed_planes_in_pixel_bits(df, resolver.decide)
    if planes:
        lines.append(f"overlay planes {', '.join(f'{g:04X}' for g in planes)} lie in unused "
                     "Pixel Data bits: every bit outside the stored bits is cleared")
    lines.append("")
    for depth, el, action, why in sorted(trace, key=lambda entry: entry[1].start):
        word = ACTION_WORDS.get(action[:1], action)
        if action.endswith("(unchanged)"):
            word += " (no value to change)"
        elif action.endswith("(items walked)"):
            word = "keep items, walk them"
        lines.append(f"{'  ' * depth}{tag_str(el.tag)} {_keyword(el.tag):<36} {el.vr:<2} "
                     f"{action[:1]:<1} {word:<24} {why}")
    if not profile.spec.table:
        lines.append("")
        lines.append("(not based on Table E.1-1: private attributes, dates and overlays "
                     "are not touched)")
    return "\n".join(lines) + "\n"
