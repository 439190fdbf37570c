"""``--explain FILE``: what the profile does to each attribute of one file, and why.

Rules that describe themselves (STYLE.md 4): the walk that builds the edit plan records each
decision it takes (``trace``), so the explanation comes from the same table and the same
code that do the work.  No attribute value is printed, only tags, names and actions.
"""

from __future__ import annotations

from dataclasses import replace

from pydicom.datadict import dictionary_keyword

from tasks import _profile_table
from tasks.deidentify import (
    BURNED_IN_ANNOTATION,
    SOP_CLASS_UID,
    DeidentifySettings,
    Trace,
    deidentify_bytes,
)
from tasks.dicomio import read_dicom, tag_str
from tasks.filemeta import preamble_data
from tasks.overlay import removed_planes_in_pixel_bits

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


def explain_bytes(data: bytes, settings: DeidentifySettings) -> str:
    """The explanation of one file as text (one line per attribute, nested items indented)."""
    irreversible = replace(settings, encryptor=None)
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
    reason = profile.burned_in_reason(sop_class, df.top_text(BURNED_IN_ANNOTATION))
    if reason is not None:
        lines.append(f"burned-in annotation: {reason}: refused unless --allow-burned-in "
                     "(pixel data is never cleaned)")
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
