"""gdcmanon's dumb mode: ``--empty``, ``--clear``, ``--remove``, ``--replace``.

Semantics as gdcmanon 3.0.21 (top level only, no recursion; file meta kept, (0002,0002) and
(0002,0003) follow (0008,0016) and (0008,0018)), in gdcmanon's order of operations, minus
its bugs: every operation is checked and applied in memory before anything is written, so a
failing one leaves no half-edited file; replacement values are checked against the VR and
VM; private attributes can be replaced and created; a sequence can be emptied without a
failure; Type 1 attributes are not emptied or removed without a warning; a Private Creator
is not removed from under its elements without ``force``.  Deliberate differences are
listed in :data:`GDCMANON_DIFFERENCES`.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import NamedTuple

from tasks.datadict import charset_codec, public_entry
from tasks.dicomio import (
    EXPLICIT_LE_ENC,
    LONG_VRS,
    DicomFile,
    Element,
    read_dicom,
    tag_str,
)
from tasks.edit import Chunk, EditPlan, encode_element, render, render_parts
from tasks.engine import Staged, file_pieces, stage, write_staged
from tasks.errors import ProfileError, UsageError
from tasks.fileio import Piece
from tasks.model import Unrecorded, Written
from tasks.pixeltail import SPLIT_FROM, WholeFile, split_rendered
from tasks.tags import (
    MEDIA_SOP_CLASS_UID,
    MEDIA_SOP_INSTANCE_UID,
    PIXEL_DATA,
    PIXEL_REPRESENTATION,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
)
from tasks.tagspec import TagSpec, parse_replace, parse_tag
from tasks.vr import CHARSET_VRS, SINGLE_VALUE_VRS

#: data set attribute -> the file meta attribute that mirrors it (PS3.10 7.1)
META_MIRRORS = {SOP_CLASS_UID: MEDIA_SOP_CLASS_UID, SOP_INSTANCE_UID: MEDIA_SOP_INSTANCE_UID}

GDCMANON_DIFFERENCES: tuple[str, ...] = (
    ("All operations are checked and applied in memory first; on any error nothing is "
     "written (gdcmanon skips the remaining operations but still writes the file, exit 1)."),
    ("--replace on a private attribute (g,e,CREATOR=VALUE) works and creates it, reserving a "
     "block when the creator is absent (gdcmanon exits 1 silently without output)."),
    ("A creator with an even group, an empty creator or one containing a backslash is an "
     "error (gdcmanon silently falls back to the public tag g,e)."),
    ("--replace values are checked against the VR (length, characters, format, date and "
     "number ranges), the VM of the dictionary and the file's Specific Character Set; "
     "gdcmanon writes anything (e.g. a 24-character DA)."),
    ("--replace on binary VRs (US, SS, UL, SL, UV, SV, FL, FD, AT) takes decimal numbers "
     "(AT: ggggeeee hex) separated by backslashes and encodes them in the file's byte order "
     "(gdcmanon refuses: 'You need to explicitly specify the length')."),
    ("--empty on a sequence leaves it with zero items and succeeds (gdcmanon does the same "
     "but reports a failure, exit 1). --replace on a sequence is an error, as in gdcmanon, "
     "but before anything is written."),
    ("An unknown public tag for --empty/--replace, a group below 0008 for --empty/--replace, "
     "and any operation on group 0002 are refused before any file is read (gdcmanon fails "
     "without a message, or for --clear/--remove on group 0002 silently does nothing). "
     "(0002,0002)/(0002,0003) follow (0008,0016)/(0008,0018) instead."),
    ("A bare --replace g,e (no value) is an error; write g,e= for an empty value (gdcmanon "
     "takes the empty value)."),
    ("Emptying, clearing or removing a Type 1 attribute (SOP Class/Instance UID, Study/Series "
     "Instance UID, Modality, Frame of Reference UID, Image Pixel module) prints a warning "
     "unless --force (gdcmanon is silent, or for (0008,0018) refuses to write)."),
    ("Removing (0008,0018) writes the file with (0002,0003) emptied (gdcmanon: 'No 8,18 "
     "element sorry', no output); removing (0008,0016) empties (0002,0002) (gdcmanon keeps "
     "the old value there)."),
    ("Emptying, removing or renaming a Private Creator that still reserves elements is an "
     "error unless --force (gdcmanon orphans the block silently); with --force the result "
     "is gdcmanon's."),
    ("A new private block takes the first (gggg,00xx) slot that is free and whose element "
     "range (gggg,xx00-xxFF) holds no orphaned elements (gdcmanon only checks the slot)."),
    ("A private attribute named without its creator (g,e with g odd) can be emptied or "
     "replaced when present; creating one needs g,e,CREATOR."),
    ("The preamble and every untouched element keep their bytes (gdcmanon zeroes the "
     "preamble and rewrites part of the file meta)."),
)


class DumbKind(str, Enum):
    """The four dumb-mode operations (gdcmanon option names)."""

    EMPTY = "empty"  # zero-length value; created when absent
    CLEAR = "clear"  # zero-length value, only when present
    REMOVE = "remove"  # deleted when present
    REPLACE = "replace"  # value set; created when absent


class DumbOp(NamedTuple):
    """One dumb-mode operation on one (top-level) attribute."""

    kind: DumbKind
    tag: TagSpec
    value: str | None = None

    def __str__(self) -> str:
        if self.kind is DumbKind.REPLACE:
            return f"replace {self.tag} with {self.value!r}"
        return f"{self.kind.value} {self.tag}"


#: gdcmanon's execution order as (kind, private?); private replace is ours.
ORDER: tuple[tuple[DumbKind, bool], ...] = (
    (DumbKind.REPLACE, False),
    (DumbKind.REPLACE, True),
    (DumbKind.EMPTY, True),
    (DumbKind.CLEAR, True),
    (DumbKind.REMOVE, True),
    (DumbKind.EMPTY, False),
    (DumbKind.CLEAR, False),
    (DumbKind.REMOVE, False),
)
_RANK = {key: index for index, key in enumerate(ORDER)}

#: Attributes that are Type 1 wherever they sit at the top level of a composite instance.
#: Emptying or removing one makes the file invalid (emptying (0008,0016), for one).
TYPE1: dict[int, str] = {
    0x00080016: "SOP Class UID (PS3.3 C.12.1 SOP Common)",
    0x00080018: "SOP Instance UID (PS3.3 C.12.1 SOP Common)",
    0x0020000D: "Study Instance UID (PS3.3 C.7.2.1 General Study)",
    0x0020000E: "Series Instance UID (PS3.3 C.7.3.1 General Series)",
    0x00080060: "Modality (PS3.3 C.7.3.1 General Series)",
    0x00200052: "Frame of Reference UID (PS3.3 C.7.4.1 Frame of Reference)",
    0x00280002: "Samples per Pixel (PS3.3 C.7.6.3 Image Pixel)",
    0x00280004: "Photometric Interpretation (PS3.3 C.7.6.3 Image Pixel)",
    0x00280010: "Rows (PS3.3 C.7.6.3 Image Pixel)",
    0x00280011: "Columns (PS3.3 C.7.6.3 Image Pixel)",
    0x00280100: "Bits Allocated (PS3.3 C.7.6.3 Image Pixel)",
    0x00280101: "Bits Stored (PS3.3 C.7.6.3 Image Pixel)",
    0x00280102: "High Bit (PS3.3 C.7.6.3 Image Pixel)",
    0x00280103: "Pixel Representation (PS3.3 C.7.6.3 Image Pixel)",
}


class DumbSettings(NamedTuple):
    """What a worker needs for dumb mode (small and picklable)."""

    ops: tuple[DumbOp, ...]
    force: bool = False


def parse_dumb_ops(
    empty: Sequence[str], clear: Sequence[str], remove: Sequence[str], replace: Sequence[str]
) -> tuple[DumbOp, ...]:
    """Operations from the four options' arguments, checked, in gdcmanon's order.

    Within one kind the command-line order is kept.  Everything that does not depend on a
    file (syntax, group, dictionary VR, value format of public attributes) fails here.
    """
    ops = [DumbOp(DumbKind.EMPTY, parse_tag(text)) for text in empty]
    ops += [DumbOp(DumbKind.CLEAR, parse_tag(text)) for text in clear]
    ops += [DumbOp(DumbKind.REMOVE, parse_tag(text)) for text in remove]
    ops += [DumbOp(DumbKind.REPLACE, *parse_replace(text)) for text in replace]
    if not ops:
        raise UsageError("No operation(s) to be done.")
    for op in ops:
        _check_op(op)
    return tuple(sorted(ops, key=lambda op: _RANK[(op.kind, op.tag.private)]))


def type1_warnings(ops: Iterable[DumbOp]) -> list[str]:
    """Warnings about Type 1 attributes the operations may empty or remove (file-independent).

    For a driver that checks once per run instead of once per file.
    """
    found = []
    for op in ops:
        if op.tag.private or op.tag.tag not in TYPE1:
            continue
        if op.kind is DumbKind.REPLACE and op.value:
            continue
        found.append(_type1_message(op.kind, op.tag.tag, "may be"))
    return found


def _type1_message(kind: DumbKind, tag: int, verb: str = "is") -> str:
    done = "removed" if kind is DumbKind.REMOVE else "emptied"
    return (f"{tag_str(tag)} {TYPE1[tag]} is Type 1 and {verb} {done}: the output is not a "
            "valid DICOM instance (use --force to silence this warning)")


def _check_op(op: DumbOp) -> None:
    """File-independent checks of one operation."""
    spec, kind = op.tag, op.kind
    creates = kind in (DumbKind.EMPTY, DumbKind.REPLACE)
    if spec.group == 0x0002:
        raise ProfileError(
            f"{op}: group 0002 is the file meta information, which dumb mode does not edit; "
            "(0002,0002)/(0002,0003) follow (0008,0016)/(0008,0018)"
        )
    if spec.group == 0xFFFE:
        raise ProfileError(f"{op}: {spec} is an item delimiter, not an attribute")
    if spec.private:
        if op.value is not None:
            vr, vm = _private_entry(spec.group, spec.element, spec.creator)
            if vr is not None:
                _check_replace_vr(op, vr)
                _check_any_vr(op, vr.split(" or "), vm)
        return
    if creates and spec.group < 0x0008:
        raise ProfileError(
            f"{op}: group {spec.group:04X} is below 0008; only data set attributes can be "
            f"{'replaced' if kind is DumbKind.REPLACE else 'emptied'}"
        )
    if spec.element == 0x0000 and kind is not DumbKind.REMOVE:
        raise ProfileError(f"{op}: group lengths are computed when the file is written; "
                           "only --remove applies to them")
    if spec.group % 2:
        if creates and (0x0001 <= spec.element <= 0x000F or 0x0100 <= spec.element <= 0x0FFF):
            raise ProfileError(f"{op}: {spec} is not a valid private tag (PS3.5 7.8.1)")
        return
    entry = _public_entry(spec.tag)
    if entry is None:
        if creates:
            raise ProfileError(f"{op}: {spec} is not in the DICOM dictionary, so its VR is "
                               "unknown (gdcmanon: 'Cannot process tag ... vr: ??')")
        return
    vr, vm = entry
    if kind is DumbKind.REPLACE and op.value is not None:
        _check_replace_vr(op, vr)
        _check_any_vr(op, vr.split(" or "), vm)


def _check_any_vr(op: DumbOp, choices: list[str], vm: str | None) -> None:
    """The value must suit one of a dictionary's VRs (``US or SS``: the file decides)."""
    assert op.value is not None
    first: ProfileError | None = None
    for vr in choices:
        try:
            encode_value(vr, op.value, vm, None, str(op))
            return
        except ProfileError as exc:
            first = first or exc
    assert first is not None
    raise first


