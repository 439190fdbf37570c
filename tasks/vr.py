"""Value Representations (PS3.5 6.2) as the de-identifier sees them: one row per VR.

Rules as data: each :class:`VR` row says how wide a value is, whether it is text or binary,
the fixed dummy of Action D (when the dummy does not derive from the original, see
``tasks.actions``), which clean rule Action C uses, and what happens to an attribute PS3.15
Table E.1-1 does not list (:data:`UNLISTED`), which is the byte-range engine's answer to
"why is this byte safe" for everything the table does not name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class Unlisted:
    """What a table-based profile does with a value of an attribute Table E.1-1 does not
    list (or that sits where no row applies), by the VR of the element.

    KEEP  - a number, a code string, a time or an age: it names no one (kept by every profile).
    UID   - an instance UID unless registered in PS3.6 Annex A: replaced (``tasks.uids``).
    NAME  - a person's name: never kept verbatim, a consistent pseudonym (Action D).
    DATE  - a date: never kept verbatim, the run's date policy (shifted, kept with the Full
            Dates option, else removed/emptied/dummy by Type).
    TEXT  - free text: kept by ``basic`` (PS3.15 E.1.1 keeps what the table does not list),
            removed/emptied by Type by a profile that keeps only what it knows is safe.
    BULK  - opaque bytes (UN, OB, OW...): like TEXT.
    """

    KEEP = "keep"
    UID = "uid"
    NAME = "name"
    DATE = "date"
    TEXT = "text"
    BULK = "bulk"


@dataclass(frozen=True, slots=True)
class VR:
    """One Value Representation (PS3.5 Table 6.2-1)."""

    name: str
    #: maximum length of one value in characters (text), or the item width in bytes
    #: (binary numbers); 0 when unbounded
    width: int
    binary: bool
    #: fixed dummy for Action D; None: derived from the original (tasks.actions.dummy_value)
    dummy: bytes | None
    #: clean rule of Action C (tasks.actions.CLEAN_RULES), "" for the row's Basic code
    clean: str
    #: what happens to an attribute Table E.1-1 does not list (see :class:`Unlisted`)
    unlisted: str
    #: characters a value may hold (PS3.5 6.2), for VRs with a restricted repertoire
    pattern: str = ""


_ROWS = (
    #  name  width binary dummy                     clean       unlisted         pattern
    VR("AE", 16, False, None, "ae", Unlisted.TEXT),
    VR("AS", 4, False, b"000D", "", Unlisted.KEEP, r"[0-9]{3}[DWMY]"),
    VR("AT", 4, True, None, "", Unlisted.KEEP),
    VR("CS", 16, False, None, "text", Unlisted.KEEP, r"[A-Z0-9_ ]*"),
    VR("DA", 8, False, b"19000101", "date", Unlisted.DATE, r"[0-9]{8}(-[0-9]{0,8})?|-[0-9]{8}"),
    VR("DS", 16, False, b"0", "", Unlisted.KEEP, r"[0-9+\-.Ee ]*"),
    VR("DT", 26, False, b"19000101000000", "datetime", Unlisted.DATE, r"[0-9.+\- ]*"),
    VR("FL", 4, True, None, "", Unlisted.KEEP),
    VR("FD", 8, True, None, "", Unlisted.KEEP),
    VR("IS", 12, False, b"0", "", Unlisted.KEEP, r"[0-9+\- ]*"),
    VR("LO", 64, False, None, "text", Unlisted.TEXT),
    VR("LT", 10240, False, None, "text", Unlisted.TEXT),
    VR("OB", 0, True, None, "", Unlisted.BULK),
    VR("OD", 8, True, None, "", Unlisted.BULK),
    VR("OF", 4, True, None, "", Unlisted.BULK),
    VR("OL", 4, True, None, "", Unlisted.BULK),
    VR("OV", 8, True, None, "", Unlisted.BULK),
    VR("OW", 2, True, None, "", Unlisted.BULK),
    VR("PN", 64, False, None, "text", Unlisted.NAME),
    VR("SH", 16, False, None, "text", Unlisted.TEXT),
    VR("SL", 4, True, None, "", Unlisted.KEEP),
    VR("SQ", 0, False, None, "", Unlisted.KEEP),  # its items are walked
    VR("SS", 2, True, None, "", Unlisted.KEEP),
    VR("ST", 1024, False, None, "text", Unlisted.TEXT),
    VR("SV", 8, True, None, "", Unlisted.KEEP),
    VR("TM", 14, False, b"000000", "time", Unlisted.KEEP, r"[0-9.: ]*"),
    VR("UC", 0, False, None, "text", Unlisted.TEXT),
    VR("UI", 64, False, None, "", Unlisted.UID, r"[0-9.]*"),
    VR("UL", 4, True, None, "", Unlisted.KEEP),
    VR("UN", 0, True, None, "", Unlisted.BULK),
    VR("UR", 0, False, b"urn:anonpipe:dummy", "", Unlisted.TEXT),
    VR("US", 2, True, None, "", Unlisted.KEEP),
    VR("UT", 0, False, None, "text", Unlisted.TEXT),
    VR("UV", 8, True, None, "", Unlisted.KEEP),
)

#: every VR by name
VRS: dict[str, VR] = {row.name: row for row in _ROWS}
BINARY_VRS = frozenset(row.name for row in _ROWS if row.binary)
FIXED_DUMMIES: dict[str, bytes] = {row.name: row.dummy for row in _ROWS if row.dummy is not None}
#: VRs whose clean rule is the free-text one (kept when allow-listed, else emptied)
TEXT_VRS = frozenset(row.name for row in _ROWS if row.clean == "text")
#: free text (PS3.5 6.2) a profile keeping only what it knows is safe removes
FREE_TEXT_VRS = frozenset(row.name for row in _ROWS if row.unlisted == Unlisted.TEXT)
#: VR -> what happens to an unlisted attribute of that VR (KEEP rows left out: the
#: engine's per-element lookup misses for them, which is its fast path)
UNLISTED: dict[str, str] = {row.name: row.unlisted for row in _ROWS
                            if row.unlisted != Unlisted.KEEP}
_PATTERNS = {row.name: re.compile(row.pattern.encode()) for row in _ROWS if row.pattern}


def conforms(vr: str, value: bytes) -> bool:
    """Whether ``value`` could be a value of ``vr``: each value's length and characters
    (text VRs), or a whole number of items (binary numbers).  A value that does not conform
    is not what its VR says it is (say, a name and a birth date in a DS slot)."""
    row = VRS.get(vr)
    if row is None:
        return False
    if row.binary:
        return row.width == 0 or row.name in ("OB", "UN") or len(value) % row.width == 0
    text = value.rstrip(b"\0 ")
    pattern = _PATTERNS.get(vr)
    parts = [text] if vr in ("LT", "ST", "UT", "UR") else text.split(b"\\")
    for part in parts:
        if row.width and len(part) > row.width:
            return False
        if pattern is not None and not pattern.fullmatch(part):
            return False
    return True
