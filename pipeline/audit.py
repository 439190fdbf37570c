"""``anonpipe-audit OUT --store PATH [--input IN]``: check an output tree before it is released.

Pass 1 of a de-identification run records identifiers of every input file in the store
(Patient's Name, Patient ID, birth date, study date, accession number, Study ID, other
patient IDs, and every UID the profile replaces).  The audit searches the raw bytes of every
file under OUT (preamble and file meta included; the (0400,0500) element, whose originals
are encrypted, cut out first) and every output path for any of those values, and checks that
the UIDs were replaced consistently: one new UID per original across the whole tree, as the
store's mapping recorded it.  ``--input IN`` also reads the originals and searches for every
text value the profile removes or replaces (addresses, physicians, free text, private
values...), not only the identifiers the store records.

Why bytes and not a DICOM parse: a leak may sit where a parser does not look (a private
block, an item of an unknown sequence, bytes after the last element, a damaged output).
Why two searches: UIDs and dates are whole runs of ``[0-9.]`` in a file, so every such run is
looked up in a set (scales to millions of recorded UIDs); text identifiers go into one
regular expression built as a trie, with word boundaries so that short values do not match
inside longer ones.  Values shorter than :data:`MIN_TEXT` characters (or
:data:`MIN_DIGITS` digits) are not searched: "M" or "1" is everywhere.

Output: counts and the files at fault (relative to OUT); the values only with ``-D``.  A
path that itself holds an identifier is withheld without ``-D``.  Exit 0 when clean, 1 when
something leaks, is inconsistent or cannot be read, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.exits import Exit, of_argparse
from pipeline.names import PathIdentifiers, decode_text, paths_holding
from pipeline.store import Store, job_store_path
from tasks.actions import DUMMY_WORDS
from tasks.dicomio import DicomFile, Element, read_dicom, read_header
from tasks.errors import AnonpipeError, UsageError
from tasks.inventory import replaced_tags
from tasks.profile import DEFAULT_PROFILE, Action, CompiledProfile, get_profile
from tasks.tags import (
    ACCESSION_NUMBER,
    CODE_MEANING,
    CODE_VALUE,
    CODING_SCHEME_VERSION,
    ENCRYPTED_ATTRIBUTES,
    FRAME_OF_REFERENCE_UID,
    LONG_CODE_VALUE,
    OTHER_PATIENT_IDS,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_DATE,
    STUDY_ID,
    STUDY_INSTANCE_UID,
    URN_CODE_VALUE,
)
from tasks.tags import CODING_SCHEME_DESIGNATOR as CODING_SCHEME
from tasks.vr import IDENTIFYING_TEXT_VRS

PROG = "anonpipe-audit"
EXIT_CLEAN, EXIT_LEAK, EXIT_USAGE = Exit.OK, Exit.FAILED, Exit.USAGE

#: shortest text identifier searched (names, IDs); all-digit IDs need MIN_DIGITS
MIN_TEXT = 4
MIN_DIGITS = 6
#: shortest UID searched (a real UID is rarely shorter; "1.2.3" would match anywhere)
MIN_UID = 8
#: longest text searched: longer values (free text) are cut at a word boundary
MAX_TEXT = 64
#: values the de-identifier itself writes (dummies): never reported as leaks
DUMMIES = DUMMY_WORDS
DEFAULT_LIMIT = 50

#: inventory field -> (label, tag whose action decides whether the profile keeps it)
TEXT_FIELDS = {
    "patient_name": ("patient name", PATIENT_NAME),
    "patient_id": ("patient ID", PATIENT_ID),
    "other_ids": ("other patient ID", OTHER_PATIENT_IDS),
    "accession": ("accession number", ACCESSION_NUMBER),
    "study_id": ("study ID", STUDY_ID),
}
DATE_FIELDS = {
    "birth_date": ("birth date", PATIENT_BIRTH_DATE),
    "study_date": ("study date", STUDY_DATE),
}
UID_LABEL = "UID"
#: top-level UIDs whose mapping must be one-to-one across the tree
TOP_UIDS = (
    ("study", "Study Instance UID", STUDY_INSTANCE_UID),
    ("series", "Series Instance UID", SERIES_INSTANCE_UID),
    ("frame_of_reference", "Frame of Reference UID", FRAME_OF_REFERENCE_UID),
    ("sop", "SOP Instance UID", SOP_INSTANCE_UID),
)
#: VRs whose values ``--input`` collects (numbers, codes and times are too short or common)
DEEP_VRS = IDENTIFYING_TEXT_VRS
REMOVING = frozenset({Action.X, Action.Z, Action.D, Action.U})
KEEPING = frozenset({Action.K, Action.C})

_DIGIT_RUN = re.compile(rb"(?<![0-9.])[0-9][0-9.]{7,}")
#: a token must start and end with a letter or digit (ASCII or not, or an ISO 2022
#: escape) for a boundary check
_WORDISH = re.compile(rb"[0-9A-Z\x1b\x80-\xff]")
#: code item attributes (PS3.3 8.8): a standard scheme's values are no identifier
CODE_ATTRIBUTES = frozenset({CODE_VALUE, CODING_SCHEME, CODE_MEANING,
                             CODING_SCHEME_VERSION, LONG_CODE_VALUE, URN_CODE_VALUE})
#: kept descriptive attributes whose words a name part may equal ("SIEMENS^ANNA" and a
#: Siemens scanner, a patient named like a word of the de-identification method)
CONTEXT_TAGS = (0x00080070, 0x00081090, 0x00120063, 0x00181020)
#: file meta attributes that may carry site names (PS3.10 7.1): searched with --input
META_TEXT_TAGS = (0x00020013, 0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
_PRINTABLE_RUN = re.compile(rb"[\x21-\x7e][\x20-\x7e]{3,}[\x21-\x7e]")


# --------------------------------------------------------------------------- identifiers


@dataclass
class Identifiers:
    """What to search for: upper-cased bytes -> what it is (a label for the report)."""

    uids: dict[bytes, str] = field(default_factory=dict)
    dates: dict[bytes, str] = field(default_factory=dict)
    text: dict[bytes, str] = field(default_factory=dict)
    #: labels not searched because the run's options keep those attributes on purpose
    kept: dict[str, str] = field(default_factory=dict)
    #: the UIDs pass 1 recorded, looked up where they are (the store's mapping: a million
    #: of them are not held in memory): candidates -> those recorded; and how many there are
    recorded: Callable[[list[bytes]], set[bytes]] | None = None
    recorded_count: int = 0
    #: tokens not searched (kept in the originals too: ``--input``)
    discarded: set[bytes] = field(default_factory=set)

    def __len__(self) -> int:
        return self.uid_count + len(self.dates) + len(self.text)

    @property
    def uid_count(self) -> int:
        return len(self.uids) + self.recorded_count

    def add_uid(self, value: str, label: str = UID_LABEL) -> None:
        token = value.strip("\0 ").encode("latin-1", "replace")
        if len(token) >= MIN_UID:
            self.uids.setdefault(token, label)

    def add_date(self, value: str, label: str) -> None:
        for part in value.split("\\"):
            token = part.strip("\0 ").encode("latin-1", "replace")
            if len(token) >= 8 and token[:8].isdigit() and token[:8] not in DUMMIES:
                self.dates.setdefault(token[:8], label)

    def add_text(self, value: str, label: str, person: bool = False,
                 charset: str | None = None) -> None:
        """A text value (multi-valued: each value); ``person``: also each name component.

        ``value`` holds the file's bytes as Latin-1 text; with ``charset`` (its Specific
        Character Set) the decoded text is searched in UTF-8 and Latin-1 too.
        """
        for part in value.split("\\"):
            for token in _text_tokens(part.encode("latin-1", "replace"), person):
                self.text.setdefault(token, label)
            for text in decode_text(part, charset or "ISO_IR 100")[-1:]:
                for encoded in _encodings(text):
                    for token in _text_tokens(encoded, person):
                        self.text.setdefault(token, label)

    def discard(self, tokens: Iterable[bytes]) -> None:
        for token in tokens:
            self.discarded.add(token)
            self.text.pop(token, None)
            self.dates.pop(token, None)
            self.uids.pop(token, None)


def _encodings(text: str) -> Iterator[bytes]:
    yield text.encode("utf-8")
    try:
        yield text.encode("latin-1")
    except UnicodeEncodeError:
        pass


def _text_tokens(value: bytes, person: bool) -> Iterator[bytes]:
    """Search tokens of a value's bytes, upper-cased as :meth:`Searcher.find` upper-cases
    the data (``bytes.upper``: ASCII letters only, so "Müller" matches "MüLLER")."""
    raw = value.strip(b"\0 ").upper()
    candidates = [raw]
    if person:  # PN: Family^Given^Middle^Prefix^Suffix, alphabetic=ideographic=phonetic
        candidates.append(raw.strip(b"^="))
        candidates += re.split(rb"[\^= ,]+", raw)
    for token in candidates:
        token = token.strip(b" ^=")
        if len(token) > MAX_TEXT:
            token = token[:MAX_TEXT].rsplit(b" ", 1)[0].strip()
        if len(token) < (MIN_DIGITS if token.isdigit() else MIN_TEXT) or token in DUMMIES:
            continue
        if not _WORDISH.match(token[:1]) or not _WORDISH.match(token[-1:]):
            continue  # a boundary check needs a letter or digit at both ends
        yield token


def _trie_pattern(tokens: Iterable[bytes]) -> bytes:
    """One regex alternative per distinct prefix: the engine follows a single branch."""
    root: dict[int, Any] = {}
    for token in tokens:
        node = root
        for byte in token:
            node = node.setdefault(byte, {})
        node[-1] = True

    def emit(node: dict[int, Any]) -> bytes:
        branches = [re.escape(bytes([b])) + emit(child)
                    for b, child in sorted(node.items()) if b >= 0]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        return b"(?:" + body + b")?" if -1 in node else body

    return emit(root)


class Searcher:
    """Finds recorded identifiers in bytes: ``find(data) -> {token: label}``."""

    def __init__(self, ids: Identifiers) -> None:
        self.ids = ids
        self.text = None
        if ids.text:
            pattern = _trie_pattern(sorted(ids.text))
            self.text = re.compile(rb"(?<![0-9A-Z])(?:" + pattern + rb")(?![0-9A-Z])")

    def find(self, data: bytes) -> dict[bytes, str]:
        found: dict[bytes, str] = {}
        ids = self.ids
        uids, dates, recorded = ids.uids, ids.dates, ids.recorded
        if uids or dates or recorded is not None:
            unknown: list[bytes] = []
            for run in _DIGIT_RUN.findall(data):
                if run in uids:
                    found[run] = uids[run]
                    continue
                if recorded is not None and len(run) >= MIN_UID:
                    unknown.append(run)
                if run[:8] in dates and run[8:9] != b".":
                    found[run[:8]] = dates[run[:8]]
            if unknown:
                assert recorded is not None
                for run in recorded(unknown) - ids.discarded:
                    found.pop(run[:8], None)  # a recorded UID, not a date
                    found[run] = UID_LABEL
        if self.text is not None:
            for token in self.text.findall(data.upper()):
                found[token] = self.ids.text[token]
        return found


@dataclass
class RunProfile:
    """What the audited run did: its compiled profile (None when unknown) and where from."""

    compiled: CompiledProfile | None
    description: str


def run_profile(store: Store) -> RunProfile:
    """The profile and options of the store's de-identification run.

    The final run record does not repeat the options, so they are read from the running
    record when present, else from the run report the record names.
    """
    record = store.last_run("deidentify") or {}
    options = record.get("options")
    if not isinstance(options, dict) and record.get("report"):
        try:
            options = json.loads(Path(record["report"]).read_text()).get("options")
        except (OSError, ValueError):
            options = None
    if not isinstance(options, dict):
        return RunProfile(None, "profile of the run unknown (run report not found): "
                                "every identifier is searched")
    name = str(options.get("profile") or DEFAULT_PROFILE)
    chosen = tuple(options.get("profile_options") or ())
    try:
        compiled = get_profile(name, chosen)
    except AnonpipeError as exc:
        return RunProfile(None, f"profile {name!r} cannot be loaded ({exc}): every identifier "
                                "is searched")
    described = name + (f" with {', '.join(sorted(chosen))}" if chosen else "")
    return RunProfile(compiled, described)


def kept_on_purpose(profile: CompiledProfile | None, tag: int) -> str | None:
    """The options that keep (K) or clean (C: dates shifted) ``tag``, or None.

    Such values are no leak, and a shifted date may well equal another study's date.  What
    the profile keeps without any option (the gdcmanon profile's dates) is searched.
    """
    if profile is None or not profile.options:
        return None
    if profile.actions.get(tag) not in KEEPING:
        return None
    spec = profile.spec._replace(options=frozenset())
    if get_profile(spec).actions.get(tag) in KEEPING:
        return None
    keeping = [o for o in sorted(profile.options)
               if get_profile(spec, [o]).actions.get(tag) in KEEPING]
    return ", ".join(f"--{o.replace('_', '-')}" for o in keeping) or "the profile's options"


def collect_identifiers(store: Store, profile: CompiledProfile | None) -> Identifiers:
    """Every identifier the inventory records, minus those the run keeps on purpose."""
    ids = Identifiers()
    fields: dict[str, str] = {}
    for name, (label, tag) in {**TEXT_FIELDS, **DATE_FIELDS}.items():
        why = kept_on_purpose(profile, tag)
        if why is None:
            fields[name] = label
        else:
            ids.kept[label] = why
    why = kept_on_purpose(profile, 0x0020000D)  # Study Instance UID stands for them all
    if why is not None:
        ids.kept[UID_LABEL] = why  # and pass 1 recorded none to replace
    # the table-based profiles replace every UID not registered in PS3.6 Annex A, listed
    # by the table or not: pass 1 records them all, and the mapping holds each once
    if store.has_rows("uids"):
        ids.recorded = store.recorded_uids
        ids.recorded_count = store.table_size("uids")
    else:  # no mapping recorded (the run stopped before pass 2): from the inventory
        for _rel, row in store.inventory():
            if not row.get("error_kind"):
                for uid in row.get("replace") or ():
                    ids.add_uid(uid)
    for row in store.heads():  # what identifies patients and studies: shared by series
        charset = row.get("charset") if isinstance(row.get("charset"), str) else None
        for name, label in fields.items():
            value = row.get(name)
            if not value:
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                if name in DATE_FIELDS:
                    ids.add_date(str(v), label)
                else:
                    ids.add_text(str(v), label, person=name == "patient_name",
                                 charset=charset)
    return ids


# --------------------------------------------------------------------------- --input


def _local_code(elements: list[Element], body: bytes) -> bool:
    """Whether these elements are a code item of a private or local scheme ("99...", "L":
    PS3.16 8.2); a standard scheme's code (DCM, SCT, LN, UCUM...) is no identifier."""
    for el in elements:
        if el.tag == CODING_SCHEME and not el.undefined:
            scheme = el.value(body).strip(b"\0 ").upper()
            return scheme.startswith(b"99") or scheme == b"L"
    return False


def _walk(elements: list[Element], body: bytes, actions: dict[int, Action | None],
          profile: CompiledProfile, removed: bool,
          out_removed: dict[tuple[str, str], str], out_kept: set[str]) -> None:
    standard_code = any(el.tag == CODING_SCHEME for el in elements) and \
        not _local_code(elements, body)
    for el in elements:
        if el.tag in CODE_ATTRIBUTES and (standard_code or el.tag == CODING_SCHEME):
            continue
        action = actions.get(el.tag, ...)
        if action is ...:
            action = actions[el.tag] = _action(profile, el.tag)
        gone = removed or action in REMOVING
        if el.items is not None:
            for item in el.items:
                _walk(item.elements, body, actions, profile, gone and action is not Action.U,
                      out_removed, out_kept)
            continue
        if el.vr not in DEEP_VRS or el.undefined or not el.length:
            continue
        text = el.value(body).decode("latin-1")
        if gone:
            out_removed[(el.vr, text)] = f"removed {_keyword(el.tag)}"
        else:
            out_kept.add(text)


def _action(profile: CompiledProfile, tag: int) -> Action | None:
    """The action on a tag the profile does not list: private data goes with its block."""
    action = None
    if (tag >> 16) & 1 and tag & 0xFFFF >= 0x0010:
        rule = profile.private_rule  # private creators and data go with their block
        if rule is not None and rule.code.startswith("X") and \
                "retain_safe_private" not in profile.options:
            return Action.X
    return action


@functools.cache
def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    try:
        name = keyword_for_tag(tag)
    except Exception:  # noqa: BLE001 - repeating groups and private tags have no keyword
        name = ""
    return name or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _meta_values(df: DicomFile, out: dict[tuple[str, str], str]) -> None:
    """Site names in the original's file meta and text in its preamble (PS3.15 E.1.1:
    both are replaced): an output must not carry them."""
    for tag in META_TEXT_TAGS:
        el = df.meta_element(tag)
        if el is not None and el.length:
            text = el.value(df.meta_bytes).strip(b"\0 ").decode("latin-1")
            vr = "UI" if tag == 0x00020100 else "LO"
            out[(vr, text)] = f"file meta {_keyword(tag)}"
    for run in _PRINTABLE_RUN.findall(df.raw_prefix[:128]):
        out[("LO", run.decode("latin-1"))] = "preamble text"


def add_input_values(ids: Identifiers, store: Store, input_dir: Path,
                     profile: CompiledProfile | None) -> tuple[int, int]:
    """Add the values the profile removes from each original; returns (read, unreadable).

    A value that the profile also keeps somewhere in the originals ("HEAD" as a removed
    protocol name and a kept body part) cannot be told apart and is not searched.
    """
    profile = profile or get_profile(DEFAULT_PROFILE)
    removed: dict[tuple[str, str], str] = {}
    kept: set[str] = set()
    read = failed = 0
    actions: dict[int, Action | None] = dict(profile.actions)
    for rel, row in store.inventory():
        if row.get("error_kind"):
            continue
        try:
            df = read_header(input_dir / rel)
        except (AnonpipeError, OSError):
            failed += 1
            continue
        read += 1
        _walk(df.elements, df.body, actions, profile, False, removed, kept)
        _meta_values(df, removed)
    extra = Identifiers()
    for (vr, text), label in removed.items():
        if vr == "UI":
            extra.add_uid(text, label)
        elif vr in ("DA", "DT"):
            extra.add_date(text, label)
        else:
            extra.add_text(text, label, person=vr == "PN")
    if extra.text or extra.dates:
        kept_text = "\n".join(sorted(kept)).encode("latin-1", "replace")
        extra.discard(Searcher(extra).find(kept_text))
    for token, label in extra.text.items():
        ids.text.setdefault(token, label)
    for token, label in extra.dates.items():
        ids.dates.setdefault(token, label)
    for token, label in extra.uids.items():
        ids.uids.setdefault(token, label)
    return read, failed


# --------------------------------------------------------------------------- the audit


@dataclass
class Findings:
    files: int = 0
    size: int = 0
    not_from_run: int = 0
    leaks: dict[str, dict[bytes, str]] = field(default_factory=dict)  # rel -> token -> label
    path_leaks: dict[str, dict[bytes, str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # rel -> reason
    not_as_recorded: dict[str, int] = field(default_factory=dict)  # rel -> UIDs off mapping
    #: label -> original -> new UID -> files (one-to-one check across the tree); with a
    #: recorded mapping only the files whose new UID is not the recorded one are kept at
    #: all (``Auditor.check_uids``), so memory does not grow with a consistent archive
    pairs: dict[str, dict[str, dict[str, list[str]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    recorded: dict[str, str] = field(default_factory=dict)  # original -> recorded new UID

    def pair(self, label: str, old: str, new: str, rel: str) -> None:
        """One file's (original, new) UID pair."""
        self.counts[(label, old, new)] += 1
        files = self.pairs[label][old].setdefault(new, [])
        if self.recorded.get(old) != new:
            files.append(rel)

    def split(self) -> list[tuple[str, str, list[str]]]:
        """(label, original, files) for each original UID given more than one new UID."""
        out = []
        for label, by_old in self.pairs.items():
            for old, by_new in by_old.items():
                expected = self.recorded.get(old)
                if expected is None:  # no recorded mapping: the most common new UID
                    if len(by_new) < 2:
                        continue
                    expected = max(by_new, key=lambda n: self.counts[(label, old, n)])
                files = sorted(f for new, files in by_new.items() if new != expected
                               for f in files)
                if files:
                    out.append((label, old, files))
        return out

    def merged(self) -> list[tuple[str, str, list[str]]]:
        """(label, new UID, files) for each new UID given to more than one original."""
        owners: dict[tuple[str, str], set[str]] = defaultdict(set)
        files: dict[tuple[str, str], list[str]] = defaultdict(list)
        for label, by_old in self.pairs.items():
            for old, by_new in by_old.items():
                for new, rels in by_new.items():
                    owners[(label, new)].add(old)
                    files[(label, new)] += rels
        return [(label, new, sorted(files[(label, new)]))
                for (label, new), olds in owners.items() if len(olds) > 1]

    @property
    def clean(self) -> bool:
        return not (self.leaks or self.path_leaks or self.unreadable or self.not_as_recorded
                    or self.split() or self.merged())


def searchable(data: bytes) -> tuple[bytes, DicomFile | None]:
    """The file's bytes without the (0400,0500) element (inflated when deflated)."""
    try:
        df = read_dicom(data, stop_at_pixels=True)
    except Exception:  # noqa: BLE001 - a damaged output is searched as it is
        return data, None
    el = df.top(ENCRYPTED_ATTRIBUTES)
    if df.deflated:
        head = df.raw_prefix + df.meta_bytes
        body = df.body if el is None else df.body[:el.start] + df.body[el.end:]
        return head + body, df
    if el is None:
        return data, df
    base = len(df.raw_prefix) + len(df.meta_bytes)
    return data[:base + el.start] + data[base + el.end:], df


def _collect(df: DicomFile, elements: list[Element], tags: frozenset[int], out: set[str]) -> None:
    for el in elements:
        if el.items is not None:
            for item in el.items:
                _collect(df, item.elements, tags, out)
        elif el.tag in tags and el.vr == "UI" and not el.undefined and el.length:
            for part in el.value(df.body).split(b"\\"):
                uid = part.strip(b"\0 ").decode("ascii", "replace")
                if uid:
                    out.add(uid)


_WORD = re.compile(rb"[0-9A-Z\x80-\xff]+")


def _context_words(df: DicomFile | None) -> set[bytes]:
    """Upper-cased words of the output's kept descriptive attributes (CONTEXT_TAGS) and of
    its standard codes ("FINDING"): a name part equal to one of them is no leak there."""
    words: set[bytes] = set()
    if df is None:
        return words
    for tag in CONTEXT_TAGS:
        value = df.top_value(tag)
        if value:
            words.update(_WORD.findall(value.upper()))
    _code_words(df.elements, df.body, words)
    return words


def _code_words(elements: list[Element], body: bytes, words: set[bytes]) -> None:
    if any(el.tag == CODING_SCHEME for el in elements) and not _local_code(elements, body):
        for el in elements:
            if el.tag in (CODE_VALUE, CODE_MEANING) and not el.undefined and el.length:
                words.update(_WORD.findall(el.value(body).upper()))
    for el in elements:
        for item in el.items or ():
            _code_words(item.elements, body, words)


class Auditor:
    def __init__(self, out: Path, store: Store, ids: Identifiers,
                 profile: CompiledProfile | None) -> None:
        self.out, self.store, self.ids = out, store, ids
        self.searcher = Searcher(ids)
        self.replaced = replaced_tags(profile) if profile is not None else replaced_tags()
        self.with_mapping = store.has_rows("uids")
        self.findings = Findings()
        #: output path -> input path (outputs named by replacement values: --output-names)
        self.sources = store.output_sources()
        #: name parts of any length, IDs and birth dates as whole tokens of path components
        self.path_ids = PathIdentifiers()
        for row in store.distinct_identifiers():
            self.path_ids.add_row(row)

    def run(self) -> Findings:
        for rel, path in iter_output(self.out):
            self.audit_file(rel, path)
        return self.findings

    def audit_file(self, rel: str, path: Path) -> None:
        f = self.findings
        found_in_path = self.searcher.find(rel.encode("utf-8", "surrogateescape"))
        if not found_in_path and self.path_ids and any(paths_holding([rel], self.path_ids)):
            found_in_path = {b"": "name part, ID or birth date in a folder or file name"}
        if found_in_path:
            f.path_leaks[rel] = found_in_path
        try:
            data = path.read_bytes()
        except OSError as exc:
            f.unreadable[rel] = (exc.strerror or type(exc).__name__).lower()
            return
        f.files += 1
        f.size += len(data)
        clear, df = searchable(data)
        found = self.searcher.find(clear)
        if found:
            context = _context_words(df)
            found = {token: label for token, label in found.items()
                     if token not in context or label != "patient name"}
        if found:
            f.leaks[rel] = found
        row = self.store.get("files", self.sources.get(rel, rel))
        if not isinstance(row, dict) or row.get("error_kind"):
            f.not_from_run += 1
            return
        if df is None:
            f.unreadable[rel] = "not a readable DICOM file: its UIDs cannot be checked"
            return
        self.check_uids(rel, row, df)

    def check_uids(self, rel: str, row: dict[str, Any], df: DicomFile) -> None:
        originals = [str(u) for u in row.get("replace") or ()]
        mapping = self.store.get_many("uids", originals) if self.with_mapping else {}
        for name, label, tag in TOP_UIDS:
            old, new = row.get(name), df.top_text(tag)
            if not old or not new or old not in originals:
                continue
            if name == "sop" and mapping:
                continue  # one per file: checked against the mapping, not held in memory
            expected = mapping.get(old)
            if expected == new:
                continue  # as recorded: nothing to keep (memory flat however large the tree)
            if expected is not None:
                self.findings.recorded[old] = expected
            self.findings.pair(label, old, new, rel)
        if not mapping:
            return
        observed: set[str] = set()
        _collect(df, df.elements, self.replaced, observed)
        # originals left in place are leaks: the byte search reports them
        off = len(observed - set(mapping.values()) - set(originals))
        if off:
            self.findings.not_as_recorded[rel] = off


def iter_output(root: Path) -> Iterator[tuple[str, Path]]:
    """Every regular file under ``root`` (hidden and temp files too: they get released).

    Symbolic links to folders are followed (what they hold is released with the tree),
    each folder once: a link back to an ancestor does not loop.
    """
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_file():
                yield path.relative_to(root).as_posix(), path


# --------------------------------------------------------------------------- report


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class Printer:
    def __init__(self, findings: Findings, debug: bool, limit: int) -> None:
        self.f, self.debug, self.limit = findings, debug, limit
        self.lines: list[str] = []

    def shown(self, rel: str) -> str:
        if self.debug or rel not in self.f.path_leaks:
            return rel
        return "(a path holding an identifier: shown with -D)"

    def values(self, found: dict[bytes, str]) -> str:
        by_label = Counter(found.values())
        text = ", ".join(f"{label} x{n}" if n > 1 else label
                         for label, n in sorted(by_label.items()))
        if self.debug:
            text += ": " + ", ".join(
                f"{label}={token.decode('latin-1')!r}"
                for token, label in sorted(found.items(), key=lambda kv: (kv[1], kv[0])))
        return text

    def listing(self, rows: list[str], indent: str = "  ") -> None:
        cap = len(rows) if self.limit <= 0 else self.limit
        self.lines += [f"{indent}{r}" for r in rows[:cap]]
        if len(rows) > cap:
            self.lines.append(f"{indent}... and {len(rows) - cap:,} more (--limit 0 lists all)")

    def render(self) -> list[str]:
        f = self.f
        if f.leaks:
            self.lines.append("LEAK: recorded identifiers outside (0400,0500) in "
                              f"{_n(len(f.leaks), 'file')}:")
            self.listing([f"{self.shown(rel)}: {self.values(found)}"
                          for rel, found in sorted(f.leaks.items())])
        if f.path_leaks:
            self.lines.append("LEAK: recorded identifiers in the names of "
                              f"{_n(len(f.path_leaks), 'output path')}"
                              + ("" if self.debug else " (shown with -D)") + ":")
            if self.debug:
                self.listing([f"{rel}: {self.values(found)}"
                              for rel, found in sorted(f.path_leaks.items())])
            else:
                self.lines.append("  " + self.values(
                    {t: lab for found in f.path_leaks.values() for t, lab in found.items()}))
        split, merged = f.split(), f.merged()
        if split or merged or f.not_as_recorded:
            self.lines.append("UID INCONSISTENT:")
            for label, old, files in split:
                what = f" {old}" if self.debug else ""
                self.lines.append(f"  one original {label}{what} has several new UIDs; "
                                  "not the recorded (or most common) one in:")
                self.listing([self.shown(r) for r in files], "    ")
            for label, new, files in merged:
                what = f" {new}" if self.debug else ""
                self.lines.append(f"  one new {label}{what} stands for several originals, in:")
                self.listing([self.shown(r) for r in files], "    ")
            if f.not_as_recorded:
                self.lines.append("  UIDs that are not the store's recorded replacements, in "
                                  f"{_n(len(f.not_as_recorded), 'file')}:")
                self.listing([f"{self.shown(rel)}: {_n(n, 'UID')}"
                              for rel, n in sorted(f.not_as_recorded.items())], "    ")
        if f.unreadable:
            self.lines.append(f"NOT AUDITED: could not check {_n(len(f.unreadable), 'file')}:")
            self.listing([f"{self.shown(rel)}: {why}" for rel, why in sorted(f.unreadable.items())])
        return self.lines


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Before releasing a de-identified archive: search every file and path "
        "under OUT for the identifiers pass 1 recorded in the store (outside the encrypted "
        "(0400,0500) payload) and check that UIDs were replaced consistently.  Exit 0 when "
        "clean, 1 when something leaks or is inconsistent, 2 on usage errors.",
        allow_abbrev=False,
    )
    parser.add_argument("output", metavar="OUT", help="the output folder of the run")
    parser.add_argument("--store", metavar="PATH",
                        help="the run's store (default: the store anonpipe used for OUT)")
    parser.add_argument("--input", metavar="IN",
                        help="the run's input folder: also search for every value the profile "
                        "removes or replaces in the originals (slower)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                        help=f"files listed per finding (default {DEFAULT_LIMIT}; 0: all)")
    parser.add_argument("-D", "--debug", action="store_true",
                        help="show the values found (patient data!) and paths that hold them")
    return parser


def audit(out: Path, store_path: Path, input_dir: Path | None = None, debug: bool = False,
          limit: int = DEFAULT_LIMIT, stream: Any = None) -> int:
    """Run the audit and print its report to ``stream``; returns the exit code."""
    stream = stream or sys.stdout
    if not out.is_dir():
        raise UsageError(f"output {out} is not a directory")
    if input_dir is not None and not input_dir.is_dir():
        raise UsageError(f"input {input_dir} is not a directory")
    started = time.perf_counter()
    with Store(store_path, read_only=True) as store:
        job = store.job_identity() or {}
        if job.get("mode") != "deidentify":
            raise UsageError(f"store {store_path} holds no de-identification run (its last "
                             f"run was {job.get('mode') or 'none'}): give the store of the -e run")
        profile = run_profile(store)
        moved = job.get("output") not in (None, str(out.resolve()))
        ids = collect_identifiers(store, profile.compiled)
        deep = ""
        if input_dir is not None:
            read, failed = add_input_values(ids, store, input_dir, profile.compiled)
            deep = f", and the removed values of {read:,} originals" + (
                f" ({failed:,} originals unreadable)" if failed else "")
        findings = Auditor(out, store, ids, profile.compiled).run()
    seconds = time.perf_counter() - started

    def say(text: str) -> None:
        print(text, file=stream)

    say(f"{PROG}: {findings.files:,} files ({findings.size / 1e6:,.1f} MB) searched in "
        f"{seconds:,.1f} s for {len(ids):,} identifiers recorded by pass 1 ({ids.uid_count:,} "
        f"UIDs, {len(ids.dates):,} dates, {len(ids.text):,} names and IDs{deep}); "
        f"profile: {profile.description}")
    if moved:
        say(f"{PROG}: note: the store's run wrote to another folder (moved since?)")
    for label, why in sorted(ids.kept.items()):
        say(f"{PROG}: not searched: {label}s, kept (or shifted) on purpose by {why}")
    if findings.not_from_run:
        say(f"{PROG}: note: {_n(findings.not_from_run, 'file')} not written by this run "
            "(searched, UIDs not checked)")
    for line in Printer(findings, debug, limit).render():
        say(line)
    if findings.clean:
        uids = "" if UID_LABEL in ids.kept else ", every original UID has one new UID"
        say(f"{PROG}: clean: no recorded identifier outside (0400,0500){uids}")
        return EXIT_CLEAN
    hint = "" if debug else " (-D shows the values)"
    say(f"{PROG}: do not release {out}: fix the findings above and audit again{hint}")
    return EXIT_LEAK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return of_argparse(exc.code)
    out = Path(args.output)
    try:
        store = Path(args.store) if args.store else job_store_path(out)
        return audit(out, store, Path(args.input) if args.input else None, args.debug,
                     args.limit)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: the output is not audited", file=sys.stderr)
        return EXIT_LEAK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
