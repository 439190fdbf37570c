"""PS3.15 E.1.1 De-identifier, byte-compatible with gdcmanon ``-e``.

Per file: locate the attributes the profile names (every depth), edit only their byte
ranges, put the original top-level elements (whole sequences where a change lies inside)
into one Modified Attributes Sequence item, CMS-encrypt it into the Encrypted Attributes
Sequence (0400,0500) exactly as gdcmanon lays it out, set (0012,0062)/(0012,0063) (and,
for profiles based on PS3.15 Table E.1-1, (0012,0064) with the CID 7050 codes applied and
(0028,0303) when a Longitudinal option keeps dates), rebuild the file meta and zero the
preamble (tasks.filemeta), and clear overlay planes the profile removes from unused pixel
bits (tasks.overlay).  Everything else - pixel data included - keeps its bytes.  The
payload's layout is tasks.payload's; which attribute gets which action is the profile's
business (tasks.profile); the values come from tasks.actions.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

from tasks.actions import (
    DUMMY_MEANING,
    DUMMY_SCHEME,
    FALLBACK,
    CleanContext,
    clean_value,
    code_value_pseudonym,
    date_offset_days,
    dummy_value,
)
from tasks.codes import (
    CODE_ITEM_SCHEME,
    CODE_ITEM_VALUES,
    standard_scheme,
)
from tasks.dicomio import (
    DicomFile,
    Element,
    Encoding,
    Item,
    dictionary_vr,
    element_header,
    item_header,
    pad_value,
    read_dicom,
    sequence_end,
)
from tasks.edit import LOOPS, Chunk, EditPlan, encode_element, render_parts
from tasks.eligibility import refusals
from tasks.engine import Staged, deflate, file_pieces, stage, write_staged
from tasks.errors import DicomFormatError, UnsupportedFileError
from tasks.fileio import FileRange, Piece, Stream, read_range
from tasks.filemeta import is_uid, preamble_data, rebuilt_meta, zeroed_prefix
from tasks.model import Written
from tasks.overlay import cleared_pixel_data, removed_planes_in_pixel_bits
from tasks.payload import (
    build_payload,
    encrypted_attributes_element,
    encrypted_attributes_parts,
    keep_original,
    payload_parts,
    restore_record,
)
from tasks.pixels.clean import (
    CLEAN_PIXEL_CODE,
    CLEAN_PIXEL_METHOD,
    DEFAULT_POLICY,
    PixelResult,
    pixel_step,
    pixels_wanted,
    transfer_syntax_of,
)
from tasks.pixels.preview import write_preview
from tasks.pixeltail import SPLIT_FROM, SplitFile, WholeFile, put_back, read_split
from tasks.profile import (
    DEFAULT_PROFILE,
    UID_RULE,
    Action,
    CompiledProfile,
    Decision,
    ProfileSpec,
    Rule,
    get_profile,
    kept_decision,
)
from tasks.tags import (
    CODE_MEANING,
    CODE_VALUE,
    CODING_SCHEME_DESIGNATOR,
    DEIDENTIFICATION_METHOD,
    DEIDENTIFICATION_METHOD_CODES,
    ENCRYPTED_ATTRIBUTES,
    LONGITUDINAL_MODIFIED,
    MEDIA_SOP_CLASS_UID,
    MEDIA_SOP_INSTANCE_UID,
    PATIENT_ID,
    PATIENT_IDENTITY_REMOVED,
    PIXEL_DATA,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
)
from tasks.uids import DEFAULT_ROOT, instance_uids, new_uid, registered, secret_fingerprint
from tasks.vr import FREE_TEXT_VRS, UNLISTED, Unlisted, conforms

if TYPE_CHECKING:
    from tasks.crypto import EnvelopeEncryptor



#: files whose pixels are cleaned are streamed from this size on
#: (``deidentify_split``): header parsed, frames read from the file one at a time, payload
#: encrypted as it is written, so a worker's memory does not grow with the file.  Read
#: whole instead, a file is held about eight times over (the file, the cleaned copy, the
#: payload, its ciphertext).  The same threshold as the pixel-tail path: streamed was as
#: fast as read whole from the smallest cine measured (1.8 MB, 447 against 450 wall ms) and
#: leaner at every size (69 against 78 MB peak; 79 against 286 MB at 33 MB of pixels:
#: benchmarks/README.md, "The pixel path").
STREAM_PIXELS_FROM = SPLIT_FROM


class DeidentifySettings(NamedTuple):
    """Everything a worker needs to de-identify files (small and picklable)."""

    secret: bytes
    root_uid: str = DEFAULT_ROOT
    #: a profile name (configs/profiles/NAME.yaml), a YAML path, or a validated spec
    profile: str | ProfileSpec = DEFAULT_PROFILE
    encryptor: EnvelopeEncryptor | None = None  # None: irreversible, no (0400,0500)
    #: PS3.15 Options (tasks.profile.OPTIONS names) on top of the profile's own
    options: tuple[str, ...] = ()
    #: process files the profile would refuse for burned-in annotation (pixels not cleaned):
    #: the older name of ``pixels="keep"``
    allow_burned_in: bool = False
    #: what to do with pixels that may show text: clean, refuse or keep (tasks.pixels.clean)
    pixels: str = DEFAULT_POLICY
    #: a folder for before/after PNGs of every file cleaned (a person checks a sample)
    pixels_preview: str | None = None
    #: files this large and larger whose pixels are cleaned are never read whole
    #: (see STREAM_PIXELS_FROM)
    stream_pixels_from: int = STREAM_PIXELS_FROM

    @property
    def pixel_policy(self) -> str:
        return "keep" if self.allow_burned_in else self.pixels

    @property
    def irreversible(self) -> bool:
        return self.encryptor is None

    def compiled_profile(self) -> CompiledProfile:
        return get_profile(self.profile, self.options)


# --------------------------------------------------------------------------- the walk

Trace = list[tuple[int, Element, str, str]]
_SCRUB_RULES = {
    Action.D: Rule("", "", "", "", "D", "", "free text inside a sequence whose row is D or "
                   "U*: dummy"),
    Action.C: Rule("", "", "", "", "C", "", "free text inside a sequence whose row is C: "
                   "cleaned"),
}


_kept = kept_decision


def _private_vr_problem(el: Element, listed: str, buf: bytes) -> str | None:
    """Why a private element in a slot of the safe list (PS3.15 Table E.3.10-1) is not what
    the list says the slot holds, or None.  An explicit VR must be the listed one; a value
    of unknown VR (implicit files) must conform to it.  Never quotes the value."""
    allowed = listed.split("/") if listed else []
    if el.items is not None or el.vr == "SQ":
        return None if "SQ" in allowed else f"a sequence where the list has {listed or 'no VR'}"
    if el.vr != "UN":
        if el.vr in allowed or (not listed and el.vr not in UNLISTED):
            return None  # the listed VR, or a number where the list gives none
        return f"VR {el.vr} where the list has {listed or 'no VR'}"
    if not allowed:
        return "a value of unknown VR where the list gives none"
    if el.undefined:
        return "an undefined length"
    if "SQ" not in allowed and any(conforms(vr, el.value(buf)) for vr in allowed):
        return None
    return f"a value that is not {listed}"


def _lazy_date_offset(secret: bytes, df: DicomFile) -> Callable[[], int]:
    """The patient's whole-day date shift (HMAC of the original Patient ID), computed on
    first use.  A closure over ``df``, not a bound method: the deidentifier holds it
    (through its CleanContext), and a method would make a reference cycle that keeps
    each file's whole element tree alive until the cyclic GC runs (measured: ~150
    objects per file, and collections that cost ~8 % of pass 2 in memory)."""
    memo: list[int] = []

    def offset() -> int:
        if not memo:
            memo.append(date_offset_days(secret, df.top_value(PATIENT_ID) or b""))
        return memo[0]

    return offset


#: what one top-level memo holds at most (then it starts again: unique values, such as
#: each file's SOP Instance UID, must not make a long run's memory grow), and the longest
#: element it holds (a large value is rare, and would cost its copy to look up)
_MEMO_ENTRIES = 4096
_MEMO_ELEMENT_MAX = 256
_MISS = bytes(bytearray(b"not yet"))  # a new object, told from any value by identity
_TOP_MEMOS: dict[tuple[object, bytes, str, bool, bool], dict[bytes, bytes | None]] = {}


def _top_memo(resolver: object, settings: DeidentifySettings, enc: Encoding
              ) -> dict[bytes, bytes | None]:
    """The memo of top-level :meth:`_Deidentifier._apply` results for files of one SOP
    Class (``resolver``), one encoding and one secret and root: the study, series and frame
    of reference UIDs, the patient's names and IDs, the emptied values of a study repeat in
    every file of it, and each costs an HMAC or an encoding otherwise.  Every input of
    ``_apply`` but the clean rules' (Action C: the patient's date offset, excluded) is in
    the key: the element's bytes (tag, VR, value) and the decision they get."""
    key = (resolver, settings.secret, settings.root_uid, enc.little, enc.implicit)
    memo = _TOP_MEMOS.get(key)
    if memo is None:
        if len(_TOP_MEMOS) >= 64:
            _TOP_MEMOS.clear()
        memo = _TOP_MEMOS[key] = {}
    return memo


