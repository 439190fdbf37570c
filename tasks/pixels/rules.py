"""Region rules: rectangles to blank on every frame of files whose header matches.

A rule file is YAML (``configs/pixels/*.yaml``, or a site file a profile names under
``pixel_rules``)::

    rules:
      - name: acme-us-640x480            # shown by --explain and counted in the report
        source: where the coordinates come from
        match:                            # every key must match (header, top level)
          Modality: US                    # text: shell pattern, case-insensitive
          Manufacturer: "ACME*"
          Rows: 480                       # numbers: equal
          Columns: [640, 800]             # a list: any of them
        boxes:                            # [x, y, width, height], pixels, top-left origin
          - [0, 0, 640, 40]

The attributes a rule reads are known when the file loads, so matching costs a few header
look-ups: files no rule names and the burned-in check does not flag take no pixel work.
"""

from __future__ import annotations

import fnmatch
import functools
import struct
from pathlib import Path
from typing import Any, NamedTuple

from tasks import yamlcache
from tasks.builtin import config_dir
from tasks.dicomio import DicomFile
from tasks.errors import ProfileError

RULES_DIR = config_dir("pixels")
#: the attributes device signatures name, so that loading the rules needs no dictionary
#: (pydicom's, with numpy behind it, would load in every worker)
SIGNATURE_KEYWORDS = {
    "ImageType": 0x00080008, "SOPClassUID": 0x00080016, "Modality": 0x00080060,
    "Manufacturer": 0x00080070, "StationName": 0x00081010, "SeriesDescription": 0x0008103E,
    "ManufacturerModelName": 0x00081090, "SoftwareVersions": 0x00181020,
    "SamplesPerPixel": 0x00280002, "PhotometricInterpretation": 0x00280004,
    "NumberOfFrames": 0x00280008, "Rows": 0x00280010, "Columns": 0x00280011,
    "BitsAllocated": 0x00280100, "BurnedInAnnotation": 0x00280301,
}
DEFAULT_RULES = "default"
_NUMERIC_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}

Box = tuple[int, int, int, int]  # x, y, width, height
#: one condition of a signature: an attribute and the values it may have
Condition = tuple[int, tuple[str | int, ...]]


class RegionRule(NamedTuple):
    """One rule: header signature -> rectangles."""

    name: str
    source: str
    match: tuple[Condition, ...]
    boxes: tuple[Box, ...]

    def matches(self, df: DicomFile,
                seen: dict[Condition, bool] | None = None) -> bool:
        """Whether every attribute of the signature has one of its values; ``seen`` keeps
        the conditions already decided for ``df`` (rules share them: most start with the
        same Modality), so a file is read once per condition, not once per rule."""
        for condition in self.match:
            held = seen.get(condition) if seen is not None else None
            if held is None:
                tag, wanted = condition
                value = header_value(df, tag)
                held = value is not None and any(_equal(value, want) for want in wanted)
                if seen is not None:
                    seen[condition] = held
            if not held:
                return False
        return True


def _equal(value: str | int, want: str | int) -> bool:
    if isinstance(want, int):
        try:
            return int(str(value).strip()) == want
        except ValueError:
            return False
    return fnmatch.fnmatchcase(str(value).strip().upper(), want.upper())


def header_value(df: DicomFile, tag: int) -> str | int | None:
    """A top-level value as text, or as a number for binary integer VRs (Rows, Columns)."""
    el = df.top(tag)
    if el is None or el.undefined:
        return None
    raw = el.value(df.body)
    code = _NUMERIC_VRS.get(el.vr)
    if code is None and el.vr == "UN" and el.length == 2 and tag >> 16 == 0x0028:
        code = "H"  # implicit VR files parse without VRs: group 0028 counts are US
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) < size:
            return None
        return int(struct.unpack_from(df.enc.endian + code, raw)[0])
    return raw.rstrip(b"\0 ").decode("latin-1")