def _check_replace_vr(op: DumbOp, vr: str) -> None:
    if vr == "SQ":
        raise ProfileError(f"{op}: {op.tag} is a sequence; --replace takes a text or number "
                           "value (use --empty, --clear or --remove on a sequence)")


# --------------------------------------------------------------------------- dictionaries


def _public_entry(tag: int) -> tuple[str, str] | None:
    """(VR, VM) from the data dictionary (repeating groups included), or None."""
    if tag & 0xFFFF == 0:
        return ("UL", "1")
    return public_entry(tag)


@functools.lru_cache(maxsize=1)
def _creators_by_folded_name() -> dict[str, list[str]]:
    # pydicom's private dictionaries: imported (with pydicom) by the runs that name a
    # private attribute only (tasks.datadict says why)
    from pydicom.datadict import private_dictionaries

    names: dict[str, list[str]] = {}
    for name in private_dictionaries:
        names.setdefault(name.casefold(), []).append(name)
    return names


@functools.lru_cache(maxsize=4096)
def _private_entry(group: int, offset: int, creator: str | None) -> tuple[str | None, str | None]:
    """(VR, VM) of a private attribute from pydicom's private dictionary, or (None, None).

    The creator is looked up as written in the file, then case-insensitively.
    """
    if creator is None:
        return None, None
    from pydicom.datadict import get_private_entry

    names = [creator] + [name for name in _creators_by_folded_name().get(creator.casefold(), [])
                         if name != creator]
    tag = (group << 16) | 0x1000 | offset
    for name in names:
        try:
            vr, vm = get_private_entry(tag, name)[:2]
        except KeyError:
            continue
        if vr in ("", "NONE"):
            return None, None
        return vr, vm
    return None, None


