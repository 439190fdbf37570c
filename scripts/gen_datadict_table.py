#!/usr/bin/env python3
"""Generate ``tasks/_datadict_table.py`` and ``tasks/_keyword_table.py``: PS3.6 as data.

What it holds, from pydicom's copy of DICOM PS3.6 (the version installed):

* ``ENTRIES``: the VR and VM of every public attribute of the data dictionary (PS3.6 §6);
* ``REPEATERS``: the same for the repeating groups, by pydicom's mask (``60xx3000``);
* ``UIDS``: the name and type of every registered UID (PS3.6 Annex A);
* ``CHARSETS``: the Python codec of each Specific Character Set term pydicom knows (PS3.3
  C.12.1.1.2), for the values a dumb edit writes;
* ``KEYWORDS`` (``tasks/_keyword_table.py``, loaded only when a keyword is looked up):
  the tag of every keyword (a dumb edit's ``--remove PatientName``, a site profile's
  attribute outside Table E.1-1).

Why a copy: importing any part of pydicom imports the package, its configuration and its
pixel handlers with numpy (~0.2 s of CPU), which a file's de-identification, its
re-identification and a dumb-mode edit would otherwise pay for a dictionary look-up (an
implicit VR file's elements, a registered UID, a replaced attribute's VR).  The test
``tests/tasks/test_datadict.py`` checks the copy against pydicom's, entry by entry, so a
pydicom with another dictionary fails it until ``make tables`` is run again.

Usage: ``python scripts/gen_datadict_table.py`` (``make tables`` runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.charset import python_encoding
from pydicom.datadict import DicomDictionary, RepeatersDictionary, keyword_dict

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tasks" / "_datadict_table.py"
KEYWORD_TARGET = ROOT / "tasks" / "_keyword_table.py"


def render() -> str:
    entries = {tag: (entry[0], entry[1]) for tag, entry in sorted(DicomDictionary.items())}
    repeaters = {mask: (entry[0], entry[1]) for mask, entry in RepeatersDictionary.items()}
    uids = {uid: (entry[0], entry[1]) for uid, entry in sorted(UID_dictionary.items())}
    lines = [
        '"""DICOM PS3.6 (data dictionary and registry of UIDs) as data.  GENERATED FILE.',
        "",
        "Do not edit: run ``make tables`` (scripts/gen_datadict_table.py).",
        "",
        f"Source: pydicom {pydicom.__version__}'s copy of DICOM PS3.6, (c) NEMA.",
        "ENTRIES: tag -> (VR, VM) of the public attributes; REPEATERS: the same for the",
        "repeating groups, by mask (x: any hexadecimal digit), in pydicom's order; UIDS:",
        "registered UID -> (name, type); CHARSETS: Specific Character Set term (PS3.3",
        'C.12.1.1.2) -> Python codec."""',
        "",
        f"PYDICOM = {pydicom.__version__!r}",
        "",
        "ENTRIES: dict[int, tuple[str, str]] = {",
        *(f"    0x{tag:08X}: {value!r}," for tag, value in entries.items()),
        "}",
        "",
        "REPEATERS: dict[str, tuple[str, str]] = {",
        *(f"    {mask!r}: {value!r}," for mask, value in repeaters.items()),
        "}",
        "",
        "UIDS: dict[str, tuple[str, str]] = {",
        *(f"    {uid!r}:\n        {value!r}," for uid, value in uids.items()),
        "}",
        "",
        "CHARSETS: dict[str, str] = {",
        *(f"    {term!r}: {codec!r}," for term, codec in python_encoding.items()),
        "}",
        "",
    ]
    return "\n".join(lines)


def render_keywords() -> str:
    lines = [
        '"""DICOM PS3.6 keywords as data.  GENERATED FILE.',
        "",
        "Do not edit: run ``make tables`` (scripts/gen_datadict_table.py).",
        "",
        f"Source: pydicom {pydicom.__version__}'s copy of DICOM PS3.6, (c) NEMA.",
        'KEYWORDS: keyword -> tag, in pydicom\'s order."""',
        "",
        "KEYWORDS: dict[str, int] = {",
        *(f"    {keyword!r}: 0x{tag:08X}," for keyword, tag in keyword_dict.items()),
        "}",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    for target, text in ((TARGET, render()), (KEYWORD_TARGET, render_keywords())):
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