def resolve_rule_file(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A rule file by name (``configs/pixels/NAME.yaml``) or path (relative to the profile
    that names it)."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
    else:
        path = RULES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(f"pixel rule file not found: {name_or_path}")
    return path.resolve()


@functools.cache
def load_rules(path: str) -> tuple[RegionRule, ...]:
    """The validated rules of one file (cached per worker)."""
    from tasks.profile import parse_attribute

    try:
        data = yamlcache.load(Path(path), shipped=Path(path).parent == RULES_DIR.resolve())
    except (OSError, yamlcache.YamlError) as exc:
        raise ProfileError(f"{path}: cannot read pixel rules: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
        raise ProfileError(f"{path}: a pixel rule file is a mapping with a 'rules' list")
    rules = []
    for index, entry in enumerate(data.get("rules") or []):
        where = f"{path}: rules[{index}]"
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ProfileError(f"{where}: a rule is a mapping with a name")
        unknown = sorted(set(entry) - {"name", "source", "match", "boxes"})
        if unknown:
            raise ProfileError(f"{where}: unknown key {unknown[0]!r}")
        match = entry.get("match")
        if not isinstance(match, dict) or not match:
            raise ProfileError(f"{where}: 'match' names at least one attribute")
        rules.append(RegionRule(
            name=str(entry["name"]), source=str(entry.get("source", "")),
            match=tuple((SIGNATURE_KEYWORDS.get(attr) or parse_attribute(attr, f"{where}: match"),
                         _wanted(want, where)) for attr, want in match.items()),
            boxes=tuple(_box(box, where) for box in entry.get("boxes") or [])))
    return tuple(rules)


def _wanted(want: Any, where: str) -> tuple[str | int, ...]:
    values = want if isinstance(want, list) else [want]
    if not values or not all(isinstance(v, str | int) and not isinstance(v, bool)
                             for v in values):
        raise ProfileError(f"{where}: match values are text, numbers, or lists of them")
    return tuple(values)


def _box(box: Any, where: str) -> Box:
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, int) and v >= 0 for v in box) or box[2] <= 0 or box[3] <= 0):
        raise ProfileError(f"{where}: a box is [x, y, width, height] in pixels, got {box!r}")
    return box[0], box[1], box[2], box[3]


def matching_rules(df: DicomFile, files: tuple[str, ...]) -> list[RegionRule]:
    """The rules of ``files`` whose signature ``df`` matches, in the files' order.

    Which rules match depends on nothing but the values of the few attributes the rules
    name (four in the shipped file), and a run's files hold few distinct combinations of
    them (a device's series): the answer is kept per combination, so a file costs one
    look-up per attribute and one dictionary probe, however many rules there are.
    """
    return list(_index(files).matching(df))


class _Index:
    """The rules of some rule files, with what they matched per signature seen."""

    __slots__ = ("found", "rules", "tags")
    #: signatures kept at most (then forgotten: a run of every distinct value)
    MAX_FOUND = 1024

    def __init__(self, rules: tuple[RegionRule, ...]) -> None:
        self.rules = rules
        #: every attribute some rule reads: all that header_value is asked about
        self.tags = tuple(sorted({tag for rule in rules for tag, _ in rule.match}))
        self.found: dict[tuple[object, ...], tuple[RegionRule, ...]] = {}

    def matching(self, df: DicomFile) -> tuple[RegionRule, ...]:
        key = self.signature(df)
        rules = self.found.get(key)
        if rules is None:
            seen: dict[Condition, bool] = {}
            rules = tuple(rule for rule in self.rules if rule.matches(df, seen))
            if len(self.found) >= self.MAX_FOUND:
                self.found.clear()
            self.found[key] = rules
        return rules

    def signature(self, df: DicomFile) -> tuple[object, ...]:
        """What :func:`header_value` reads of ``df`` for every attribute of the rules: the
        raw value and VR of each (None when absent or of undefined length), and the byte
        order."""
        body = df.body
        key: list[object] = [df.enc.little]
        for tag in self.tags:
            el = df.top(tag)
            key.append(None if el is None or el.undefined else (el.value(body), el.vr))
        return tuple(key)



@functools.cache
def _index(files: tuple[str, ...]) -> _Index:
    """The rules of ``files``, in order, indexed (once per process)."""
    return _Index(tuple(rule for path in files for rule in load_rules(path)))