# --------------------------------------------------------------------------- values

_BAD_CHARS = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")  # control characters except ESC
#: LT, ST and UT also allow TAB, LF, FF and CR
_BAD_TEXT_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def _check_date(text: str) -> str | None:
    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return "not a valid calendar date"
    return None


def _check_time(text: str) -> str | None:
    parts = [text[i:i + 2] for i in range(0, min(len(text), 6), 2)]
    limits = (23, 59, 60)
    for part, limit in zip(parts, limits):
        if int(part) > limit:
            return "hours, minutes or seconds out of range"
    return None


def _check_datetime(text: str) -> str | None:
    if len(text) >= 8 and _check_date(text[:8]):
        return "not a valid calendar date"
    core = re.split(r"[+-]", text, maxsplit=1)[0]
    if len(core) > 8:
        return _check_time(core[8:])
    return None


def _check_is(text: str) -> str | None:
    if not -(2**31) <= int(text) <= 2**31 - 1:
        return "out of the IS range -2147483648..2147483647"
    return None


def _check_ds(text: str) -> str | None:
    if not math.isfinite(float(text)):
        return "not a finite number"
    return None


def _check_pn(text: str) -> str | None:
    groups = text.split("=")
    if len(groups) > 3:
        return "more than 3 component groups (alphabetic=ideographic=phonetic)"
    for group in groups:
        if len(group) > 64:
            return "a component group longer than 64 characters"
        if len(group.split("^")) > 5:
            return "more than 5 components (family^given^middle^prefix^suffix)"
    return None