def _load_sort() -> Callable[..., tuple[list[Element], list[Element] | None]] | None:
    """The compiled loop of :meth:`_Deidentifier.walk`, when tasks.edit has the compiled
    loops: it applies, for each element of a data set, the outcomes that follow from a
    decision the resolver has cached (kept, removed at the top level, a memoized value)
    and hands every other element back, in order, to the Python loop."""
    if LOOPS is None:
        return None
    LOOPS.setup_sort(Decision, Action.K, Action.X, Action.C, _MEMO_ELEMENT_MAX)
    return cast(Callable[..., tuple[list[Element], list[Element] | None]], LOOPS.sort)


_SORT = _load_sort()


class _Deidentifier:
    """One file's edit plan, built by walking the element tree.

    ``trace`` (for ``--explain``) receives (depth, element, action, reason) for every
    element visited, from the same decisions that build the plan.
    """

    def __init__(self, df: DicomFile, profile: CompiledProfile, settings: DeidentifySettings,
                 trace: Trace | None = None):
        self.df = df
        self.buf = df.body
        self.profile = profile
        self.settings = settings
        self.plan = EditPlan()
        self.payload: dict[int, Element] = {}  # top-level originals, by tag
        self.uid_cache: dict[bytes, bytes] = {}
        self.resolver = profile.resolver(df.top_text(SOP_CLASS_UID))
        self.private = profile.private_rule is not None
        self.trace = trace
        self.known_safe_only = profile.known_safe_only
        #: results of :meth:`_apply` at the top level, by the element's bytes (shared by
        #: the files of a run: see _top_memo); None with a trace (every decision is said)
        self.memo = (_top_memo(self.resolver, settings, df.enc) if trace is None else None)

    @functools.cached_property
    def clean(self) -> CleanContext:
        """What the clean rules (Action C) need: made for the files that have such a row."""
        secret = self.settings.secret
        return CleanContext(secret, _lazy_date_offset(secret, self.df), self.profile.clean_allow)

    def walk(self, elements: list[Element], enc: Encoding, path: list[Element | Item],
             parent: int = 0, scrub: Action | None = None) -> None:
        """Visit ``elements`` (one data set) and their items at every depth.

        ``scrub`` is set inside a sequence kept by a D, U* (Action.D) or C (Action.C) row:
        free text the table does not name is then replaced by a dummy, or cleaned, because
        the table leaves such content (e.g. an SR Text Value) to its sequence's row.
        """
        # the per-element path is inlined (decision cache, removal, _record): it runs for
        # every element of every file; an attribute no row names costs one more dict
        # lookup, by its VR (tasks.vr: numbers, codes and times miss it and are kept)
        kinds = self.profile.scrub_vrs if scrub is not None else self.profile.unlisted_vrs
        code = (self._code_scheme(elements) if scrub is not None or self.known_safe_only
                else None)
        resolver = self.resolver
        decide = resolver.decide
        cached = resolver._cache
        key_base = parent << 32
        trace = self.trace
        private = self.private
        replace = self.plan.replace
        payload = self.payload
        top = path[0] if path else None
        remove = Action.X
        keep = Action.K
        clean = Action.C
        memo = self.memo if top is None and scrub is None and code is None else None
        buf = self.buf
        privates: list[Element] | None = None
        visit = elements
        if _SORT is not None and trace is None:
            # the compiled loop settles what a cached decision settles (tasks/_editloops.c)
            visit, privates = _SORT(elements, cached, key_base, private, kinds, top is None,
                                    memo, buf, payload, replace)
        for el in visit:
            tag = el.tag
            if tag & 0x10000 and private:
                if privates is None:
                    privates = []
                privates.append(el)
                continue
            try:
                decision = cached[key_base | tag]
            except KeyError:
                decision = decide(tag, parent)
            if decision is None:
                kind = kinds.get(el.vr)
                if kind is not None:
                    decision = self._unlisted(el, parent, kind, scrub, code)
            if decision is None or decision.action is keep:
                if trace is not None:
                    trace.append((len(path) // 2, el, "K", decision.reason() if decision
                                  else self._kept_why(el)))
                if el.items:
                    self._enter(el, enc, path, scrub)
                continue
            if decision.action is remove and trace is None:
                if top is None:
                    payload[tag] = el
                    replace[el.start] = b""
                else:
                    self._record(el, b"", path)
                continue
            if (memo is not None and el.items is None and decision.action is not clean
                    and el.end - el.start <= _MEMO_ELEMENT_MAX):
                # a top-level value's result is a function of its bytes, its decision (a
                # function of the same bytes here) and the run: computed once per run
                raw = buf[el.start:el.end]
                new = memo.get(raw, _MISS)
                if new is _MISS:
                    new = self._apply(el, decision, enc)[0]
                    if len(memo) >= _MEMO_ENTRIES:
                        memo.clear()
                    memo[raw] = new
                if new is not None:
                    payload[tag] = el
                    replace[el.start] = new
                continue
            new, enter = self._apply(el, decision, enc)
            if trace is not None:
                trace.append((len(path) // 2, el, self._label(decision, new, enter),
                              decision.reason()))
            self._record(el, new, path)
            if enter and el.items:
                inner = Action.C if decision.action is Action.C else Action.D
                self._enter(el, enc, path, Action.D if scrub is Action.D else inner)
        if privates:
            self._private(privates, enc, path)

    def _scrub_decision(self, el: Element, scrub: Action) -> Decision:
        rule = _SCRUB_RULES[scrub]
        return Decision(scrub, rule, None, "", Action.Z)

    def _kept_why(self, el: Element) -> str:
        """Why an attribute no rule acts on is kept (``--explain`` only)."""
        if not self.profile.unlisted:
            return "not in the profile: kept"
        kind = UNLISTED.get(el.vr, Unlisted.KEEP)
        if el.vr == "SQ" or el.items is not None:
            return "not in Table E.1-1: sequence kept, its items walked"
        if kind == Unlisted.KEEP:
            return f"not in Table E.1-1: VR {el.vr} (a number, code, time or age) kept"
        return (f"not in Table E.1-1: VR {el.vr} kept (PS3.15 E.1.1; the strict profile keeps "
                "only what is known safe)")

    def _code_scheme(self, elements: list[Element]) -> bool | None:
        """For a code item (PS3.3 Table 8.8-1): whether its scheme is a standard one; None
        for any other data set."""
        for el in elements:
            if el.tag >= CODING_SCHEME_DESIGNATOR:
                if el.tag == CODING_SCHEME_DESIGNATOR and not el.undefined:
                    return standard_scheme(el.value(self.buf))
                return None
        return None

    def _unlisted(self, el: Element, parent: int, kind: str, scrub: Action | None,
                  code: bool | None) -> Decision | None:
        """The decision for an attribute no row of the profile names, by its VR's kind
        (tasks.vr.Unlisted): the rules past Table E.1-1 (PS3.15 E.1.1)."""
        tag = el.tag
        rules = self.profile.unlisted
        if kind == Unlisted.UID:
            # (attributes naming a definition are kept by the resolver: tasks.profile)
            rule = rules[kind]
            if rule is None:
                return _kept("not in Table E.1-1: UIDs kept (retain_uids)")
            if el.undefined or not instance_uids(el.value(self.buf)):
                return _kept("not in Table E.1-1: a UID registered in PS3.6 Annex A")
            return self.resolver.by_rule(tag, parent, rule)
        if kind == Unlisted.NAME:
            if not el.length:
                return None
            return self.resolver.by_rule(tag, parent, rules[kind] or _SCRUB_RULES[Action.D])
        if kind == Unlisted.DATE:
            rule = rules[kind]
            if rule is None:
                return _kept("not in Table E.1-1: dates kept (retain_long_full_dates)")
            return self.resolver.by_rule(tag, parent, rule)
        # free text and opaque bytes
        if el.items is not None:
            return None  # a UN sequence (CP-246): its items are walked, each by its own rule
        if el.vr == "UN" and not tag & 0x10000:
            # a standard attribute its writer encoded as UN: the rule of its real VR
            real = UNLISTED.get(dictionary_vr(tag), Unlisted.KEEP)
            if real == Unlisted.KEEP or real not in rules:
                return None
            if real != Unlisted.TEXT:
                return self._unlisted(el, parent, real, scrub, code)  # UID, name, date
            kind = real
        if code is not None:
            if tag in CODE_ITEM_SCHEME:
                return _kept("names the coding scheme of a code item")
            if tag in CODE_ITEM_VALUES:
                if code:
                    return _kept("code of a standard coding scheme (PS3.16 8): safe")
                local = rules["code"]
                assert local is not None
                return self.resolver.by_rule(tag, parent, local)
        if scrub is not None and kind == Unlisted.TEXT:
            return self._scrub_decision(el, scrub)
        rule = rules.get(kind)
        if rule is None:
            return None
        if tag in self.profile.spec.known_safe:
            return _kept(f"not in Table E.1-1: known safe (profile {self.profile.name})")
        return self.resolver.by_rule(tag, parent, rule)

    def _enter(self, el: Element, enc: Encoding, path: list[Element | Item],
               scrub: Action | None = None) -> None:
        sub = el.item_enc or enc
        assert el.items is not None
        for item in el.items:
            self.walk(item.elements, sub, path + [el, item], el.tag, scrub)

    def _record(self, el: Element, new: bytes | None, path: list[Element | Item]) -> None:
        top = path[0] if path else el
        assert isinstance(top, Element)  # a path starts with a top-level element
        if path or new is not None:
            self.payload[top.tag] = top
        if new is not None:
            self.plan.set(el, new, path)

    @staticmethod
    def _label(decision: Decision, new: bytes | None, enter: bool) -> str:
        action = decision.action.value
        if new == b"":
            return "X"
        if new is None and not enter:
            return f"{action} (unchanged)"
        if enter:
            return f"{action} (items walked)"
        return action

    def _apply(self, el: Element, decision: Decision, enc: Encoding) -> tuple[bytes | None, bool]:
        """New encoded bytes for ``el`` (None: unchanged, b"": removed) and whether the
        walk goes on into its items."""
        action = decision.action
        if action is Action.X:
            return b"", False
        if el.items is not None or el.vr == "SQ":
            if action is Action.Z or (action is Action.D and not self.profile.spec.table):
                if el.items == [] or (el.length == 0):
                    return None, False
                header = self.buf[el.start:el.value_start]
                if el.undefined:
                    return header + sequence_end(enc), False
                return _zero_length_header(header, enc), False
            if action is Action.D and decision.rule.keyword.endswith("CodeSequence"):
                return self._dummy_code_sequence(el, enc), False
            return None, True  # D, C, U (U*): keep the items, their attributes get their rows
        if el.undefined:
            return None, False  # encapsulated data under a text action: leave to the profile author
        if action is Action.C:
            return self._clean(el, decision, enc)
        value = el.value(self.buf)
        if action is Action.Z:
            if el.length == 0:
                return None, False
            return encode_element(el.tag, el.vr, b"", enc), False
        if decision.rule is UID_RULE:
            return encode_element(el.tag, el.vr, self.map_instance_uids(value), enc), False
        if action is Action.U or (action is Action.D and el.vr == "UI"):
            if not value.rstrip(b"\0 "):
                return None, False
            return encode_element(el.tag, el.vr, self.map_uids(value), enc), False
        if action is Action.D:
            return encode_element(el.tag, el.vr, dummy_value(self.settings.secret, el.vr, value),
                                  enc), False
        return None, False

    def _clean(self, el: Element, decision: Decision, enc: Encoding) -> tuple[bytes | None, bool]:
        if decision.rule.keyword in ("curve", "overlay_data") and el.vr not in FREE_TEXT_VRS:
            return None, False  # Clean Graphics: bitmaps, codes, numbers kept (tasks.actions)
        value = el.value(self.buf)
        if not value.rstrip(b"\0 "):
            return None, False
        result = clean_value(self.clean, el.tag, el.vr, value, decision.type)
        if result is FALLBACK:
            fallback = Decision(decision.fallback, decision.rule, decision.type,
                                decision.note, Action.Z)
            return self._apply(el, fallback, enc)
        if result is None:
            return None, False
        assert isinstance(result, bytes)
        if result == value.rstrip(b"\0 ") or pad_value(result, el.vr) == value:
            return None, False
        return encode_element(el.tag, el.vr, result, enc), False

    def _dummy_code_sequence(self, el: Element, enc: Encoding) -> bytes:
        """One code item (PS3.3 Table 8.8-1) standing in for an identifying code sequence."""
        original = b""
        for item in el.items or ():
            for sub in item.elements:
                if sub.tag == CODE_VALUE and not sub.undefined:
                    original = sub.value(self.buf)
                    break
            break
        body = (encode_element(CODE_VALUE, "SH",
                               code_value_pseudonym(self.settings.secret, original), enc)
                + encode_element(CODING_SCHEME_DESIGNATOR, "SH", DUMMY_SCHEME, enc)
                + encode_element(CODE_MEANING, "LO", DUMMY_MEANING, enc))
        items = item_header(len(body), enc) + body
        header = element_header(el.tag, "SQ", len(items), enc)
        return header + items

    def _private(self, privates: list[Element], enc: Encoding,
                 path: list[Element | Item]) -> None:
        """PS3.15 E.1-1 "Private Attributes": remove, except safe ones (Retain Safe Private)
        and blocks of creators the profile keeps; creators of emptied blocks go too."""
        profile = self.profile
        rule = profile.private_rule
        assert rule is not None
        if self.trace is None and not profile.keep_creators and not profile.safe_private:
            self._remove_all(privates, path)  # no block can be kept: every element goes
            return
        creators: dict[int, str] = {}
        for el in privates:
            elem = el.tag & 0xFFFF
            if 0x10 <= elem <= 0xFF and not el.undefined:
                creators[el.tag] = el.value(self.buf).strip(b"\0 ").decode("latin-1")
        kept_blocks: set[int] = set()
        kept_groups: set[int] = set()
        later: list[Element] = []
        trace = self.trace
        for el in privates:
            tag = el.tag
            group, elem = tag >> 16, tag & 0xFFFF
            if elem <= 0xFF:
                later.append(el)
                continue
            block = (group << 16) | (elem >> 8)
            creator = creators.get(block) if elem >> 8 >= 0x10 else None
            why = None
            gone = f"{rule.why} (creator {creator!r})"
            vr = el.vr
            if creator is not None:
                if creator in profile.keep_creators:
                    why = f"profile {profile.name} keeps private creator {creator!r}"
                else:
                    listed = profile.safe_private.get((group, creator, elem & 0xFF))
                    problem = (None if listed is None
                               else _private_vr_problem(el, listed, self.buf))
                    if listed is None:
                        pass
                    elif problem is None:
                        why = f"{rule.why}: safe private (Table E.3.10-1, {creator!r})"
                        vr = listed.split("/")[0] if vr == "UN" and listed else vr
                    else:
                        gone = (f"{rule.why}: a safe private slot ({creator!r}) holding "
                                f"{problem}: removed")
            if why is not None:
                kept_blocks.add(block)
                kept_groups.add(group)
                kind = profile.unlisted_vrs.get(vr)
                decision = (self._unlisted(el, 0, kind, None, None)
                            if kind in (Unlisted.UID, Unlisted.NAME, Unlisted.DATE) else None)
                if decision is not None and decision.action is not Action.K:
                    # a kept private UID, name or date follows the rules of its VR
                    new, _enter = self._apply(el, decision, enc)
                    if trace is not None:
                        trace.append((len(path) // 2, el, self._label(decision, new, False),
                                      f"{why}; {decision.reason()}"))
                    self._record(el, new, path)
                    continue
                if trace is not None:
                    trace.append((len(path) // 2, el, "K", why))
                if el.items:
                    self._enter(el, enc, path)
                continue
            if trace is not None:
                trace.append((len(path) // 2, el, "X", gone))
            self._record(el, b"", path)
        for el in later:
            group, elem = el.tag >> 16, el.tag & 0xFFFF
            keep = (group in kept_groups) if elem == 0 else (el.tag in kept_blocks)
            if trace is not None:
                what = "group length" if elem == 0 else (
                    "private creator" if elem >= 0x10 else "reserved private element")
                trace.append((len(path) // 2, el, "K" if keep else "X",
                              f"{rule.why}: {what}, " + ("its block keeps elements" if keep
                                                         else "nothing of its block is kept")))
            if not keep:
                self._record(el, b"", path)

    def _remove_all(self, elements: list[Element], path: list[Element | Item]) -> None:
        """:meth:`_record` of a removal for each of ``elements`` (the common private case)."""
        replace = self.plan.replace
        if path:
            top = path[0]
            assert isinstance(top, Element)
            self.payload[top.tag] = top
            dirty = self.plan.dirty
            for node in path:
                dirty.add(node.start)
            for el in elements:
                replace[el.start] = b""
        else:
            payload = self.payload
            for el in elements:
                payload[el.tag] = el
                replace[el.start] = b""

    def map_instance_uids(self, value: bytes) -> bytes:
        """:meth:`map_uids` of the UIDs not registered in PS3.6 Annex A (kept as they are)."""
        parts = value.rstrip(b"\0 ").split(b"\\")
        return b"\\".join(
            part if registered(part.strip(b"\0 ").decode("ascii", "replace")) is not None
            else self.map_uids(part) for part in parts)

    def map_uids(self, value: bytes) -> bytes:
        cached = self.uid_cache.get(value)
        if cached is None:
            parts = value.rstrip(b"\0 ").split(b"\\")
            cached = b"\\".join(
                new_uid(self.settings.secret, self.settings.root_uid,
                        p.strip(b"\0 ").decode("ascii", "replace")).encode()
                if p.strip(b"\0 ") else b""
                for p in parts
            )
            self.uid_cache[value] = cached
        return cached


def _zero_length_header(header: bytes, enc: Encoding) -> bytes:
    if len(header) == 12:
        return header[:8] + struct.pack(enc.endian + "I", 0)
    return header[:4] + struct.pack(enc.endian + "I", 0)


# --------------------------------------------------------------------------- file level


def check_deidentifiable(df: DicomFile) -> None:
    """Refuse files we must not process (gdcmanon's pre-checks, with reasons:
    tasks.eligibility)."""
    found = refusals(df)
    if found:
        raise UnsupportedFileError(found[0].value)


@functools.lru_cache(maxsize=64)
def _markers(profile: CompiledProfile, enc: Encoding, pixels: bool = False
             ) -> tuple[bytes, bytes, bytes | None]:
    """(0012,0062) YES, (0012,0063) and (0012,0064) (None: the profile adds none), encoded
    once per profile and encoding (the profile is compiled once and held: keyed by it);
    ``pixels``: Clean Pixel Data was applied too (a second method value, code 113101)."""
    method = profile.method.encode() + (b"\\" + CLEAN_PIXEL_METHOD if pixels else b"")
    return (encode_element(PATIENT_IDENTITY_REMOVED, "CS", b"YES", enc),
            encode_element(DEIDENTIFICATION_METHOD, "LO", method, enc),
            _method_codes(profile, enc, pixels))


def _method_codes(profile: CompiledProfile, enc: Encoding, pixels: bool = False) -> bytes | None:
    """(0012,0064) De-identification Method Code Sequence: one CID 7050 item per code."""
    codes = profile.method_codes()
    if not codes:
        return None
    if pixels:
        codes = [*codes, CLEAN_PIXEL_CODE]
    items = b""
    for value, scheme, meaning in codes:
        body = (encode_element(CODE_VALUE, "SH", value.encode(), enc)
                + encode_element(CODING_SCHEME_DESIGNATOR, "SH", scheme.encode(), enc)
                + encode_element(CODE_MEANING, "LO", meaning.encode(), enc))
        items += item_header(len(body), enc) + body
    return element_header(DEIDENTIFICATION_METHOD_CODES, "SQ", len(items), enc) + items


def deidentify_bytes(data: bytes, settings: DeidentifySettings,
                     trace: Trace | None = None) -> bytes:
    """De-identify one file held in memory; returns the new file bytes.

    ``trace`` (``--explain``) collects every decision; the burned-in check is then skipped.
    """
    return b"".join(deidentify_parts(data, settings, trace))


def deidentify_parts(data: bytes, settings: DeidentifySettings,
                     trace: Trace | None = None,
                     cleaned: list[PixelResult] | None = None) -> list[Chunk]:
    """:func:`deidentify_bytes` as the pieces of the new file, in order (pixel data as a
    view of ``data``'s buffer, not a copy: see ``tasks.fileio.write_atomic``).  What Clean
    Pixel Data did, if anything, is appended to ``cleaned``."""
    profile = settings.compiled_profile()
    df = read_dicom(data, private_runs=_private_runs(profile, trace))
    return _deidentified(df, data, profile, settings, trace, cleaned=cleaned)


def deidentify_split(fd: int, size: int, settings: DeidentifySettings,
                     cleaned: list[PixelResult] | None = None
                     ) -> list[Piece] | WholeFile | None:
    """:func:`deidentify_parts` of a large file open at ``fd``: everything but the pixel
    data read and parsed, the pixel data left in the file as a range for the writer to
    copy (``tasks.pixeltail``); or, when its pixels are cleaned and the file is at
    least ``settings.stream_pixels_from`` bytes, read from the file frame by frame as the
    output is written (:func:`_streamed_clean`).  None (or the file's bytes, when already
    read) when the file does not split: de-identify it whole."""
    profile = settings.compiled_profile()
    before = os.fstat(fd)
    split = read_split(fd, size, _private_runs(profile, None))
    if not isinstance(split, SplitFile):
        return split
    df = split.df
    if _overlay_planes(df, profile):
        return None  # the pixel words change (tasks.overlay): read whole
    if pixels_wanted(df, profile, settings.pixel_policy):
        if size < settings.stream_pixels_from:
            return None  # cleaned in memory: read whole
        return _streamed_clean(split, before, profile, settings, cleaned)
    if size < SPLIT_FROM:
        return None  # split only to stream cleaned pixels (a lowered stream_pixels_from)
    marker = bytes(bytearray(b"pixel data"))  # a new object, found again by identity
    return put_back(_deidentified(df, b"", profile, settings, None, (split.at, marker)),
                    marker, split.pixels)


def _streamed_clean(split: SplitFile, before: os.stat_result, profile: CompiledProfile,
                    settings: DeidentifySettings, cleaned: list[PixelResult] | None
                    ) -> list[Piece] | None:
    """:func:`deidentify_parts` of a large file whose pixels are cleaned, never read whole:
    the OCR sample is read from the file frame by frame, and the output's pieces hold two
    streams that read it again as they are written: the encrypted payload (its original
    Pixel Data) and the cleaned Pixel Data (native: frame by frame; encapsulated: the new
    fragments, each made from its frame read from the file).  The file must not change
    meanwhile (what was read for OCR must be what is written): checked at the end.  None:
    not the case streamed (a frame in several fragments, a profile acting on Pixel Data
    itself)."""
    from tasks.pixels.codecs import streams_from_file  # numpy loads with the first file cleaned

    df = split.df
    if not streams_from_file(df, transfer_syntax_of(df), split.pixels):
        return None  # frames spread over several fragments: read whole
    decision = profile.resolver(df.top_text(SOP_CLASS_UID)).decide(PIXEL_DATA, 0)
    if decision is not None and decision.action is not Action.K:
        return None
    found: list[PixelResult] = []
    pieces = _deidentified(df, b"", profile, settings, None, None, found, split.pixels)
    stream = found[0].elements.get(PIXEL_DATA) if found else None
    if not isinstance(stream, Stream) or not any(piece is stream for piece in pieces):
        return None
    if cleaned is not None:
        cleaned += found
    out: list[Piece] = list(pieces)
    out[out.index(stream)] = Stream(stream.length, lambda: chain(
        stream.chunks(), _unchanged(split.pixels.fd, before)))
    return out


def _unchanged(fd: int, before: os.stat_result) -> Iterator[bytes]:
    """Nothing; an error when the file open at ``fd`` changed since ``before``."""
    after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
            before.st_size, before.st_mtime_ns, before.st_ctime_ns):
        raise DicomFormatError("the file changed while it was read (during the run)")
    yield from ()


def _encrypted_stream(encryptor: EnvelopeEncryptor, parts: list[bytes | FileRange],
                      enc: Encoding) -> Stream:
    """(0400,0500) holding the envelope of ``parts`` (the payload, its original Pixel
    Data a range of the input), encrypted as it is written: the same bytes as
    :func:`~tasks.payload.encrypted_attributes_element` of the whole payload encrypted."""
    envelope = encryptor.open(sum(map(len, parts)))
    head, tail = encrypted_attributes_parts(envelope.size, enc)

    def chunks() -> Iterator[bytes]:
        yield head + envelope.head
        for part in parts:
            if isinstance(part, FileRange):
                for data in read_range(part):
                    yield envelope.update(data)
            else:
                yield envelope.update(part)
        yield envelope.finish() + tail

    return Stream(len(head) + envelope.size + len(tail), chunks)


def _private_runs(profile: CompiledProfile, trace: Trace | None) -> bool:
    """Every private element goes, and identically: read them as runs (tasks.dicomio)."""
    return (trace is None and profile.private_rule is not None and not profile.keep_creators
            and not profile.safe_private)


def _deidentified(df: DicomFile, data: bytes, profile: CompiledProfile,
                  settings: DeidentifySettings, trace: Trace | None,
                  stand_in: tuple[int, bytes] | None = None,
                  cleaned: list[PixelResult] | None = None,
                  source: FileRange | None = None) -> list[Chunk]:
    """The pieces of ``df`` de-identified (``data``: the file's bytes, needed for deflated
    files only).  ``stand_in``: the body offset of a Pixel Data stand-in
    (``tasks.pixeltail``) and the object to render in its place, a piece of its own.
    ``source``: the Pixel Data element in the file, whose pixels are cleaned: the cleaned
    element and the encrypted payload are then streams made as the output is written."""
    check_deidentifiable(df)
    pixels = (pixel_step(df, profile, settings.pixel_policy, source) if trace is None
              else None)
    work = _Deidentifier(df, profile, settings, trace)
    work.walk(df.elements, df.enc, [])
    added: dict[int, bytes] = {}
    if pixels is not None:
        _take_cleaned_pixels(df, work, pixels, added, settings, cleaned)
    if trace is None:
        _clear_overlay_planes(df, work)
    enc = df.enc
    plan = work.plan
    if profile.dates is not None and profile.spec.table:
        added[LONGITUDINAL_MODIFIED] = encode_element(
            LONGITUDINAL_MODIFIED, "CS",
            b"MODIFIED" if profile.dates == "modified" else b"UNMODIFIED", enc)
    # PS3.15 E.1.1: every de-identified instance says so, with or without a payload
    removed, method, codes = _markers(profile, enc, pixels is not None)
    plan.insert[PATIENT_IDENTITY_REMOVED] = removed
    plan.insert[DEIDENTIFICATION_METHOD] = method
    if codes is not None:
        added[DEIDENTIFICATION_METHOD_CODES] = codes
    if settings.irreversible:
        old_codes = df.top(DEIDENTIFICATION_METHOD_CODES)
        if codes is None and old_codes is not None:
            plan.set(old_codes, b"", [])  # no payload keeps it, and it was not ours
    else:
        # (0008,0018) always travels: -d (ours and gdcmanon's) requires it, even when
        # --retain-uids keeps it unchanged
        for tag in (PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD, SOP_INSTANCE_UID):
            el = df.top(tag)
            if el is not None:
                work.payload[tag] = el
    for tag, encoded in added.items():
        el = df.top(tag)
        if el is not None:
            work.payload[tag] = el
        plan.insert[tag] = encoded
    if stand_in is not None and _keeps_pixel_data(work) and stand_in[0] not in plan.replace:
        plan.replace[stand_in[0]] = stand_in[1]
    # with encryption the body is rendered once the payload is known; rendering it first
    # too only tells which top-level group lengths (gggg,0000) the edits change
    body: list[Chunk] = []
    if settings.irreversible or not all(map(_ELEMENT_NUMBER, _tags(df))):
        body = render_parts(df.body, df.elements, plan, enc)
    meta = _new_meta(df, work)
    prefix = zeroed_prefix(df.raw_prefix)
    if not settings.irreversible:
        assert settings.encryptor is not None
        for el in plan.changed_group_lengths:
            work.payload[el.tag] = el
        originals = [work.payload[tag] for tag in sorted(work.payload)]
        new_tags = sorted(tag for tag in added if df.top(tag) is None)
        record = _restore_record(df, data, new_tags)
        if source is None:
            payload = build_payload(df.body, originals, enc) + record
            cms = settings.encryptor.encrypt(payload)
            plan.insert[ENCRYPTED_ATTRIBUTES] = encrypted_attributes_element(cms, enc)
        else:  # the original pixel data is read from the file as it is encrypted
            parts = [*payload_parts(df.body, originals, enc, source), record]
            plan.insert[ENCRYPTED_ATTRIBUTES] = cast(
                bytes, _encrypted_stream(settings.encryptor, parts, enc))
        plan.changed_group_lengths.clear()
        body = render_parts(df.body, df.elements, plan, enc)
    return file_pieces(df, prefix, meta, body)


_ELEMENT_NUMBER = (0xFFFF).__and__  # zero for a group length (gggg,0000)


def _keeps_pixel_data(work: _Deidentifier) -> bool:
    """Whether the profile keeps top-level Pixel Data as it is.  Only then may a stand-in
    take its place (tasks.pixeltail): any other action would act on the stand-in's empty
    value instead of the pixels (Z would see nothing to empty), so the file is read whole."""
    decision = work.resolver.decide(PIXEL_DATA, 0)
    return decision is None or decision.action is Action.K


def _tags(df: DicomFile) -> list[int]:
    if df.tags is None:
        df.tags = [el.tag for el in df.elements]
    return df.tags


def _overlay_planes(df: DicomFile, profile: CompiledProfile) -> list[int]:
    """The overlay groups in unused Pixel Data bits that ``profile`` removes."""
    return removed_planes_in_pixel_bits(
        df, profile.resolver(df.top_text(SOP_CLASS_UID)).decide)


def _take_cleaned_pixels(df: DicomFile, work: _Deidentifier, pixels: PixelResult,
                         added: dict[int, bytes], settings: DeidentifySettings,
                         cleaned: list[PixelResult] | None) -> None:
    """Clean Pixel Data's elements into the edit: the new Pixel Data replaces the old
    (which goes into the payload; overlay bits are then cleared in the new words), the
    others ((0028,0301) NO, lossy attributes) are set like the engine's own additions."""
    for tag, encoded in pixels.elements.items():
        el = df.top(tag)
        if tag == PIXEL_DATA and el is not None:
            if el.start in work.plan.replace:
                continue  # the profile acts on Pixel Data itself: its action stands
            work.plan.set(el, encoded, [])
            keep_original(work.payload, el)
        else:
            added[tag] = encoded
    if cleaned is not None:
        cleaned.append(pixels)
    if settings.pixels_preview:
        uid = work.map_uids(df.top_value(SOP_INSTANCE_UID) or b"").rstrip(b"\0 ").decode()
        write_preview(settings.pixels_preview, uid, pixels)


def _clear_overlay_planes(df: DicomFile, work: _Deidentifier) -> None:
    """Removed overlay planes must not stay readable in the pixel words (tasks.overlay):
    their bits are cleared, the original Pixel Data goes into the payload."""
    if not removed_planes_in_pixel_bits(df, work.resolver.decide):
        return
    pixels = df.top(PIXEL_DATA)
    if pixels is None:
        return  # no pixel words to clear
    current = work.plan.replace.get(pixels.start)
    if current == b"":
        return  # the profile removes Pixel Data itself
    header = df.body[pixels.start:pixels.value_start]
    pixels, value = cleared_pixel_data(
        df, None if current is None else current[len(header):])
    if current is None and value == pixels.value(df.body):
        return  # nothing was set in those bits
    work.plan.set(pixels, header + value, [])
    keep_original(work.payload, pixels)


def _restore_record(df: DicomFile, original: bytes, added: list[int] | None = None) -> bytes:
    """What re-identification cannot derive, for a byte-identical restore: the original
    file meta and preamble (-e writes new ones, PS3.15 E.1.1), the original deflate stream
    when our compressor would not reproduce it, and the tags -e added."""
    stream = None
    if df.deflated:
        stream = original[len(df.raw_prefix) + len(df.meta_bytes):]
        if deflate(df.body) == stream:
            stream = None
    return restore_record(meta=df.meta_bytes or None, preamble=preamble_data(df.raw_prefix),
                          deflated=stream, added=added)


def _new_meta(df: DicomFile, work: _Deidentifier) -> bytes:
    """The file meta of the output (tasks.filemeta): (0002,0002) and (0002,0003) as the
    output's (0008,0016) and (0008,0018); a file without meta gets none."""
    if not df.meta:
        return df.meta_bytes
    syntax = df.transfer_syntax.encode("ascii", "replace")
    if not is_uid(syntax):
        raise UnsupportedFileError("the transfer syntax (0002,0010) is not a UID")
    plan = work.plan
    sop_class = _output_value(df, plan, SOP_CLASS_UID)
    if sop_class is None:
        sop_class = _meta_value(df, MEDIA_SOP_CLASS_UID)
    instance = _output_value(df, plan, SOP_INSTANCE_UID)
    if instance is None:  # no (0008,0018): the original (0002,0003) as the profile has it
        instance = _meta_value(df, MEDIA_SOP_INSTANCE_UID)
        decision = work.resolver.decide(SOP_INSTANCE_UID, 0)
        if instance and decision is not None and decision.action is not Action.K:
            instance = work.map_uids(instance)
    return rebuilt_meta(sop_class, instance, df.transfer_syntax)


def _output_value(df: DicomFile, plan: EditPlan, tag: int) -> bytes | None:
    """The value a top-level UI element has in the output (None: absent or removed)."""
    el = df.top(tag)
    if el is None or el.undefined:
        return None
    new = plan.replace.get(el.start)
    if new is None:
        return el.value(df.body)
    return new[8:] if new else None  # a UI element's header is 8 bytes in every encoding


def _meta_value(df: DicomFile, tag: int) -> bytes | None:
    el = df.meta_element(tag)
    return None if el is None else el.value(df.meta_bytes)


class Deidentify(NamedTuple):
    """The per-file operation the pipeline ships to workers."""

    settings: DeidentifySettings

    @property
    def secret(self) -> bytes:
        return self.settings.secret

    @property
    def secret_fingerprint(self) -> str:
        return secret_fingerprint(self.settings.secret)

    @property
    def profile(self) -> CompiledProfile:
        return self.settings.compiled_profile()

    @property
    def root_uid(self) -> str:
        return self.settings.root_uid

    @property
    def pixel_policy(self) -> str:
        return self.settings.pixel_policy

    @property
    def encryptor(self) -> EnvelopeEncryptor | None:
        return self.settings.encryptor

    def __call__(self, src: Path | str, dst: Path | str) -> int | Written:
        return write_staged(self.prepare(src), dst)

    def prepare(self, src: Path | str) -> Staged:
        cleaned: list[PixelResult] = []
        staged = stage(src,
                       lambda data: deidentify_parts(data, self.settings, cleaned=cleaned),
                       lambda fd, size: deidentify_split(fd, size, self.settings, cleaned),
                       min(SPLIT_FROM, self.settings.stream_pixels_from))
        if cleaned:
            staged.pixels = cleaned[-1].how
        return staged

