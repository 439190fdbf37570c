#!/usr/bin/env python3
"""Generate anonpipe's copy of the PS3.15 / PS3.3 tables the profiles are made of.

Outputs (both committed; regenerate with ``make tables``):

* ``tasks/_profile_table.py`` - PS3.15 Table E.1-1 (every row, Basic Profile code and the ten
  Option columns), Table E.3.10-1 (safe private attributes) and PS3.16 CID 7050, as Python
  literals with a provenance header.
* ``tasks/data/iod_types.json`` - the PS3.3 Type (1, 1C, 2, 2C, 3) of every Table E.1-1
  attribute in every IOD that highdicom's machine-readable copy of PS3.3 describes: top-level
  types per module, nested types per (parent sequence, attribute).  Used to resolve the
  conditional codes X/Z, X/D, Z/D, X/Z/D and X/Z/U*.

Inputs:

* ``--standard DIR``: the three JSON tables described in ``scripts/standard/README.md``
  (default ``scripts/standard``).  The E.1-1 rows are checked against
  the SHA-256 the README records for the source before anything is written.
* ``--highdicom-wheel FILE``: a highdicom wheel (MIT licence); its ``_standard/`` JSON files
  hold PS3.3 as parsed by the innolitics dicom-standard project.  ``make tables`` fetches
  the pinned version with ``pip download``.

Keywords and VRs come from pydicom's data dictionary; the few 2025-2026 attributes it does
not know yet get a VR from ``EXTRA_VRS`` below.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pprint
import re
import sys
import zipfile
from pathlib import Path

from pydicom.datadict import DicomDictionary, keyword_for_tag, tag_for_keyword

ROOT = Path(__file__).resolve().parent.parent
E1_1_SHA256 = "e257bc5e1cfecb3156ad3b871c43e6d73581cba6e80df460f4a4a87694e89442"
SAFE_SHA256 = "7acb26dbab0e3124c02d075cbf8c5510354a20ded9f89ee4765976a905d92f63"
CID7050_SHA256 = "330f85ad9db6d5a9bc00ac989064253961f917c9a63fb8f706467d6d4f9be74b"
HIGHDICOM_VERSION = "0.28.2"

OPTIONS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)
#: option -> CID 7050 code meaning (PS3.16)
OPTION_CODES = {
    "basic": "Basic Application Confidentiality Profile",
    "retain_safe_private": "Retain Safe Private Option",
    "retain_uids": "Retain UIDs Option",
    "retain_device_identity": "Retain Device Identity Option",
    "retain_institution_identity": "Retain Institution Identity Option",
    "retain_patient_characteristics": "Retain Patient Characteristics Option",
    "retain_long_full_dates": "Retain Longitudinal Temporal Information Full Dates Option",
    "retain_long_modified_dates":
        "Retain Longitudinal Temporal Information Modified Dates Option",
    "clean_descriptors": "Clean Descriptors Option",
    "clean_structured_content": "Clean Structured Content Option",
    "clean_graphics": "Clean Graphics Option",
}

#: Attributes of E.1-1 (2026d) that pydicom 3.0.2's dictionary lacks: tag -> (VR, source).
#: "PS3.6" VRs were read from a PS3.6-derived dictionary of another toolkit; "name" VRs are
#: inferred from the attribute name (they only matter for implicit-VR files and test data).
EXTRA_VRS: dict[int, tuple[str, str]] = {
    0x00100011: ("SQ", "name"),  # Person Names to Use Sequence
    0x00100012: ("PN", "name"),  # Name to Use
    0x00100013: ("UT", "name"),  # Name to Use Comment
    0x00100014: ("SQ", "name"),  # Third Person Pronouns Sequence
    0x00100015: ("SQ", "name"),  # Pronoun Code Sequence
    0x00100016: ("UT", "name"),  # Pronoun Comment
    0x00100041: ("SQ", "PS3.6"),  # Gender Identity Sequence
    0x00100042: ("UT", "PS3.6"),  # Sex Parameters for Clinical Use Category Comment
    0x00100043: ("SQ", "PS3.6"),  # Sex Parameters for Clinical Use Category Sequence
    0x00100044: ("SQ", "PS3.6"),  # Gender Identity Code Sequence
    0x00100045: ("UT", "PS3.6"),  # Gender Identity Comment
    0x00100046: ("SQ", "PS3.6"),  # Sex Parameters for Clinical Use Category Code Sequence
    0x00100047: ("UR", "PS3.6"),  # Sex Parameters for Clinical Use Category Reference
    0x00102162: ("UC", "PS3.6"),  # Ethnic Groups
    0x00081301: ("SQ", "name"),  # Principal Diagnosis Code Sequence
    0x00081302: ("SQ", "name"),  # Primary Diagnosis Code Sequence
    0x00081303: ("SQ", "name"),  # Secondary Diagnoses Code Sequence
    0x00081304: ("SQ", "name"),  # Histological Diagnoses Code Sequence
    0x0040A034: ("DT", "name"),  # Effective Start DateTime
    0x0040A035: ("DT", "name"),  # Effective Stop DateTime
    0x0040B034: ("DT", "name"),  # Annotation DateTime
    0x0040B036: ("DT", "name"),  # Segment Definition DateTime
    0x0040B03B: ("LO", "name"),  # Montage Name
    0x0040B03F: ("LO", "name"),  # Montage Channel Label
    0x0040E012: ("UR", "name"),  # Display URI
    0x3004007F: ("LO", "name"),  # Dose Calculation Model Name
}

PATTERNS = {
    "(50xx,xxxx)": "curve",
    "(60xx,3000)": "overlay_data",
    "(60xx,4000)": "overlay_comments",
    "(gggg,eeee) where gggg is odd": "private",
}
TYPE_RANK = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}


def digest(rows: object) -> str:
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_e1_1(rows: list[dict]) -> None:
    """Map back to the source schema and compare with the digest the source recorded."""
    back = {"retain_long_full_dates": "retain_longitudinal_full_dates",
            "retain_long_modified_dates": "retain_longitudinal_modified_dates"}
    source = [{"name": r["name"], "tag": r["tag"], "retired": r["retired"],
               "in_standard_iod": r["in_std_iod"], "basic_profile": r["basic"],
               "options": {back.get(k, k): v for k, v in r["options"].items() if v}}
              for r in rows]
    if digest(source) != E1_1_SHA256:
        sys.exit("ps3.15-e1-1.json does not match the recorded source digest; refusing")


def keyword_from_name(name: str) -> str:
    name = re.sub(r"\(see Note \d+\)", "", name)
    return "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", name))


def e1_1_rows(rows: list[dict]) -> list[tuple]:
    out = []
    for r in rows:
        pattern = PATTERNS.get(r["tag"])
        if pattern is not None:
            tag, keyword, vr = None, pattern, ""
        else:
            m = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", r["tag"])
            if not m:
                sys.exit(f"unexpected tag text {r['tag']!r}")
            tag = int(m.group(1) + m.group(2), 16)
            entry = DicomDictionary.get(tag)
            if entry is not None:
                vr = entry[0].split(" or ")[0]
                keyword = keyword_for_tag(tag) or keyword_from_name(r["name"])
            elif tag in EXTRA_VRS:
                vr = EXTRA_VRS[tag][0]
                keyword = keyword_from_name(r["name"])
            else:
                sys.exit(f"no VR known for {r['tag']} {r['name']}: add it to EXTRA_VRS")
        codes = tuple(r["options"][o] or "" for o in OPTIONS)
        out.append((r["tag"], tag, keyword, r["name"], vr, r["retired"], r["in_std_iod"],
                    r["basic"], codes))
    return out


def safe_private(rows: list[dict]) -> list[tuple]:
    out = []
    for r in rows:
        m = re.fullmatch(r"\(([0-9A-Fa-f]{4}),xx([0-9A-Fa-f]{2})\)", r["tag"])
        if not m:
            sys.exit(f"unexpected safe private tag {r['tag']!r}")
        out.append((int(m.group(1), 16), r["private_creator"], int(m.group(2), 16), r["vr"],
                    r["meaning"]))
    return out


def cid7050(rows: list[dict]) -> dict[str, tuple[str, str, str]]:
    by_meaning = {r["code_meaning"]: r for r in rows}
    out = {}
    for option, meaning in OPTION_CODES.items():
        r = by_meaning[meaning]
        out[option] = (r["code_value"], r["scheme_designator"], r["code_meaning"])
    return out


def iod_types(wheel: Path, tags: set[int]) -> dict:
    """PS3.3 Types of E.1-1 attributes, from highdicom's copy of the standard."""
    with zipfile.ZipFile(wheel) as zf:
        def load(name: str) -> dict:
            return json.loads(zf.read(f"highdicom/_standard/{name}"))
        sop = load("sop_class_iod_map.json")
        iods = load("iod_module_map.json")
        modules = load("module_attribute_map.json")
    top: dict[str, dict[str, str]] = {}
    nested: dict[str, str] = {}
    for module, attributes in sorted(modules.items()):
        types: dict[str, str] = {}
        for a in attributes:
            tag = tag_for_keyword(a["keyword"])
            if tag is None or tag not in tags or a["type"] not in TYPE_RANK:
                continue
            if a["path"]:
                parent = tag_for_keyword(a["path"][-1])
                if parent is None:
                    continue
                key = f"{parent:08X}/{tag:08X}"
                table = nested
            else:
                key = f"{tag:08X}"
                table = types
            old = table.get(key)
            if old is None or TYPE_RANK[a["type"]] < TYPE_RANK[old]:
                table[key] = a["type"]  # strictest wins: the value must stay valid
        if types:
            top[module] = types
    return {
        "sop_classes": dict(sorted(sop.items())),
        "iods": {iod: [m["key"] for m in mods if m["key"] in top]
                 for iod, mods in sorted(iods.items())},
        "modules": top,
        "nested": dict(sorted(nested.items())),
    }