class TextRule(NamedTuple):
    """How one text VR is checked (PS3.5 Table 6.2-1)."""

    max_chars: int | None
    pattern: str | None = None  # full match of one value (trailing spaces ignored)
    check: Callable[[str], str | None] | None = None
    bad_chars: re.Pattern[str] = _BAD_CHARS
    describe: str = ""


TEXT_RULES: dict[str, TextRule] = {
    "AE": TextRule(16, r"[^\\]*[^\\ ][^\\]*", describe="not all spaces"),
    "AS": TextRule(4, r"\d{3}[DWMY]", describe="nnnD, nnnW, nnnM or nnnY"),
    "CS": TextRule(16, r"[A-Z0-9 _]*", describe="upper-case letters, digits, space, _"),
    "DA": TextRule(8, r"\d{8}", _check_date, describe="YYYYMMDD"),
    "DS": TextRule(16, r" *[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)? *", _check_ds,
                   describe="a decimal number"),
    "DT": TextRule(26, r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?",
                   _check_datetime, describe="YYYYMMDDHHMMSS.FFFFFF&ZZXX"),
    "IS": TextRule(12, r" *[+-]?\d+ *", _check_is, describe="an integer"),
    "LO": TextRule(64),
    "LT": TextRule(10240, bad_chars=_BAD_TEXT_CHARS),
    "PN": TextRule(None, None, _check_pn),
    "SH": TextRule(16),
    "ST": TextRule(1024, bad_chars=_BAD_TEXT_CHARS),
    "TM": TextRule(14, r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", _check_time,
                   describe="HHMMSS.FFFFFF"),
    "UC": TextRule(None),
    "UI": TextRule(64, r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*",
                   describe="digits and dots, no empty component, no leading zero"),
    "UR": TextRule(None, r"\S.*"),
    "UT": TextRule(None, bad_chars=_BAD_TEXT_CHARS),
    "UN": TextRule(None),  # unknown VR (private, no dictionary entry): written as given
}

#: binary VRs: struct format of one value and its accepted range (PS3.5 Table 6.2-1)
BINARY_RULES: dict[str, tuple[str, float, float]] = {
    "US": ("H", 0, 2**16 - 1),
    "SS": ("h", -(2**15), 2**15 - 1),
    "UL": ("I", 0, 2**32 - 1),
    "SL": ("i", -(2**31), 2**31 - 1),
    "UV": ("Q", 0, 2**64 - 1),
    "SV": ("q", -(2**63), 2**63 - 1),
    "FL": ("f", -3.4028234663852886e38, 3.4028234663852886e38),
    "FD": ("d", -math.inf, math.inf),
}


def _vm_allows(count: int, vm: str) -> bool:
    """Whether ``count`` values satisfy a dictionary VM such as 1, 1-3, 1-n, 2-2n."""
    match = re.fullmatch(r"(\d+)(?:-(\d*)(n?))?", vm)
    if match is None:
        return True
    low = int(match.group(1))
    if match.group(2) is None:
        return count == low
    if match.group(3):
        step = int(match.group(2) or 1)
        return count >= low and count % step == 0
    return low <= count <= int(match.group(2))


