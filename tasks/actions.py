"""Replacement values per VR: dummies (D), clean rules (C) and date shifting (PS3.15 E.1-1a).

Rules as data: the VR table (``tasks.vr``) gives each VR its fixed dummy and the name of its
clean rule; :data:`CLEAN_RULES` maps those names to the rules.  Every value derived from an original comes from HMAC-SHA256 under the project
secret (``tasks.uids``), so the same original gives the same replacement on every worker.

Clean (C) rules, conservative by design:

* DA, DT - shifted by the patient's offset (whole days, derived from the secret and the
  original Patient ID), so intervals within a patient are kept; unparseable -> Basic code.
* TM - kept: the offset is whole days, so the time of day is not moved.
* AE - a consistent pseudonym of the AE title.
* Text (LO, SH, ST, LT, UT, UC, CS, PN) - kept when the profile's ``clean_allow`` lists the
  value for that attribute (or ``"*"``), otherwise emptied (a dummy if the attribute is
  Type 1 where it sits).
* SQ - kept; every attribute in its items gets its own row's action.
* Curve and overlay data (Clean Graphics) - kept: a bitmap cannot be inspected, like pixel
  data; the user who enables the option takes responsibility, as with ``--allow-burned-in``.
* Any other VR - the row's Basic Profile code applies (``None`` from :func:`clean_value`).
"""

from __future__ import annotations

import datetime as _dt
import hmac
from collections.abc import Callable, Mapping

from tasks.uids import pseudonym
from tasks.vr import BINARY_VRS, FIXED_DUMMIES, IDENTIFYING_TEXT_VRS, VRS

#: Private coding scheme of the dummy code items (PS3.16 8.2: "99" prefix).
DUMMY_SCHEME = b"99ANONPIPE"
DUMMY_MEANING = b"de-identified"
#: what the pseudonyms Action D writes for names, IDs and codes start with
DUMMY_PREFIX = "ANON"
#: Action D's value for a VR without a rule of its own
DUMMY_TEXT = b"ANONYMIZED"
#: every fixed word Action D writes where a name, an ID, free text or a date stood, upper
#: case: the audit of the outputs never reports them as leaks
DUMMY_WORDS = frozenset(value.upper() for value in (
    *(row.dummy for row in VRS.values() if row.dummy and row.name in IDENTIFYING_TEXT_VRS),
    DUMMY_TEXT, DUMMY_PREFIX.encode(), DUMMY_MEANING))
#: Largest shift (days) of the Retain Longitudinal Modified Dates option; never 0.
MAX_OFFSET_DAYS = 3652

KEEP = None  # a clean rule's answer: the value stays as it is


def dummy_value(secret: bytes, vr: str, original: bytes) -> bytes:
    """A valid non-empty value for ``vr``, consistent per original value (Action D)."""
    key = original.rstrip(b"\0 ")
    if vr == "PN":
        return f"{DUMMY_PREFIX}^{pseudonym(secret, 'pn', key, 10)}".encode()
    if vr in ("LO", "UC", "LT", "ST", "UT"):
        return f"{DUMMY_PREFIX}{pseudonym(secret, 'id', key, 12)}".encode()
    if vr in ("SH", "CS", "AE"):
        return f"{DUMMY_PREFIX}{pseudonym(secret, 'id', key, 12)}".encode()[:16]
    if vr in BINARY_VRS:
        return b"\0" * max(len(original), VRS[vr].width or 2)
    return FIXED_DUMMIES.get(vr, DUMMY_TEXT)


def code_value_pseudonym(secret: bytes, code_value: bytes) -> bytes:
    """Code Value of a dummy code item: consistent per original code (SH, 16 chars)."""
    return f"{DUMMY_PREFIX}{pseudonym(secret, 'code', code_value.rstrip(b' '), 12)}".encode()


