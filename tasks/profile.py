"""De-identification profiles: which attribute gets which PS3.15 action, and why.

Rules as data.  A profile is a YAML file in ``configs/profiles/`` (or any path)
validated once by :func:`load_profile` into a frozen :class:`ProfileSpec`.  A table-based
profile (``table: ps3.15-e1-1``) takes every row of PS3.15 Table E.1-1 (``tasks/_profile_table``,
generated) with the Basic Profile code, lets the Options it enables override it (the cleaner
code wins where two options disagree), then applies the profile's own per-attribute
``actions``.  :func:`get_profile` compiles a spec and a set of options once per process;
:meth:`CompiledProfile.resolver` then resolves the conditional codes (X/Z, X/D, Z/D, X/Z/D,
X/Z/U*) with the PS3.3 Type of the attribute in the file's IOD (``tasks.iod_types``) and
caches every decision by (parent sequence, tag), so the per-element cost in the walk is one
dict lookup.  ``--explain`` prints the same :class:`Decision` objects the walk uses.

The ``gdcmanon`` profile is the 2008 48-attribute list gdcmanon 3.0.21 hard-codes, with our deliberate differences: UIDs are always replaced (never
emptied) and the identifiers gdcmanon sends down its broken "dummy" path get consistent
pseudonyms instead of an empty value.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tasks import _profile_table as table
from tasks import yamlcache
from tasks.builtin import config_dir
from tasks.errors import ProfileError
from tasks.iod_types import attribute_type, iod_for_sop_class
from tasks.model import FieldEquality
from tasks.uids import DEFINITION_UID_TAGS
from tasks.vr import FREE_TEXT_VRS, UNLISTED, Unlisted


class Action(str, enum.Enum):
    """PS3.15 Table E.1-1a action codes."""

    D = "D"  # replace with a non-zero-length dummy value consistent with the VR
    Z = "Z"  # replace with a zero-length value (a sequence becomes empty)
    X = "X"  # remove
    K = "K"  # keep (a kept sequence still has the rules applied to its items)
    C = "C"  # clean
    U = "U"  # replace UID with a consistent non-identifying one


OPTIONS: tuple[str, ...] = table.OPTIONS
#: Codes a profile may give an attribute (Table E.1-1a, plus the conditional ones).
CODES = frozenset({"X", "Z", "D", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
#: "Two options that disagree on a row: the cleaner action wins" (issue 4).  Lower = cleaner.
CLEANLINESS = {"X": 0, "Z": 1, "D": 2, "U": 3, "C": 4, "K": 5}
TABLE_NAME = "ps3.15-e1-1"
PROFILE_DIR = config_dir("profiles")  # built-in profiles (tasks.builtin)
DEFAULT_PROFILE = "basic"
#: SOP classes whose pixel data usually carries burned-in text (PS3.15 E.1.1: "Clean Pixel
#: Data" is not something we do); the basic profile's YAML may replace this list.
BURNED_IN_SOP_CLASSES_DEFAULT: tuple[str, ...] = ()

_KEYS = {
    "name": str, "description": str, "extends": str, "table": str, "method": str,
    "options": list, "actions": dict, "keep_private_creators": list, "clean_allow": dict,
    "burned_in_check": bool, "burned_in_sop_classes": list, "method_code_sequence": bool,
    "unlisted": str, "known_safe": list, "pixel_rules": list,
}
#: What a table-based profile does with free text and opaque bytes of attributes Table
#: E.1-1 does not list (names, dates and UIDs follow their VR's rule in both, tasks.vr):
#: ``keep`` them (PS3.15 E.1.1, the ``basic`` profile), or keep only the ``known_safe``
#: attributes and remove/empty the others by Type (the ``strict`` profile).
UNLISTED_POLICIES = ("keep", "known-safe")
#: Attributes the built-in profiles give rows of their own outside Table E.1-1 (keyword,
#: name, VR as in PS3.6): loading the default profile needs no data dictionary (start-up)
BUILTIN_ROW_ATTRIBUTES: dict[int, tuple[str, str, str]] = {
    0x00100033: ("PatientBirthDateInAlternativeCalendar",
                 "Patient's Birth Date in Alternative Calendar", "LO"),
    0x00100034: ("PatientDeathDateInAlternativeCalendar",
                 "Patient's Death Date in Alternative Calendar", "LO"),
}
#: Dates that describe a definition (a context group's or template's version), not an
#: event in a patient's care: kept by the unlisted-date rule (PS3.3 Table 8.8-1, C.18.8)
DEFINITION_DATE_TAGS: dict[int, str] = {
    0x00080106: "ContextGroupVersion",
    0x00080107: "ContextGroupLocalVersion",
    0x0040DB06: "TemplateVersion",
    0x0040DB07: "TemplateLocalVersion",
}


# --------------------------------------------------------------------------- the spec


class ProfileSpec(NamedTuple):
    """A validated profile (hashable and picklable: it travels in DeidentifySettings)."""

    name: str
    source: str = "builtin"
    description: str = ""
    table: bool = True
    method: str = "anonpipe"
    options: frozenset[str] = frozenset()
    actions: tuple[tuple[int, str], ...] = ()
    keep_private_creators: frozenset[str] = frozenset()
    clean_allow: tuple[tuple[int, frozenset[str]], ...] = ()
    burned_in_check: bool = True
    burned_in_sop_classes: frozenset[str] = frozenset()
    method_code_sequence: bool = True
    unlisted: str = "keep"
    known_safe: frozenset[int] = frozenset()
    #: region rule files (tasks.pixels.rules), resolved paths; a profile adds to its base's
    pixel_rules: tuple[str, ...] = ()


@functools.cache
def _row_keywords() -> dict[str, int]:
    return {row[2]: row[1] for row in table.ROWS if row[1] is not None}


def parse_attribute(text: object, where: str) -> int:
    """A tag from a keyword or ``(gggg,eeee)`` / ``gggg,eeee``; ProfileError names ``where``."""
    if isinstance(text, str):
        m = re.fullmatch(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?", text)
        if m:
            return int(m.group(1) + m.group(2), 16)
        # the table's keywords first (they are pydicom's): a profile naming only Table E.1-1
        # attributes never loads the keywords of the whole dictionary (start-up time)
        tag = _row_keywords().get(text) or _BUILTIN_KEYWORDS.get(text)
        if tag is None:
            from tasks.datadict import tag_for_keyword

            tag = tag_for_keyword(text)
        if tag is not None:
            return tag
    raise ProfileError(f"{where}: unknown attribute {text!r} (use a DICOM keyword or (gggg,eeee))")


_BUILTIN_KEYWORDS = {keyword: tag for tag, (keyword, _n, _v) in BUILTIN_ROW_ATTRIBUTES.items()}


def _resolve_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not path.is_file():
            raise ProfileError(f"profile file not found: {name_or_path}")
        return path
    candidate = PROFILE_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(f"unknown profile {name_or_path!r}; known: {', '.join(known)} "
                           "(or give a path to a .yaml file)")
    return candidate


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yamlcache.load(path, shipped=path.parent == PROFILE_DIR)
    except yamlcache.YamlError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys (name, actions, ...)")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ProfileError(f"{path}: unknown key {unknown[0]!r} "
                           f"(known: {', '.join(sorted(_KEYS))})")
    for key, kind in _KEYS.items():
        if key in data and data[key] is not None and not isinstance(data[key], kind):
            raise ProfileError(f"{path}: {key!r} must be a {kind.__name__}, "
                               f"got {type(data[key]).__name__}")
    return data


def load_profile(name_or_path: str | ProfileSpec, _seen: tuple[str, ...] = ()) -> ProfileSpec:
    """Load and validate a profile by name (``configs/profiles/NAME.yaml``) or path."""
    if isinstance(name_or_path, ProfileSpec):
        return name_or_path
    path = _resolve_path(name_or_path)
    key = str(path.resolve())
    if key in _seen:
        raise ProfileError(f"{path}: 'extends' loops back to itself")
    data = _read_yaml(path)
    base = load_profile(data["extends"], _seen + (key,)) if data.get("extends") else None
    where = str(path)
    name = data.get("name") or path.stem
    table_name = data.get("table", TABLE_NAME if base is None or base.table else "none")
    if table_name not in (TABLE_NAME, "none"):
        raise ProfileError(f"{where}: table must be {TABLE_NAME!r} or 'none', got {table_name!r}")
    options = set(base.options if base else ())
    for option in data.get("options") or []:
        if option not in OPTIONS:
            raise ProfileError(f"{where}: unknown option {option!r} (known: {', '.join(OPTIONS)})")
        options.add(option)
    actions = dict(base.actions if base else ())
    for attr, code in (data.get("actions") or {}).items():
        tag = parse_attribute(attr, f"{where}: actions")
        code = str(code).strip()
        if code not in CODES:
            raise ProfileError(f"{where}: actions: {attr}: unknown code {code!r} "
                               f"(use one of {', '.join(sorted(CODES))})")
        actions[tag] = code
    creators = set(base.keep_private_creators if base else ())
    for creator in data.get("keep_private_creators") or []:
        if not isinstance(creator, str) or not creator.strip():
            raise ProfileError(f"{where}: keep_private_creators: {creator!r} is not a creator")
        creators.add(creator.strip())
    allow = {tag: set(values) for tag, values in (base.clean_allow if base else ())}
    for attr, values in (data.get("clean_allow") or {}).items():
        tag = 0 if attr == "*" else parse_attribute(attr, f"{where}: clean_allow")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ProfileError(f"{where}: clean_allow: {attr}: give a list of values")
        allow.setdefault(tag, set()).update(v.strip() for v in values)
    method = data.get("method", base.method if base else f"anonpipe profile {name}")
    if len(method) > 64:
        raise ProfileError(f"{where}: method is {len(method)} characters; (0012,0063) is LO (64)")
    unlisted = data.get("unlisted", base.unlisted if base else "keep")
    if unlisted not in UNLISTED_POLICIES:
        raise ProfileError(f"{where}: unlisted must be one of {', '.join(UNLISTED_POLICIES)}, "
                           f"got {unlisted!r}")
    known_safe = set(base.known_safe if base else ())
    for attr in data.get("known_safe") or []:
        known_safe.add(parse_attribute(attr, f"{where}: known_safe"))
    sop_classes = data.get("burned_in_sop_classes")
    for uid in sop_classes or []:
        if not isinstance(uid, str) or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid):
            raise ProfileError(f"{where}: burned_in_sop_classes: {uid!r} is not a UID")
    pixel_rules = list(base.pixel_rules if base else ())
    for rule_file in data.get("pixel_rules") or []:
        from tasks.pixels.rules import load_rules, resolve_rule_file

        resolved = str(resolve_rule_file(str(rule_file), path.parent))
        load_rules(resolved)  # validated here, at the boundary
        if resolved not in pixel_rules:
            pixel_rules.append(resolved)
    spec = ProfileSpec(
        name=str(name),
        source=where,
        description=str(data.get("description", base.description if base else "")),
        table=table_name == TABLE_NAME,
        method=method,
        options=frozenset(options),
        actions=tuple(sorted(actions.items())),
        keep_private_creators=frozenset(creators),
        clean_allow=tuple(sorted((t, frozenset(v)) for t, v in allow.items())),
        burned_in_check=bool(data.get("burned_in_check",
                                      base.burned_in_check if base else True)),
        burned_in_sop_classes=frozenset(sop_classes if sop_classes is not None
                                        else (base.burned_in_sop_classes if base else ())),
        method_code_sequence=bool(data.get("method_code_sequence",
                                           base.method_code_sequence if base else True)),
        unlisted=unlisted,
        known_safe=frozenset(known_safe),
        pixel_rules=tuple(pixel_rules),
    )
    if options and not spec.table:
        raise ProfileError(f"{where}: options need the {TABLE_NAME} table")
    if (unlisted != "keep" or known_safe) and not spec.table:
        raise ProfileError(f"{where}: unlisted and known_safe need the {TABLE_NAME} table")
    return spec


# --------------------------------------------------------------------------- compiled


class Rule(NamedTuple):
    """One row as the profile applies it: the effective code and where it came from."""

    tag_text: str
    keyword: str
    name: str
    vr: str
    code: str  # effective code, possibly conditional (X/Z/D ...)
    basic: str  # the Basic Profile code of the row ("" when not in the table)
    why: str  # "E.1-1 Basic X; retain_uids K" ...


class Decision(FieldEquality):
    """What happens to one attribute in one context (top level or a parent sequence).

    A class with slots, not a tuple: the compiled edit loops read ``action`` by its
    slot's offset (tasks/_slots.h).  Compared and hashed by its fields."""

    __slots__ = ("action", "fallback", "note", "rule", "type")
    _fields = ("action", "rule", "type", "note", "fallback")

    def __init__(self, action: Action, rule: Rule, type: str | None, note: str,
                 fallback: Action) -> None:
        self.action = action
        self.rule = rule
        self.type = type  # PS3.3 Type in this context, None when unknown
        self.note = note  # how a conditional code was resolved
        self.fallback = fallback  # for C: the action when no clean rule applies (Basic code)

    def __repr__(self) -> str:
        return (f"Decision(action={self.action!r}, rule={self.rule!r}, type={self.type!r}, "
                f"note={self.note!r}, fallback={self.fallback!r})")

    def reason(self) -> str:
        return f"{self.rule.why}{self.note}"