def encode_value(
    vr: str, text: str, vm: str | None, charset: Sequence[str] | None, what: str,
    little: bool = True,
) -> bytes:
    """``text`` checked against ``vr`` (and ``vm``) and encoded, unpadded.

    ``charset`` is the file's Specific Character Set terms (None: not known yet, the
    encoding check is left for when it is).  Raises ProfileError naming ``what``.
    """
    if text == "":
        return b""
    if vr in BINARY_RULES or vr == "AT":
        values = text.split("\\")
        _check_vm(values, vm, what)
        return b"".join(_binary(vr, value, what, little) for value in values)
    rule = TEXT_RULES.get(vr)
    if rule is None:
        raise ProfileError(f"{what}: --replace cannot write {vr} (binary) values; "
                           "use --empty, --clear or --remove")
    values = [text] if vr in SINGLE_VALUE_VRS else text.split("\\")
    _check_vm(values, vm, what)
    for value in values:
        reason = _text_problem(rule, vr, value) if value else None
        if reason:
            raise ProfileError(f"{what}: {value!r} is not a valid {vr} value: {reason}")
    if charset is None:
        return text.encode("utf-8")
    return _encode_text(vr, text, charset, what)


def _check_vm(values: list[str], vm: str | None, what: str) -> None:
    if vm is not None and not _vm_allows(len(values), vm):
        raise ProfileError(f"{what}: {len(values)} value(s) given, the dictionary's VM is {vm}")


def _text_problem(rule: TextRule, vr: str, value: str) -> str | None:
    if rule.bad_chars.search(value):
        return "control characters are not allowed"
    if rule.max_chars is not None and len(value) > rule.max_chars:
        return f"{len(value)} characters, at most {rule.max_chars}"
    if vr not in CHARSET_VRS and vr != "UN" and not value.isascii():
        return "only ASCII characters are allowed"
    if rule.pattern is not None:
        stripped = value.rstrip(" ") if vr not in ("DS", "IS") else value
        if not re.fullmatch(rule.pattern, stripped):
            return f"expected {rule.describe or 'the ' + vr + ' format'}"
        if rule.check is not None:
            return rule.check(stripped.strip())
    elif rule.check is not None:
        return rule.check(value)
    return None


def _binary(vr: str, value: str, what: str, little: bool) -> bytes:
    order = "<" if little else ">"
    if vr == "AT":
        match = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?", value.strip())
        if match is None:
            raise ProfileError(f"{what}: {value!r} is not an AT value (ggggeeee, hexadecimal)")
        return struct.pack(order + "HH", int(match.group(1), 16), int(match.group(2), 16))
    fmt, low, high = BINARY_RULES[vr]
    number: float
    try:
        number = float(value) if fmt in "fd" else int(value.strip(), 10)
    except ValueError:
        kind = "a decimal number" if fmt in "fd" else "a decimal integer"
        raise ProfileError(f"{what}: {value!r} is not {kind} ({vr})") from None
    if fmt in "fd" and not math.isfinite(number):
        raise ProfileError(f"{what}: {value!r} is not a finite number ({vr})")
    if not low <= number <= high:
        raise ProfileError(f"{what}: {value} is out of the {vr} range")
    return struct.pack(order + fmt, number)


def _encode_text(vr: str, text: str, charset: Sequence[str], what: str) -> bytes:
    if vr not in CHARSET_VRS or not any(term not in ("", "ISO_IR 6", "ISO 2022 IR 6")
                                        for term in charset):
        try:
            return text.encode("ascii")
        except UnicodeEncodeError:
            raise ProfileError(
                f"{what}: {text!r} has non-ASCII characters and the file has no Specific "
                "Character Set (0008,0005) that could encode them"
            ) from None
    codecs = []
    for term in charset:
        codec = charset_codec(term)
        if codec is None:
            raise ProfileError(f"{what}: the file's Specific Character Set {term!r} is unknown")
        codecs.append(codec)
    try:
        if len(codecs) == 1:
            return text.encode(codecs[0])
        # ISO 2022 code extensions: pydicom's encoder (imported, with pydicom, only here:
        # tasks.datadict says why)
        from pydicom.charset import encode_string

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return encode_string(text, codecs)
    except (UnicodeError, UserWarning):
        terms = "\\".join(charset)
        raise ProfileError(
            f"{what}: {text!r} cannot be encoded in the file's Specific Character Set {terms}"
        ) from None


# --------------------------------------------------------------------------- per file