def date_offset_days(secret: bytes, patient_id: bytes) -> int:
    """The patient's date shift: a negative whole number of days, 1..MAX_OFFSET_DAYS."""
    digest = hmac.digest(secret, b"date-offset\0" + patient_id.rstrip(b"\0 "), "sha256")
    return -(1 + int.from_bytes(digest[:8], "big") % MAX_OFFSET_DAYS)


def _shift_each(value: bytes, shift: Callable[[bytes], bytes | None]) -> bytes | None:
    """Apply ``shift`` to every non-empty value of a multi-valued DA/DT; None if one fails."""
    out: list[bytes] = []
    for part in value.rstrip(b"\0 ").split(b"\\"):
        part = part.strip()
        shifted = shift(part) if part else part
        if shifted is None:
            return None
        out.append(shifted)
    return b"\\".join(out)


def shift_date(value: bytes, days: int) -> bytes | None:
    """Shift every DA value of a (possibly multi-valued) DA; None if one is not YYYYMMDD."""
    return _shift_each(value, lambda part: _shift_yyyymmdd(part, days))


def shift_datetime(value: bytes, days: int) -> bytes | None:
    """Shift the date part of each DT value (time and offset kept); None if too short."""

    def shift(part: bytes) -> bytes | None:
        head = _shift_yyyymmdd(part[:8], days)
        return None if head is None else head + part[8:]

    return _shift_each(value, shift)


def _shift_yyyymmdd(text: bytes, days: int) -> bytes | None:
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        day = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        return (day + _dt.timedelta(days=days)).strftime("%Y%m%d").encode()
    except (ValueError, OverflowError):
        return None


class CleanContext:
    """What a clean rule may need: the secret, the date offset, the allow-list."""

    __slots__ = ("allow", "offset", "secret")

    def __init__(self, secret: bytes, offset: Callable[[], int],
                 allow: Mapping[int, frozenset[bytes]] | None):
        self.secret = secret
        self.offset = offset
        self.allow = allow or {}


#: Sentinel: the row's Basic Profile code applies instead.
FALLBACK = object()


def _clean_date(ctx: CleanContext, tag: int, vr: str, value: bytes, type_: str | None):
    shifted = shift_date(value, ctx.offset())
    return FALLBACK if shifted is None else shifted


def _clean_datetime(ctx: CleanContext, tag: int, vr: str, value: bytes, type_: str | None):
    shifted = shift_datetime(value, ctx.offset())
    return FALLBACK if shifted is None else shifted


def _clean_time(ctx: CleanContext, tag: int, vr: str, value: bytes, type_: str | None):
    return KEEP


def _clean_ae(ctx: CleanContext, tag: int, vr: str, value: bytes, type_: str | None):
    return dummy_value(ctx.secret, "AE", value)


def _clean_text(ctx: CleanContext, tag: int, vr: str, value: bytes, type_: str | None):
    stripped = value.rstrip(b"\0 ")
    for key in (tag, 0):
        allowed = ctx.allow.get(key)
        if allowed is not None and stripped in allowed:
            return KEEP
    if type_ is not None and type_.startswith("1"):
        return dummy_value(ctx.secret, vr, value)
    return b""


CleanRule = Callable[[CleanContext, int, str, bytes, "str | None"], object]
_CLEAN_BY_NAME: dict[str, CleanRule] = {
    "date": _clean_date, "datetime": _clean_datetime, "time": _clean_time, "ae": _clean_ae,
    "text": _clean_text,
}
#: VR -> its clean rule (the ``clean`` column of the VR table)
CLEAN_RULES: dict[str, CleanRule] = {name: _CLEAN_BY_NAME[row.clean]
                                     for name, row in VRS.items() if row.clean}


def clean_value(ctx: CleanContext, tag: int, vr: str, value: bytes, type_: str | None) -> object:
    """New value bytes, :data:`KEEP` (None) or :data:`FALLBACK` for Action C."""
    rule = CLEAN_RULES.get(vr)
    if rule is None:
        return FALLBACK
    return rule(ctx, tag, vr, value, type_)