def resolve_code(code: str, kind: str | None) -> tuple[str, str]:
    """The single code a conditional code gives for PS3.3 Type ``kind`` (README: E.1-1a).

    Type 3 -> the first code; Type 2 -> the first code that keeps the attribute (Z, D, U*);
    Type 1 -> the first that keeps it non-empty (D, U*).  Unknown Type -> the last code,
    which is valid whatever the Type (all of X, Z, D and U* remove the identifying value).
    """
    if "/" not in code:
        return code, ""
    if code == "X/Z/U*":
        # References are kept with their instance UIDs replaced whatever the Type: other
        # attributes must agree with them (e.g. the Type 1C Referenced Series Sequence of the
        # Common Instance Reference Module), and the replaced UIDs identify no one.
        return "U*", "; references kept, UIDs inside replaced (valid for any Type)"
    codes = code.split("/")
    if kind is None:
        return codes[-1], f"; Type unknown here -> {codes[-1]} (valid for any Type)"
    base = kind[0]
    if base == "3":
        chosen = codes[0]
    elif base == "2":
        chosen = next(c for c in codes if c != "X")
    else:
        chosen = next((c for c in codes if c in ("D", "U*")), codes[-1])
    return chosen, f"; Type {kind} -> {chosen}"


@functools.cache
def kept_decision(why: str) -> Decision:
    """A keep decision with its reason (for ``--explain``), one object per reason."""
    return Decision(Action.K, Rule("", "", "", "", "K", "", why), None, "", Action.K)


