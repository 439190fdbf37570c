"""PS3.3 attribute Types (1, 1C, 2, 2C, 3) for the IODs anonpipe knows.

The conditional codes of PS3.15 Table E.1-1 (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) depend on the
Type of the attribute where it sits: at top level the Type in the file's IOD, inside a
sequence item the Type the parent sequence's macro gives it.  ``tasks/data/iod_types.json``
is generated from highdicom's machine-readable PS3.3 (``make tables``) and holds only the
Table E.1-1 attributes; when the Type is unknown the caller picks the code that is valid
for any Type (see :func:`tasks.profile.resolve_code`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Type ranks: a lower rank is stricter.
RANK = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    # beside this module (importlib.resources would import zipfile: ~3 ms at every start)
    text = (Path(__file__).parent / "data" / "iod_types.json").read_text(encoding="utf-8")
    return json.loads(text)


def iod_for_sop_class(sop_class: str | None) -> str | None:
    """The IOD key (e.g. ``ct-image``) of a SOP Class UID, None when unknown."""
    if not sop_class:
        return None
    return _data()["sop_classes"].get(sop_class)


@lru_cache(maxsize=256)
def top_level_types(iod: str | None) -> dict[int, str]:
    """Tag -> Type of the Table E.1-1 attributes at the top level of ``iod``."""
    if iod is None:
        return {}
    data = _data()
    types: dict[int, str] = {}
    for module in data["iods"].get(iod, ()):
        for key, kind in data["modules"][module].items():
            tag = int(key, 16)
            old = types.get(tag)
            if old is None or RANK[kind] < RANK[old]:
                types[tag] = kind
    return types


@lru_cache(maxsize=1)
def nested_types() -> dict[int, str]:
    """``parent << 32 | tag`` -> Type inside items of the parent sequence (any IOD)."""
    return {int(parent, 16) << 32 | int(tag, 16): kind
            for parent, _, tag in (key.partition("/") for key in _data()["nested"])
            for kind in (_data()["nested"][f"{parent}/{tag}"],)}


def attribute_type(iod: str | None, parent: int, tag: int) -> str | None:
    """The Type of ``tag`` at top level (``parent`` 0) of ``iod`` or inside ``parent``."""
    if parent == 0:
        return top_level_types(iod).get(tag)
    return nested_types().get(parent << 32 | tag)


def provenance() -> dict[str, str]:
    return dict(_data()["provenance"])
