"""PS3.6 look-ups without pydicom: a public attribute's VR and VM, a registered UID, the tag
of a keyword; and the Python codec of a Specific Character Set term (PS3.3 C.12.1.1.2).

Why not pydicom's own: importing any part of pydicom imports the package, its configuration
and its pixel handlers with numpy, ~0.2 s of CPU in every process that asks once (an
implicit VR file's elements, a UID under the DICOM root, the VR of a replaced attribute).
The data is pydicom's, copied by ``scripts/gen_datadict_table.py`` into
``tasks/_datadict_table.py``; ``tests/tasks/test_datadict.py`` keeps the two equal, and
these functions answer as pydicom's ``get_entry`` and ``UID_dictionary`` do.
"""

from __future__ import annotations

from tasks._datadict_table import CHARSETS, ENTRIES, REPEATERS, UIDS


def _mask(pattern: str) -> tuple[int, int]:
    """(the bits a repeating-group mask such as ``60xx3000`` fixes, which bits those are)."""
    value = int(pattern.replace("x", "0"), 16)
    fixed = int("".join("0" if digit == "x" else "F" for digit in pattern), 16)
    return value, fixed


#: the repeating groups' masks, in the dictionary's order (the first that matches answers)
_MASKS = tuple((*_mask(pattern), entry) for pattern, entry in REPEATERS.items())


def own_entry(tag: int) -> tuple[str, str] | None:
    """(VR, VM) of the attribute's own entry in the data dictionary (no repeating group)."""
    return ENTRIES.get(tag)


def public_entry(tag: int) -> tuple[str, str] | None:
    """(VR, VM) of a public attribute: its own entry, else that of the first repeating
    group whose mask it matches (``50xx0005``, ``60xx3000``); None when the dictionary has
    neither, and for a private tag."""
    entry = ENTRIES.get(tag)
    if entry is not None or tag & 0x10000:
        return entry
    for value, fixed, repeated in _MASKS:
        if (tag ^ value) & fixed == 0:
            return repeated
    return None


def repeater(mask: str) -> tuple[str, str] | None:
    """(VR, VM) of the repeating-group entry named by ``mask`` (``60xx3000``), or None."""
    return REPEATERS.get(mask)


def registered_uid(uid: str) -> tuple[str, str] | None:
    """(name, type) of a UID PS3.6 Annex A registers (``CT Image Storage``, ``SOP
    Class``), or None."""
    return UIDS.get(uid)


def charset_codec(term: str) -> str | None:
    """The Python codec of a Specific Character Set term (``ISO_IR 100``: ``latin_1``), as
    pydicom maps them, or None for a term it does not know."""
    return CHARSETS.get(term)


def tag_for_keyword(keyword: str) -> int | None:
    """The tag of a PS3.6 keyword (``PatientName``: 0x00100010), or None."""
    from tasks._keyword_table import KEYWORDS  # 5,000 keywords: only when one is asked

    return KEYWORDS.get(keyword)


def keywords() -> list[str]:
    """Every PS3.6 keyword (for a "did you mean" of a mistyped one)."""
    from tasks._keyword_table import KEYWORDS

    return list(KEYWORDS)