class _New(NamedTuple):
    """A new value for a top-level element: VR label and unpadded value bytes."""

    vr: str
    value: bytes


_Current = Element | _New


class _DumbEditor:
    """The operations applied, in order, to an in-memory view of one file's top level."""

    def __init__(self, df: DicomFile, force: bool):
        self.df = df
        self.force = force
        self.originals = {el.tag: el for el in df.elements}
        self.changes: dict[int, _New | None] = {}  # None: removed
        self.notes: list[str] = []

    # ---- the current state

    def get(self, tag: int) -> _Current | None:
        if tag in self.changes:
            return self.changes[tag]
        return self.originals.get(tag)

    def raw(self, item: _Current) -> bytes | None:
        if isinstance(item, _New):
            return item.value
        if item.undefined:
            return None
        return item.value(self.df.body)

    def text(self, tag: int) -> str | None:
        item = self.get(tag)
        raw = None if item is None else self.raw(item)
        return None if raw is None else raw.decode("latin-1").strip(" \0")

    def present_in(self, low: int, high: int) -> list[int]:
        """Current tags in ``[low, high]``."""
        tags = {tag for tag in self.originals if low <= tag <= high}
        tags.update(tag for tag in self.changes if low <= tag <= high)
        return sorted(tag for tag in tags if self.get(tag) is not None)

    def charset(self) -> list[str]:
        text = self.text(SPECIFIC_CHARACTER_SET)
        if not text:
            return [""]
        terms = [term.strip(" ") for term in text.split("\\")]
        return terms

    # ---- private blocks

    def find_block(self, spec: TagSpec) -> int | None:
        assert spec.creator is not None
        wanted = spec.creator.casefold()
        for tag in self.present_in((spec.group << 16) | 0x10, (spec.group << 16) | 0xFF):
            text = self.text(tag)
            if text is not None and text.casefold() == wanted:
                return tag & 0xFF
        return None

    def reserve_block(self, spec: TagSpec) -> int:
        """First (gggg,00xx) slot free, with no orphaned element in (gggg,xx00-xxFF)."""
        base = spec.group << 16
        used = set(self.present_in(base | 0x10, base | 0xFFFF))
        for block in range(0x10, 0x100):
            if base | block in used:
                continue
            if any(base | (block << 8) <= tag <= base | (block << 8) | 0xFF for tag in used):
                continue
            return block
        raise ProfileError(f"no free private block left in group {spec.group:04X} "
                           f"for creator {spec.creator!r}")

    def creator_of(self, tag: int) -> str | None:
        """The creator owning a private data element's block, if any."""
        if not tag >> 16 & 1 or tag & 0xFFFF < 0x1000:
            return None
        return self.text((tag & 0xFFFF0000) | (tag >> 8 & 0xFF))

    def guard_creator(self, op: DumbOp, tag: int, new_text: str | None) -> None:
        """Refuse to orphan a block by changing its Private Creator (unless forced)."""
        if self.force or not tag >> 16 & 1 or not 0x10 <= tag & 0xFFFF <= 0xFF:
            return
        old = self.text(tag)
        if old is not None and new_text is not None and old.casefold() == new_text.casefold():
            return
        block = (tag & 0xFFFF0000) | (tag & 0xFF) << 8
        owned = self.present_in(block, block | 0xFF)
        if owned:
            raise ProfileError(
                f"{op}: {tag_str(tag)} is the Private Creator {old!r} of {len(owned)} "
                f"element(s) ({tag_str(owned[0])}..{tag_str(owned[-1])}); changing it would "
                "orphan them (gdcmanon does so silently). Remove them first, or use --force"
            )

    # ---- VRs

    def creation_vr(self, tag: int, creator: str | None) -> str:
        if tag >> 16 & 1:
            if 0x10 <= tag & 0xFFFF <= 0xFF:
                return "LO"
            vr, _ = _private_entry(tag >> 16, tag & 0xFF, creator)
            return self.resolve(vr) if vr else "UN"
        entry = _public_entry(tag)
        assert entry is not None  # checked by parse_dumb_ops
        return self.resolve(entry[0])

    def resolve(self, vr: str) -> str:
        """One VR for a dictionary's ``US or SS`` / ``OB or OW`` (PS3.5 A.1, 8.1.2)."""
        if " or " not in vr:
            return vr
        choices = vr.split(" or ")
        if "SS" in choices:
            signed = self.get(PIXEL_REPRESENTATION)
            raw = None if signed is None else self.raw(signed)
            if raw and len(raw) == 2 and struct.unpack(self.df.enc.endian + "H", raw)[0] == 1:
                return "SS"
        return choices[0]

    def value_vr(self, tag: int, item: _Current | None, creator: str | None
                 ) -> tuple[str, str | None]:
        """The VR (and VM) a new value of ``tag`` is checked and encoded with."""
        label = None if item is None else item.vr
        vm: str | None = None
        dictionary_vr: str | None = None
        if tag >> 16 & 1:
            if 0x10 <= tag & 0xFFFF <= 0xFF:
                dictionary_vr, vm = "LO", "1"
            else:
                dictionary_vr, vm = _private_entry(tag >> 16, tag & 0xFF, creator)
        else:
            entry = _public_entry(tag)
            if entry is not None:
                dictionary_vr, vm = entry
        explicit_label = label is not None and not self.df.enc.implicit and label != "UN"
        if explicit_label:
            assert label is not None
            return label, vm
        if dictionary_vr is not None:
            return self.resolve(dictionary_vr), vm
        return label or "UN", vm

    # ---- operations

    def apply(self, op: DumbOp) -> None:
        spec = op.tag
        creator: str | None
        if spec.private:
            assert spec.creator is not None
            block = self.find_block(spec)
            if block is None:
                if op.kind in (DumbKind.CLEAR, DumbKind.REMOVE):
                    return
                block = self.reserve_block(spec)
                creator_tag = (spec.group << 16) | block
                self.changes[creator_tag] = _New("LO", _encode_text(
                    "LO", spec.creator, self.charset(), str(op)))
            tag = (spec.group << 16) | (block << 8) | spec.element
            creator = self.text((spec.group << 16) | block)
        else:
            tag = spec.tag
            creator = self.creator_of(tag)
        item = self.get(tag)
        if op.kind is DumbKind.REMOVE:
            if item is not None:
                self.guard_creator(op, tag, None)
                self.note_type1(op.kind, tag)
                self.changes[tag] = None
            return
        if op.kind is DumbKind.CLEAR and item is None:
            return
        if item is None and tag >> 16 & 1 and not spec.private and tag & 0xFFFF >= 0x1000:
            raise ProfileError(f"{op}: {tag_str(tag)} is absent; to create a private "
                               "attribute name its creator: g,e,CREATOR")
        if op.kind is DumbKind.REPLACE:
            self.replace(op, tag, item, creator)
        else:
            self.empty(op, tag, item, creator)

    def empty(self, op: DumbOp, tag: int, item: _Current | None, creator: str | None) -> None:
        if item is None:
            self.changes[tag] = _New(self.creation_vr(tag, creator), b"")
        else:
            if isinstance(item, Element) and item.length == 0:
                return  # already empty: keep its bytes
            if isinstance(item, _New) and item.value == b"":
                return
            self.guard_creator(op, tag, "")
            self.changes[tag] = _New(item.vr, b"")
        self.note_type1(op.kind, tag)

    def replace(self, op: DumbOp, tag: int, item: _Current | None, creator: str | None) -> None:
        assert op.value is not None
        if item is not None and (item.vr == "SQ" or (isinstance(item, Element)
                                                      and item.items is not None)):
            _check_replace_vr(op, "SQ")
        vr, vm = self.value_vr(tag, item, creator)
        _check_replace_vr(op, vr)
        value = encode_value(vr, op.value, vm, self.charset(), str(op),
                             little=self.df.enc.little)
        label = item.vr if item is not None else vr
        short = not self.df.enc.implicit and label.encode() not in LONG_VRS
        if short and len(value) + len(value) % 2 > 0xFFFF:
            raise ProfileError(f"{op}: the value is too long for {label} (at most 65534 bytes)")
        self.guard_creator(op, tag, op.value.strip(" "))
        self.changes[tag] = _New(label, value)
        if not value:
            self.note_type1(op.kind, tag)

    def note_type1(self, kind: DumbKind, tag: int) -> None:
        if tag in TYPE1 and not self.force:
            self.notes.append(_type1_message(kind, tag))

    # ---- output

    def plan(self) -> EditPlan:
        plan = EditPlan()
        enc = self.df.enc
        for tag, new in sorted(self.changes.items()):
            original = self.originals.get(tag)
            encoded = b"" if new is None else encode_element(tag, new.vr, new.value, enc)
            if original is not None:
                plan.set(original, encoded, [])
            elif new is not None:
                plan.insert[tag] = encoded
        return plan

    def meta(self) -> bytes:
        """The file meta with (0002,0002)/(0002,0003) following what changed in the data set."""
        df = self.df
        plan = EditPlan()
        for data_tag, meta_tag in META_MIRRORS.items():
            if data_tag not in self.changes or not df.meta:
                continue
            new = self.changes[data_tag]
            value = b"" if new is None else new.value
            encoded = encode_element(meta_tag, "UI", value, EXPLICIT_LE_ENC)
            element = df.meta_element(meta_tag)
            if element is None:
                plan.insert[meta_tag] = encoded
            elif df.meta_bytes[element.start:element.end] != encoded:
                plan.set(element, encoded, [])
        if plan.empty:
            return df.meta_bytes
        return render(df.meta_bytes, df.meta, plan, EXPLICIT_LE_ENC)


