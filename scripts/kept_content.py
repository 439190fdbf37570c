"""What a profile costs in kept content: leaf attributes (any depth) an output keeps with
their original tag path and bytes, over pydicom's bundled test files, for each profile.

    .venv/bin/python scripts/kept_content.py [PROFILE ...]     (default: basic strict)
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pydicom
from pydicom.datadict import keyword_for_tag

from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import DicomFile, Element, read_dicom
from tasks.errors import AnonpipeError

Leaf = tuple[tuple[int, ...], bytes]


def leaves(df: DicomFile, elements: list[Element], path: tuple[int, ...] = ()) -> set[Leaf]:
    found: set[Leaf] = set()
    for el in elements:
        here = path + (el.tag,)
        if el.items is not None:
            for i, item in enumerate(el.items):
                found |= leaves(df, item.elements, here + (i,))
        else:
            found.add((here, b"" if el.undefined else el.value(df.body)))
    return found


def main(profiles: list[str]) -> None:
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    kept = dict.fromkeys(profiles, 0)
    total = files = 0
    dropped: collections.Counter[str] = collections.Counter()
    for path in sorted(folder.glob("*.dcm")):
        data = path.read_bytes()
        try:
            source = read_dicom(data)
            original = leaves(source, source.elements)
            outputs = {}
            for name in profiles:
                settings = DeidentifySettings(secret=b"k" * 32, profile=name,
                                              allow_burned_in=True)
                out = read_dicom(deidentify_bytes(data, settings))
                outputs[name] = original & leaves(out, out.elements)
        except AnonpipeError:
            continue  # unreadable, or already de-identified
        files += 1
        total += len(original)
        for name, same in outputs.items():
            kept[name] += len(same)
        for leaf, _value in outputs[profiles[0]] - outputs[profiles[-1]]:
            dropped[keyword_for_tag(leaf[-1]) or f"{leaf[-1]:08X}"] += 1
    print(f"{files} files, {total} leaf attributes")
    for name in profiles:
        print(f"  {name}: {kept[name]} kept with their original bytes")
    print(f"kept by {profiles[0]}, not by {profiles[-1]}:", dict(dropped.most_common()))


if __name__ == "__main__":
    main(sys.argv[1:] or ["basic", "strict"])