def _definition_decision(tag: int) -> Decision | None:
    """Unlisted UIDs and dates that name or version a definition are kept: decided once
    per tag here, in the resolver's cache, not per element by value (tasks.deidentify)."""
    if tag in DEFINITION_UID_TAGS:
        return kept_decision("not in Table E.1-1: the UID names a definition, not an instance")
    if tag in DEFINITION_DATE_TAGS:
        return kept_decision("not in Table E.1-1: the date versions a definition (a context "
                             "group, a template), not an event")
    return None


_CODE_ACTION = {"X": Action.X, "Z": Action.Z, "D": Action.D, "K": Action.K, "C": Action.C,
                "U": Action.U, "U*": Action.U}


class Resolver:
    """Decisions for files of one SOP Class, cached by ``parent << 32 | tag``."""

    def __init__(self, profile: CompiledProfile, sop_class: str | None):
        self.profile = profile
        self.sop_class = sop_class
        self.iod = iod_for_sop_class(sop_class)
        self._cache: dict[int, Decision | None] = {}  # races only compute twice
        self._by_rule: dict[tuple[int, int], Decision] = {}

    def decide(self, tag: int, parent: int) -> Decision | None:
        key = parent << 32 | tag
        try:
            return self._cache[key]
        except KeyError:
            pass
        decision = self._decide(tag, parent)
        self._cache[key] = decision
        return decision

    def by_rule(self, tag: int, parent: int, rule: Rule) -> Decision:
        """The decision of ``rule`` (an unlisted-attribute rule) for ``tag`` here, its
        conditional code resolved by Type like a row's (cached)."""
        key = (id(rule), parent << 32 | tag)
        found = self._by_rule.get(key)
        if found is None:
            kind = attribute_type(self.iod, parent, tag)
            code, how = resolve_code(rule.code, kind)
            fallback_code, _ = resolve_code(rule.basic or "Z", kind)
            found = self._by_rule[key] = Decision(_CODE_ACTION[code], rule, kind, how,
                                                  _CODE_ACTION[fallback_code])
        return found

    def _decide(self, tag: int, parent: int) -> Decision | None:
        profile = self.profile
        rule = profile.rules.get(tag)
        note = ""
        if rule is None:
            group, elem = tag >> 16, tag & 0xFFFF
            if group & 0xFF01 == 0x5000 and profile.patterns.get("curve"):
                rule = profile.patterns["curve"]
            elif group & 0xFF01 == 0x6000:
                data_rule = profile.patterns.get("overlay_data")
                if elem == 0x3000:
                    rule = data_rule
                elif elem == 0x4000:
                    rule = profile.patterns.get("overlay_comments")
                if rule is None and data_rule is not None and data_rule.code == "X":
                    # an overlay without its data is invalid: the plane goes whole
                    rule = data_rule
                    note = "; the overlay plane goes whole with its Overlay Data"
                elif rule is None and data_rule is not None and data_rule.code == "C":
                    # Clean Graphics cleans the plane's text too (Overlay Description,
                    # Label...); its bitmap and codes are kept (tasks.deidentify)
                    rule = data_rule
                    note = "; Clean Graphics cleans the plane's text"
            if rule is None:
                if profile.unlisted:
                    return _definition_decision(tag)
                return None
        kind = attribute_type(self.iod, parent, tag)
        code, how = resolve_code(rule.code, kind)
        fallback_code, _ = resolve_code(rule.basic or "Z", kind)
        if fallback_code in ("C", "K"):
            fallback_code = "Z"
        return Decision(_CODE_ACTION[code], rule, kind, note + how, _CODE_ACTION[fallback_code])