def _row_text(row: tuple) -> str:
    """One ROWS entry with the tag in hex (readable diffs)."""
    tag = "None" if row[1] is None else f"0x{row[1]:08X}"
    return "(" + ", ".join([repr(row[0]), tag, *(repr(v) for v in row[2:])]) + ")"


HEADER = '''"""PS3.15 Table E.1-1, Table E.3.10-1 and PS3.16 CID 7050 as data.  GENERATED FILE.

Do not edit: run ``make tables`` (scripts/gen_profile_table.py).

Provenance (see scripts/standard/README.md for the conversion and cross-checks):
{provenance}
ROWS: (tag text, tag or None for a pattern row, keyword, name, VR, retired,
in standard IOD, Basic Profile code, option codes in OPTIONS order ("" = no code)).
Pattern rows use keyword "curve", "overlay_data", "overlay_comments" or "private".
"""
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standard", type=Path, default=ROOT / "scripts" / "standard")
    parser.add_argument("--highdicom-wheel", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tasks")
    args = parser.parse_args(argv)

    e1_path = args.standard / "ps3.15-e1-1.json"
    safe_path = args.standard / "ps3.15-safe-private.json"
    cid_path = args.standard / "ps3.16-cid7050.json"
    e1 = json.loads(e1_path.read_text())
    safe = json.loads(safe_path.read_text())
    cid = json.loads(cid_path.read_text())
    check_e1_1(e1)
    if digest(safe) != SAFE_SHA256 or digest(cid) != CID7050_SHA256:
        sys.exit("safe private or CID 7050 table does not match the recorded source digest")

    rows = e1_1_rows(e1)
    provenance = {
        "edition": "2026d",
        "e1_1": {"file": e1_path.name, "rows": len(rows), "file_sha256": file_sha256(e1_path),
                 "source_rows_sha256": E1_1_SHA256},
        "safe_private": {"file": safe_path.name, "rows": len(safe),
                         "file_sha256": file_sha256(safe_path), "rows_sha256": SAFE_SHA256},
        "cid7050": {"file": cid_path.name, "rows": len(cid),
                    "file_sha256": file_sha256(cid_path), "rows_sha256": CID7050_SHA256},
        "source": "pymedphys/pymedphys _standard/*.json generated from NEMA's HTML of "
                  "PS3.15/PS3.16 2026d; DICOM PS3.15 2026d, (c) NEMA",
        "keywords_and_vrs": "pydicom 3.0.2 data dictionary, EXTRA_VRS in the generator",
    }
    prov_text = "\n".join(f"    {k}: {v}" for k, v in provenance.items())
    body = [HEADER.format(provenance=prov_text)]
    body.append(f"EDITION = {provenance['edition']!r}\n")
    body.append(f"PROVENANCE = {pprint.pformat(provenance, width=100, sort_dicts=False)}\n")
    body.append(f"OPTIONS = {OPTIONS!r}\n")
    body.append("ROWS = (\n" + "".join(f"    {_row_text(row)},\n" for row in rows) + ")\n")
    body.append("#: (group, private creator, element byte, VR, meaning), Table E.3.10-1\n")
    body.append("SAFE_PRIVATE = (\n" + "".join(
        f"    (0x{r[0]:04X}, {r[1]!r}, 0x{r[2]:02X}, {r[3]!r}, {r[4]!r}),\n"
        for r in safe_private(safe)) + ")\n")
    body.append("#: option (or 'basic') -> (code value, coding scheme designator, code meaning)\n")
    body.append(f"CID7050 = {pprint.pformat(cid7050(cid), width=100, sort_dicts=False)}\n")
    vr_src = {f"{t:08X}": s for t, (_, s) in sorted(EXTRA_VRS.items())}
    body.append(f"EXTRA_VR_SOURCES = {pprint.pformat(vr_src, width=100)}\n")
    (args.out / "_profile_table.py").write_text("\n".join(body))

    tags = {row[1] for row in rows if row[1] is not None}
    types = iod_types(args.highdicom_wheel, tags)
    types = {"provenance": {
        "source": f"highdicom {HIGHDICOM_VERSION} wheel, highdicom/_standard/*.json (MIT), "
                  "PS3.3 as parsed by innolitics/dicom-standard",
        "wheel_sha256": file_sha256(args.highdicom_wheel),
        "content": "PS3.3 Type of each PS3.15 Table E.1-1 attribute: 'modules' top-level per "
                   "module, 'nested' per parent-sequence/attribute (strictest over all "
                   "modules), 'iods' the modules of each IOD, 'sop_classes' SOP Class -> IOD",
        "generator": "scripts/gen_profile_table.py",
    }, **types}
    data = args.out / "data"
    data.mkdir(exist_ok=True)
    (data / "iod_types.json").write_text(json.dumps(types, indent=0, sort_keys=False) + "\n")
    print(f"wrote {args.out / '_profile_table.py'} ({len(rows)} rows, {len(safe)} safe private) "
          f"and {data / 'iod_types.json'} ({len(types['iods'])} IODs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