def dumb_edit_bytes(
    data: bytes, settings: DumbSettings, warn: Callable[[str], None] | None = None
) -> bytes:
    """Apply the dumb-mode operations to one file held in memory; returns the new bytes.

    Raises ProfileError (and writes nothing) when any operation cannot be done.  Warnings
    (Type 1 attributes emptied or removed) go to ``warn``, or to :mod:`warnings` when it
    is None, once every operation has succeeded.
    """
    return b"".join(_dumb_parts(data, settings, warn))


def _dumb_parts(data: bytes, settings: DumbSettings, warn: Callable[[str], None] | None
                ) -> list[Chunk]:
    """:func:`dumb_edit_bytes` as the pieces of the new file (large untouched runs as views
    of ``data``: the writer takes them as they are, not joined into one more copy)."""
    df = read_dicom(data)
    plan, meta, notes = _edited(df, settings)
    _warn(notes, warn)
    if plan.empty and meta is df.meta_bytes:
        return [data]
    return file_pieces(df, df.raw_prefix, meta,
                       render_parts(df.body, df.elements, plan, df.enc))


def dumb_edit_split(fd: int, size: int, settings: DumbSettings,
                    warn: Callable[[str], None] | None = None
                    ) -> list[Piece] | WholeFile | None:
    """:func:`dumb_edit_bytes` of a large file open at ``fd``, its pixel data left in the
    file for the writer to copy (``tasks.pixeltail``); None (or the file's bytes, when
    already read) when it does not split, or when an operation names Pixel Data (it would
    act on the stand-in's empty value): edit it whole."""
    if any(not op.tag.private and op.tag.tag == PIXEL_DATA for op in settings.ops):
        return None
    notes: list[str] = []

    def edited(df: DicomFile, stand_in: tuple[int, bytes]) -> list[Chunk] | None:
        plan, meta, found = _edited(df, settings)
        if stand_in[0] in plan.replace:
            return None
        plan.replace[stand_in[0]] = stand_in[1]
        notes.extend(found)
        return [df.raw_prefix, meta, *render_parts(df.body, df.elements, plan, df.enc),
                df.trailer]

    pieces = split_rendered(fd, size, edited)
    if isinstance(pieces, list):
        _warn(notes, warn)
    return pieces