class CompiledProfile:
    """A spec with its options applied, ready for the walk (one per process and spec:
    compared by identity)."""

    def __init__(self, spec: ProfileSpec, options: frozenset[str], rules: dict[int, Rule],
                 patterns: dict[str, Rule], safe_private: Mapping[tuple[int, str, int], str],
                 keep_creators: frozenset[str], clean_allow: Mapping[int, frozenset[bytes]],
                 unlisted: Mapping[str, Rule | None] | None = None,
                 unlisted_vrs: Mapping[str, str] | None = None,
                 scrub_vrs: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.options = options
        self.rules = rules
        self.patterns = patterns
        #: (group, creator, element byte) -> the VR Table E.3.10-1 gives the safe attribute
        self.safe_private = safe_private
        self.keep_creators = keep_creators
        self.clean_allow = clean_allow
        #: rules for attributes Table E.1-1 does not list, by kind (tasks.vr.Unlisted, plus
        #: "code" for coded entries of local schemes); a kind mapped to None is kept
        self.unlisted: Mapping[str, Rule | None] = unlisted or {}
        #: VR -> unlisted kind the walk acts on (VRs absent: kept, the fast path)
        self.unlisted_vrs: Mapping[str, str] = unlisted_vrs or {}
        #: the same inside a sequence whose row is D, U* or C: free text is scrubbed too
        self.scrub_vrs: Mapping[str, str] = scrub_vrs or {}
        self._resolvers: dict[str | None, Resolver] = {}

    def __repr__(self) -> str:
        return f"CompiledProfile({self.spec.name!r}, options={sorted(self.options)})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def private_rule(self) -> Rule | None:
        return self.patterns.get("private")

    @property
    def known_safe_only(self) -> bool:
        """Whether unlisted free text and bytes are removed unless known safe (strict)."""
        return self.spec.unlisted == "known-safe"

    @property
    def maps_every_instance_uid(self) -> bool:
        """Whether every unregistered UID is replaced, whatever its tag (the inventory then
        records them all for the plan's mapping)."""
        return self.unlisted.get(Unlisted.UID) is not None

    @property
    def actions(self) -> dict[int, Action]:
        """Tag -> action where the Type is unknown (what the inventory and plan use)."""
        return {tag: _CODE_ACTION[resolve_code(rule.code, None)[0]]
                for tag, rule in self.rules.items()}

    @property
    def dates(self) -> str | None:
        """``modified``, ``full`` or None: what the Longitudinal options keep."""
        if "retain_long_modified_dates" in self.options:
            return "modified"
        if "retain_long_full_dates" in self.options:
            return "full"
        return None

    @property
    def method(self) -> str:
        """(0012,0063) De-identification Method, LO 1-n: the profile then each option."""
        values = [self.spec.method]
        values += [table.CID7050[o][2] for o in OPTIONS if o in self.options]
        return "\\".join(values)

    def method_codes(self) -> list[tuple[str, str, str]]:
        """CID 7050 codes for (0012,0064): the Basic Profile, then each Option applied."""
        if not self.spec.table or not self.spec.method_code_sequence:
            return []
        options = [o for o in OPTIONS if o in self.options]
        if "retain_long_modified_dates" in options and "retain_long_full_dates" in options:
            options.remove("retain_long_full_dates")  # modified dates win (cleaner)
        return [table.CID7050["basic"]] + [table.CID7050[o] for o in options]

    def resolver(self, sop_class: str | None) -> Resolver:
        found = self._resolvers.get(sop_class)
        if found is None:
            found = self._resolvers[sop_class] = Resolver(self, sop_class)
        return found

    def burned_in_reason(self, sop_class: str | None, burned_in: str | None) -> str | None:
        """Why a file must be refused for burned-in annotation, or None."""
        if not self.spec.burned_in_check:
            return None
        if burned_in is not None and burned_in.strip().upper() == "YES":
            return "Burned In Annotation (0028,0301) is YES"
        if burned_in is None and sop_class in self.spec.burned_in_sop_classes:
            return (f"SOP Class {sop_class} usually carries burned-in text and the file has no "
                    "Burned In Annotation (0028,0301)")
        return None


def _compile(spec: ProfileSpec, options: frozenset[str]) -> CompiledProfile:
    rules: dict[int, Rule] = {}
    patterns: dict[str, Rule] = {}
    if spec.table:
        for tag_text, tag, keyword, name, vr, _retired, _in_iod, basic, codes in table.ROWS:
            code, why = basic, f'E.1-1 "{name}" Basic {basic}'
            chosen = [(CLEANLINESS[c[0]], c, o) for o, c in zip(OPTIONS, codes)
                      if c and o in options]
            if chosen:
                code = min(chosen)[1]
                why += "".join(f", {o} {c}" for _, c, o in chosen)
                if len(chosen) > 1:
                    why += f" -> {code} (cleaner wins)"
            rule = Rule(tag_text, keyword, name, vr, code, basic, why)
            if tag is None:
                patterns[keyword] = rule
            else:
                rules[tag] = rule
    keywords = {row[1]: row for row in table.ROWS if row[1] is not None}
    for tag, code in spec.actions:
        old = rules.get(tag)
        row = keywords.get(tag)
        if old is not None:
            rules[tag] = Rule(old.tag_text, old.keyword, old.name, old.vr, code, old.basic,
                              f"{old.why}; profile {spec.name} {code}")
        else:
            tag_text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
            known = BUILTIN_ROW_ATTRIBUTES.get(tag)
            if known is not None:
                keyword, name, vr = known
            else:
                from pydicom.datadict import (
                    dictionary_description,
                    dictionary_keyword,
                    dictionary_VR,
                )

                try:
                    keyword, name, vr = (dictionary_keyword(tag), dictionary_description(tag),
                                         dictionary_VR(tag))
                except KeyError:
                    keyword, name, vr = ((row[2], row[3], row[4]) if row
                                         else (tag_text, tag_text, ""))
            rules[tag] = Rule(tag_text, keyword, name, vr, code, "",
                              f"profile {spec.name} {code}")
    safe: dict[tuple[int, str, int], str] = {}
    if "retain_safe_private" in options:
        safe = {(g, c, e): vr for g, c, e, vr, _m in table.SAFE_PRIVATE}
    unlisted = _unlisted_rules(spec, options) if spec.table else {}
    vrs = {vr: kind for vr, kind in UNLISTED.items() if kind in unlisted}
    if unlisted:
        vrs["UN"] = Unlisted.BULK  # a standard attribute encoded as UN: by its real VR
    scrub = {**vrs, **({vr: Unlisted.TEXT for vr in FREE_TEXT_VRS} if unlisted else {})}
    return CompiledProfile(
        spec=spec, options=options, rules=rules, patterns=patterns, safe_private=safe,
        keep_creators=spec.keep_private_creators,
        clean_allow={tag: frozenset(v.encode("latin-1", "replace") for v in values)
                     for tag, values in spec.clean_allow},
        unlisted=unlisted, unlisted_vrs=vrs, scrub_vrs=scrub,
    )


def _unlisted_rule(code: str, why: str, basic: str = "") -> Rule:
    return Rule("", "", "", "", code, basic, why)


#: The rules past Table E.1-1 (PS3.15 E.1.1 leaves attributes the table does not list to the
#: profile: a name, a date or an instance UID identifies wherever it sits)
UID_RULE = _unlisted_rule("U", "not in Table E.1-1: a UI value not registered in PS3.6 "
                          "Annex A is an instance UID: replaced")
NAME_RULE = _unlisted_rule("D", "not in Table E.1-1: a PN value is never kept: consistent "
                           "pseudonym")
DATE_RULE = _unlisted_rule("X/Z/D", "not in Table E.1-1: a DA/DT value is never kept: "
                           "removed, emptied or dummy by Type", "X/Z/D")
DATE_SHIFT_RULE = _unlisted_rule("C", "not in Table E.1-1: a DA/DT value is never kept: "
                                 "shifted (retain_long_modified_dates)", "X/Z/D")
STRICT_RULE = _unlisted_rule("X/Z/D", "not in Table E.1-1 and not known safe: removed, "
                             "emptied or dummy by Type", "X/Z/D")
LOCAL_CODE_RULE = _unlisted_rule("D", "code of a private or local coding scheme (PS3.16 "
                                 "8.2): dummy")


def _unlisted_rules(spec: ProfileSpec, options: frozenset[str]) -> dict[str, Rule | None]:
    rules: dict[str, Rule | None] = {
        Unlisted.UID: None if "retain_uids" in options else UID_RULE,
        Unlisted.NAME: NAME_RULE,
        "code": LOCAL_CODE_RULE,
    }
    if "retain_long_modified_dates" in options:
        rules[Unlisted.DATE] = DATE_SHIFT_RULE
    elif "retain_long_full_dates" in options:
        rules[Unlisted.DATE] = None
    else:
        rules[Unlisted.DATE] = DATE_RULE
    if spec.unlisted == "known-safe":
        rules[Unlisted.TEXT] = rules[Unlisted.BULK] = STRICT_RULE
    return rules


_COMPILED: dict[tuple[ProfileSpec, frozenset[str]], CompiledProfile] = {}
_SPECS: dict[str, ProfileSpec] = {}
_BY_NAME: dict[tuple[str, tuple[str, ...]], CompiledProfile] = {}


def get_profile(profile: str | ProfileSpec | CompiledProfile,
                options: Iterable[str] = ()) -> CompiledProfile:
    """The compiled profile for a name, path or spec plus extra options (cached)."""
    if type(profile) is str and type(options) is tuple:
        # every file of a run asks again by the same name: one lookup, where the general
        # path hashes the whole spec (a name's spec is read once per process: _SPECS)
        found = _BY_NAME.get((profile, options))
        if found is None:
            found = _BY_NAME[(profile, options)] = get_profile(profile, list(options))
        return found
    if isinstance(profile, CompiledProfile):
        if not set(options) <= profile.options:
            return get_profile(profile.spec, profile.options | set(options))
        return profile
    if isinstance(profile, str):
        spec = _SPECS.get(profile)
        if spec is None:
            spec = _SPECS[profile] = load_profile(profile)
    else:
        spec = profile
    extra = frozenset(options)
    unknown = sorted(extra - set(OPTIONS))
    if unknown:
        raise ProfileError(f"unknown option {unknown[0]!r} (known: {', '.join(OPTIONS)})")
    if extra and not spec.table:
        raise ProfileError(f"profile {spec.name!r} is not based on Table E.1-1: its rows take "
                           "no options")
    key = (spec, spec.options | extra)
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = _compile(spec, key[1])
    return compiled


def __getattr__(name: str) -> Any:
    if name == "GDCMANON":  # compiled lazily: the YAML lives in configs/profiles
        return get_profile("gdcmanon")
    raise AttributeError(name)
