"""Value Representations (PS3.5 6.2) as the de-identifier sees them: one row per VR.

Rules as data: each :class:`VR` row says how wide a value is, whether it is text or binary,
the fixed dummy of Action D (when the dummy does not derive from the original, see
``tasks.actions``), which clean rule Action C uses, and what happens to an attribute PS3.15
Table E.1-1 does not list (:data:`UNLISTED`), which is the byte-range engine's answer to
"why is this byte safe" for everything the table does not name.  The same row gives the
encoding facts the reader, the writers and the checks need: the explicit VR header's form,
the byte-swap unit, whether the Specific Character Set applies, whether a backslash
separates values.  Every VR set of the code is derived from this table.
"""

from __future__ import annotations

import re
from typing import NamedTuple


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


class VR(NamedTuple):
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
    #: explicit VR header with 2 reserved bytes and a 4-byte length (PS3.5 7.1.2)
    long: bool = False
    #: byte-swap unit between little and big endian (PS3.5 7.3); 0: bytes or text
    swap: int = 0
    #: text encoded with the Specific Character Set (PS3.5 6.1.2.3)
    charset: bool = False
    #: one value even when it holds a backslash (PS3.5 6.4)
    single: bool = False


_ROWS = (
    #  name  width binary dummy                     clean       unlisted         pattern
    VR("AE", 16, False, None, "ae", Unlisted.TEXT),
    VR("AS", 4, False, b"000D", "", Unlisted.KEEP, r"[0-9]{3}[DWMY]"),
    VR("AT", 4, True, None, "", Unlisted.KEEP, swap=2),
    VR("CS", 16, False, None, "text", Unlisted.KEEP, r"[A-Z0-9_ ]*"),
    VR("DA", 8, False, b"19000101", "date", Unlisted.DATE, r"[0-9]{8}(-[0-9]{0,8})?|-[0-9]{8}"),
    VR("DS", 16, False, b"0", "", Unlisted.KEEP, r"[0-9+\-.Ee ]*"),
    VR("DT", 26, False, b"19000101000000", "datetime", Unlisted.DATE, r"[0-9.+\- ]*"),
    VR("FL", 4, True, None, "", Unlisted.KEEP, swap=4),
    VR("FD", 8, True, None, "", Unlisted.KEEP, swap=8),
    VR("IS", 12, False, b"0", "", Unlisted.KEEP, r"[0-9+\- ]*"),
    VR("LO", 64, False, None, "text", Unlisted.TEXT, charset=True),
    VR("LT", 10240, False, None, "text", Unlisted.TEXT, charset=True, single=True),
    VR("OB", 0, True, None, "", Unlisted.BULK, long=True),
    VR("OD", 8, True, None, "", Unlisted.BULK, swap=8, long=True),
    VR("OF", 4, True, None, "", Unlisted.BULK, swap=4, long=True),
    VR("OL", 4, True, None, "", Unlisted.BULK, swap=4, long=True),
    VR("OV", 8, True, None, "", Unlisted.BULK, swap=8, long=True),
    VR("OW", 2, True, None, "", Unlisted.BULK, swap=2, long=True),
    VR("PN", 64, False, None, "text", Unlisted.NAME, charset=True),
    VR("SH", 16, False, None, "text", Unlisted.TEXT, charset=True),
    VR("SL", 4, True, None, "", Unlisted.KEEP, swap=4),
    VR("SQ", 0, False, None, "", Unlisted.KEEP, long=True),  # its items are walked
    VR("SS", 2, True, None, "", Unlisted.KEEP, swap=2),
    VR("ST", 1024, False, None, "text", Unlisted.TEXT, charset=True, single=True),
    VR("SV", 8, True, None, "", Unlisted.KEEP, swap=8, long=True),
    VR("TM", 14, False, b"000000", "time", Unlisted.KEEP, r"[0-9.: ]*"),
    VR("UC", 0, False, None, "text", Unlisted.TEXT, charset=True, long=True),
    VR("UI", 64, False, None, "", Unlisted.UID, r"[0-9.]*"),
    VR("UL", 4, True, None, "", Unlisted.KEEP, swap=4),
    VR("UN", 0, True, None, "", Unlisted.BULK, long=True),
    VR("UR", 0, False, b"urn:anonpipe:dummy", "", Unlisted.TEXT, single=True, long=True),
    VR("US", 2, True, None, "", Unlisted.KEEP, swap=2),
    VR("UT", 0, False, None, "text", Unlisted.TEXT, charset=True, single=True, long=True),
    VR("UV", 8, True, None, "", Unlisted.KEEP, swap=8, long=True),
)

#: every VR by name
VRS: dict[str, VR] = {row.name: row for row in _ROWS}
BINARY_VRS = frozenset(row.name for row in _ROWS if row.binary)
FIXED_DUMMIES: dict[str, bytes] = {row.name: row.dummy for row in _ROWS if row.dummy is not None}
#: VRs whose clean rule is the free-text one (kept when allow-listed, else emptied)
TEXT_VRS = frozenset(row.name for row in _ROWS if row.clean == "text")
#: free text (PS3.5 6.2) a profile keeping only what it knows is safe removes
FREE_TEXT_VRS = frozenset(row.name for row in _ROWS if row.unlisted == Unlisted.TEXT)
#: text that may name a person, a place or a day: names, free text, dates (what an audit
#: of the outputs searches)
IDENTIFYING_TEXT_VRS = frozenset(
    row.name for row in _ROWS
    if not row.binary and row.unlisted in (Unlisted.NAME, Unlisted.TEXT, Unlisted.DATE))
#: VR -> what happens to an unlisted attribute of that VR (KEEP rows left out: the
#: engine's per-element lookup misses for them, which is its fast path)
UNLISTED: dict[str, str] = {row.name: row.unlisted for row in _ROWS
                            if row.unlisted != Unlisted.KEEP}
#: VRs with the long explicit VR header (PS3.5 7.1.2)
LONG_VRS = frozenset(row.name for row in _ROWS if row.long)
#: VR -> byte-swap unit for big endian <-> little endian transcoding (PS3.5 7.3)
SWAP_WIDTH: dict[str, int] = {row.name: row.swap for row in _ROWS if row.swap}
#: VRs whose text is encoded with the Specific Character Set (PS3.5 6.1.2.3)
CHARSET_VRS = frozenset(row.name for row in _ROWS if row.charset)
#: VRs holding one value even when it contains a backslash (PS3.5 6.4)
SINGLE_VALUE_VRS = frozenset(row.name for row in _ROWS if row.single)
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
    parts = [text] if row.single else text.split(b"\\")
    for part in parts:
        if row.width and len(part) > row.width:
            return False
        if pattern is not None and not pattern.fullmatch(part):
            return False
    return True