def _edited(df: DicomFile, settings: DumbSettings) -> tuple[EditPlan, bytes, list[str]]:
    """Every operation applied to ``df`` in memory: the body's edit plan, the file meta,
    and the warnings to give once the file is written."""
    editor = _DumbEditor(df, settings.force)
    for op in settings.ops:
        editor.apply(op)
    return editor.plan(), editor.meta(), editor.notes


def _warn(notes: list[str], warn: Callable[[str], None] | None) -> None:
    for note in notes:
        if warn is None:
            warnings.warn(note, DumbModeWarning, stacklevel=4)
        else:
            warn(note)


class DumbModeWarning(UserWarning):
    """An edit that leaves an invalid file (a Type 1 attribute emptied or removed)."""


class _DumbEditFields(NamedTuple):
    settings: DumbSettings
    warn: Callable[[str], None] | None = None


class DumbEdit(_DumbEditFields, Unrecorded):
    """The per-file dumb-mode operation the pipeline ships to workers.

    ``warn`` must be picklable (a module-level function) when shipped to workers.
    """

    __slots__ = ()

    def __call__(self, src: Path | str, dst: Path | str) -> int | Written:
        return write_staged(self.prepare(src), dst)

    def prepare(self, src: Path | str) -> Staged:
        return stage(src, lambda data: _dumb_parts(data, self.settings, self.warn),
                     lambda fd, size: dumb_edit_split(fd, size, self.settings, self.warn),
                     SPLIT_FROM)


#: The manpage's "Irreversible Anonymization" second step: drop the encrypted originals and
#: the de-identification markers from a reversibly de-identified file.
IRREVERSIBLE_OPS: tuple[DumbOp, ...] = parse_dumb_ops([], [], ["400,500", "12,62", "12,63"], [])
