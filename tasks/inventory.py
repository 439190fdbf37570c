"""Pass 1 per file: what the plan needs from one header, as a JSON-ready row.

Header only (``read_header_at`` stops before the pixel data), pure, picklable: runs inline
or on a worker.  The row holds patient values (ID, name, birth date) because the plan
detects conflicting patients with them, and a few more identifiers (accession number, study
date, other patient IDs) because ``anonpipe-audit`` searches the outputs for them; it goes
only to the driver's store, never to a console or a report.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tasks.dicomio import (
    LONG_VRS,
    UNDEFINED,
    DicomFile,
    Element,
    Item,
    compiled,
    read_header_at,
    read_to_pixels,
)
from tasks.eligibility import Refusal, refusals
from tasks.errors import AnonpipeError
from tasks.filemeta import preamble_data
from tasks.profile import DEFAULT_PROFILE, Action, get_profile
from tasks.tags import (
    ACCESSION_NUMBER,
    BURNED_IN_ANNOTATION,
    DICOMDIR_SOP_CLASS,
    ENCRYPTED_ATTRIBUTES,
    FRAME_OF_REFERENCE_UID,
    OTHER_PATIENT_IDS,
    OTHER_PATIENT_IDS_SEQUENCE,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_IDENTITY_REMOVED,
    PATIENT_NAME,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_DATE,
    STUDY_ID,
    STUDY_INSTANCE_UID,
)
from tasks.uids import DEFINITION_UID_TAGS, registered

#: the version of :func:`scan_file`'s row and of its packed form (:func:`pack_row`): a
#: store's rows are reused by a later pass 1 only when it is the same (pipeline.scan), so
#: change it with what a row holds or how it is packed
ROW_FORMAT = 6
#: In a set of replaced tags: every UID not registered in PS3.6 Annex A is replaced too,
#: whatever its tag (the rule of table-based profiles without --retain-uids); not a tag
EVERY_INSTANCE_UID = 0xFFFFFFFF

#: top-level text fields of a row, by tag
TOP_FIELDS = {
    "sop_class": SOP_CLASS_UID,
    "sop": SOP_INSTANCE_UID,
    "patient_id": PATIENT_ID,
    "patient_name": PATIENT_NAME,
    "birth_date": PATIENT_BIRTH_DATE,
    "study": STUDY_INSTANCE_UID,
    "series": SERIES_INSTANCE_UID,
    "study_id": STUDY_ID,
    "frame_of_reference": FRAME_OF_REFERENCE_UID,
    # identifiers only ``anonpipe-audit`` reads (searched for in the outputs)
    "accession": ACCESSION_NUMBER,
    "study_date": STUDY_DATE,
    # how the text values of the row decode (names in UTF-8, ISO 2022...): path check, audit
    "charset": SPECIFIC_CHARACTER_SET,
    # so pass 1 finds the files -e refuses for burned-in text (pipeline.plan.rejection)
    "burned_in": BURNED_IN_ANNOTATION,
}


#: top-level tags of a row's text fields -> field name
_OTHER_IDS = "other_ids"
_REFUSAL_FLAG = "refusal"
_FIELD_OF_TAG = {tag: name for name, tag in TOP_FIELDS.items()} | {
    OTHER_PATIENT_IDS: _OTHER_IDS, OTHER_PATIENT_IDS_SEQUENCE: _OTHER_IDS,
    ENCRYPTED_ATTRIBUTES: _REFUSAL_FLAG, PATIENT_IDENTITY_REMOVED: _REFUSAL_FLAG}
_DICOMDIR = DICOMDIR_SOP_CLASS.encode("latin-1")
#: None for every text field: what a row holds before the header is read
_NO_FIELDS = dict.fromkeys(TOP_FIELDS)


def _collect_uids(df: DicomFile, elements: list[Element], replaced: frozenset[int],
                  every: set[str], mapped: set[str]) -> None:
    """UI values at any depth; those the de-identifier replaces are the ones the plan maps:
    under a U-action tag, and (:data:`EVERY_INSTANCE_UID`) every UID not registered in
    PS3.6 Annex A outside the attributes that name a definition (tasks.uids)."""
    body = df.body
    instances = EVERY_INSTANCE_UID in replaced
    for el in elements:
        if el.items is not None:
            for item in el.items:
                _collect_uids(df, item.elements, replaced, every, mapped)
            continue
        vr = el.vr
        if vr != "UI" or not el.length or el.length == UNDEFINED:
            if instances and vr == "UN" and el.tag & 0x10000 and 0 < el.length <= 64:
                _private_uid(el.value(body), mapped)
            continue
        _add_uids(body[el.value_start:el.value_start + el.length], el.tag, replaced,
                  instances, every, mapped)


def _add_uids(value: bytes, tag: int, replaced: frozenset[int], instances: bool,
              every: set[str], mapped: set[str]) -> None:
    """The UIDs of one UI value into ``every``, those the profile replaces into ``mapped``."""
    listed = tag in replaced
    unlisted = instances and not listed and tag not in DEFINITION_UID_TAGS
    for part in value.split(b"\\"):
        uid = part.strip(b"\0 ").decode("ascii", "replace")
        if uid:
            every.add(uid)
            if listed or (unlisted and registered(uid) is None):
                mapped.add(uid)


def _top_facts(df: DicomFile, replaced: frozenset[int], row: dict[str, Any],
               every: set[str], mapped: set[str]) -> tuple[bool, bool]:
    """One pass over the top-level elements: the row's text fields (as
    :meth:`DicomFile.top_text` reads them, empty values as None) and the UIDs at any depth
    (:func:`_collect_uids`).  Whether the file holds Other Patient IDs in either form, and
    whether it holds an element :func:`tasks.eligibility.refusals` may refuse it for.

    Why one pass, with the UI case inlined: pass 1 reads every header of the archive, and
    a lookup per field is a search per field."""
    body = df.body
    instances = EVERY_INSTANCE_UID in replaced
    field_of = _FIELD_OF_TAG
    definitions = DEFINITION_UID_TAGS
    others = flagged = False
    for el in df.elements:
        tag = el.tag
        length = el.length
        name = field_of.get(tag)
        if name is not None:
            if name is _OTHER_IDS:
                others = True
            elif name is _REFUSAL_FLAG:
                flagged = True
            elif length != UNDEFINED:
                text = body[el.value_start:el.value_start + length].rstrip(b"\0 ")
                if text:
                    row[name] = text.decode("latin-1")
        if el.items is not None:
            for item in el.items:
                _collect_uids(df, item.elements, replaced, every, mapped)
            continue
        vr = el.vr
        if vr != "UI" or not length or length == UNDEFINED:
            if instances and vr == "UN" and tag & 0x10000 and 0 < length <= 64:
                _private_uid(el.value(body), mapped)
            continue
        value = body[el.value_start:el.value_start + length]
        listed = tag in replaced
        unlisted = instances and not listed and tag not in definitions
        for part in value.split(b"\\") if b"\\" in value else (value,):
            uid = part.strip(b"\0 ").decode("ascii", "replace")
            if uid:
                every.add(uid)
                if listed or (unlisted and registered(uid) is None):
                    mapped.add(uid)
    return others, flagged


def _load_loop() -> Any:
    """The compiled :func:`_top_facts` (``tasks/_inventory.c``), set up with this module's
    names; None when there is none (:func:`tasks.dicomio.compiled`)."""
    loop = compiled("_inventory")
    if loop is not None:
        loop.setup(Element, Item, _OTHER_IDS, _REFUSAL_FLAG, EVERY_INSTANCE_UID, _private_uid)
    return loop


def top_facts(df: DicomFile, replaced: frozenset[int], row: dict[str, Any],
              every: set[str], mapped: set[str]) -> tuple[bool, bool]:
    """:func:`_top_facts`, compiled where it can be: the same row fields and UID sets.  A
    header the compiled loop hands back may have had part of its values added already:
    the Python loop adds the same ones again, to a dict and sets."""
    if _LOOP is not None:
        found = _LOOP.top_facts(df.elements, df.body, _FIELD_OF_TAG, replaced,
                                DEFINITION_UID_TAGS, registered, row, every, mapped)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return _top_facts(df, replaced, row, every, mapped)


_UID_VALUE = re.compile(rb"[0-9]+(\.[0-9]+)+[\0 ]?")


def _private_uid(value: bytes, mapped: set[str]) -> None:
    """A private value of unknown VR (implicit files) that is a UID: an option or a site
    profile may keep its slot, and the de-identifier then replaces it (a slot of the safe
    list that defines a UI), so the mapping records it; one kept nowhere costs a row."""
    if _UID_VALUE.fullmatch(value):
        uid = value.rstrip(b"\0 ").decode("ascii")
        if registered(uid) is None:
            mapped.add(uid)


_LOOP = _load_loop()


def _other_ids(df: DicomFile) -> list[str]:
    """Other Patient IDs (0010,1000) and the Patient IDs of (0010,1002) items, top level."""
    found: list[str] = []
    value = df.top_text(OTHER_PATIENT_IDS)
    if value:
        found += value.split("\\")
    seq = df.top(OTHER_PATIENT_IDS_SEQUENCE)
    for item in (seq.items or []) if seq is not None else []:
        for el in item.elements:
            if el.tag == PATIENT_ID and not el.undefined and el.length:
                found.append(el.value(df.body).decode("latin-1"))
    return sorted({v.strip("\0 ") for v in found} - {""})


def replaced_tags(profile: Any = DEFAULT_PROFILE) -> frozenset[int]:
    """Tags whose UIDs the profile replaces (action U): a profile name, spec or compiled;
    with :data:`EVERY_INSTANCE_UID` when every unregistered UID is replaced too."""
    compiled = get_profile(profile)
    tags = {tag for tag, action in compiled.actions.items() if action is Action.U}
    if compiled.maps_every_instance_uid:
        tags.add(EVERY_INSTANCE_UID)
    return frozenset(tags)


@functools.cache
def _default_replaced() -> frozenset[int]:
    return replaced_tags()


def scan_file(path: Path | str, replaced: frozenset[int] | None = None,
              listed: tuple[int, int] | None = None) -> dict[str, Any]:
    """One inventory row for ``path``; a row with ``error_kind``/``error`` if unreadable.

    ``replace`` is every UID (VR UI, at any depth) the profile replaces (``replaced``,
    default: the default profile's, see :func:`replaced_tags`), ``kept_uids`` (only when
    there are any) the other UIDs but the SOP Class UID: a row is what the store keeps per
    file, so nothing is written twice (at a million files every 40-byte UID is 40 MB);
    ``deidentified`` is true when (0400,0500) is present or (0012,0062) is YES.
    ``accession``, ``study_date`` and ``other_ids`` (only when present) are for ``anonpipe-audit``, which searches the outputs
    for every identifier the inventory records.

    ``listed``: the (size, modification time) the listing of pass 1 found, so a small file
    is not asked again (a file whose size changed since is: :func:`_read`).
    """
    row: dict[str, Any] = {}
    try:
        if listed is None:
            st = os.stat(path)
            listed = st.st_size, st.st_mtime_ns
        row["size"], row["mtime_ns"] = listed
        df, cut = _read(path, row)
    except AnonpipeError as exc:
        row.update(error_kind=type(exc).__name__, error=str(exc))
        return row
    except OSError as exc:
        row.update(error_kind="Unreadable", error=(exc.strerror or type(exc).__name__).lower())
        return row
    except Exception as exc:  # noqa: BLE001 - a walker bug must not lose the rest of the batch
        row.update(error_kind="InternalError", error=f"header scan failed: {type(exc).__name__}")
        return row
    if cut is not None:  # pass 1 finds what pass 2 would fail on, not the next run
        row.update(error_kind="DicomFormatError", error=cut)
        return row
    row["ts"] = df.transfer_syntax
    row.update(_NO_FIELDS)
    every: set[str] = set()
    mapped: set[str] = set()
    others, flagged = top_facts(df, _default_replaced() if replaced is None else replaced,
                                row, every, mapped)
    # what pass 2 would refuse, whatever the profile (asked only when it may refuse: a
    # flag its answer rests on is present, or the DICOMDIR class is named at all)
    refused = (refusals(df) if flagged or _DICOMDIR in df.meta_bytes
               or row["sop_class"] == DICOMDIR_SOP_CLASS else ())
    row["deidentified"] = any(why.deidentified for why in refused)
    row["dicomdir"] = Refusal.DICOMDIR in refused
    if preamble_data(df.raw_prefix) is not None:
        row["preamble"] = True  # -e writes zeros there (a TIFF view is lost): said in pass 1
    row["replace"] = sorted(mapped)
    every.difference_update(mapped)
    every.discard(row["sop_class"])
    if every:
        row["kept_uids"] = sorted(every)
    if others:
        other = _other_ids(df)
        if other:
            row["other_ids"] = other
    return row


#: files up to this size are read whole with one read (the header walk stops at the
#: pixel data; tiny files are most of an archive's count, not of its bytes)
WHOLE_BELOW = 16384


def _read(path: Path | str, row: dict[str, Any]) -> tuple[DicomFile, str | None]:
    """The header of ``path`` and why its elements from the pixel data on run past the end
    of the file (None: they do not, or were not checked).

    A small file of the ``size`` the row says is read whole in one call (no buffered
    reader: one open, one read, one close); a larger one, or one whose size changed since
    it was listed, by :func:`read_header_at`, which reads as little of it as it can (the row
    then takes the size and time the file has now)."""
    size = row["size"]
    if 0 < size < WHOLE_BELOW:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO never blocks
        try:
            data = os.read(fd, WHOLE_BELOW)
        finally:
            os.close(fd)
        if len(data) == size:
            df, _ = read_to_pixels(data, private_runs=True)  # private non-UID elements: runs
            return df, _pixel_data_cut(df, size, lambda pos, n: data[pos:pos + n])
    # a larger file, or one changed since it was listed: one descriptor for its stat (the
    # row takes the size and time it has now), its header and the check of its tail
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        size = row["size"] = st.st_size
        row["mtime_ns"] = st.st_mtime_ns
        df = read_header_at(fd, private_runs=True)
        if df.complete or df.deflated:
            return df, None
        return df, _pixel_data_cut(df, size, _read_at(df, fd))
    finally:
        os.close(fd)


def _read_at(df: DicomFile, fd: int) -> Callable[[int, int], bytes]:
    """Bytes of the file open at ``fd`` by position, from what the header read already
    holds where it can: its buffer runs past the last element parsed (a CT slice's Pixel
    Data element header is in the first 16 KB), so one ``pread`` per file is saved."""
    start = len(df.raw_prefix) + len(df.meta_bytes)
    body = df.body

    def read_at(pos: int, count: int) -> bytes:
        at = pos - start
        if 0 <= at and at + count <= len(body):
            return body[at:at + count]
        return os.pread(fd, count, pos)

    return read_at


#: elements after the header read checked for truncation (Pixel Data, trailing padding ...)
TAIL_ELEMENTS = 64


def _pixel_data_cut(df: DicomFile, size: int, read_at: Callable[[int, int], bytes]
                    ) -> str | None:
    """Why an element from Pixel Data on runs past the end of the file, or None.

    The header read stops at Pixel Data; the elements from there on are checked by reading
    their element headers alone (defined lengths, at most ``TAIL_ELEMENTS``), so a file cut
    short is found in pass 1.  Encapsulated (undefined length) pixel data and deflated data
    sets are left to pass 2.  ``read_at(pos, n)``: up to ``n`` bytes of the file at ``pos``.
    """
    if df.complete or df.deflated:
        return None
    pos = len(df.raw_prefix) + len(df.meta_bytes) + (df.elements[-1].end if df.elements else 0)
    order = "<" if df.enc.little else ">"
    for _ in range(TAIL_ELEMENTS):
        if pos >= size:
            return None
        header = read_at(pos, 12)
        long_form = not df.enc.implicit and header[4:6] in LONG_VRS
        if len(header) < (12 if long_form else 8):
            return f"truncated element header at byte {pos}"
        group, element = struct.unpack(order + "HH", header[:4])
        if df.enc.implicit:
            (length,), value_start = struct.unpack(order + "I", header[4:8]), pos + 8
        elif long_form:
            (length,), value_start = struct.unpack(order + "I", header[8:12]), pos + 12
        else:
            (length,), value_start = struct.unpack(order + "H", header[6:8]), pos + 8
        if length == 0xFFFFFFFF:
            return None
        if value_start + length > size:
            return (f"truncated: element ({group:04X},{element:04X}) declares {length} "
                    f"bytes, only {max(size - value_start, 0)} remain")
        pos = value_start + length
    return None


#: fields of a row that are the file's own; every other field is shared by the files of a
#: series as a rule, and goes into the row's "head" (stored once per distinct head)
FILE_FIELDS = frozenset({"size", "mtime_ns", "sop", "replace", "error_kind", "error"})
#: top-level UID fields whose replacement a head records by name (so the UIDs themselves
#: are not listed again per file)
NAMED_UIDS = ("sop", "study", "series", "frame_of_reference")
_HEAD_REPLACED = "replaced"

#: a row as the store keeps it: (path, size, mtime_ns, SOP Instance UID, Study Instance
#: UID, head as JSON, the other replaced UIDs as a JSON list, error kind, error)
PackedRow = tuple[str, int | None, int | None, str | None, str | None, str | None,
                  str | None, str | None, str | None]


def pack_row(rel: str, row: dict[str, Any]) -> PackedRow:
    """``row`` in the store's layout; :func:`unpack_row` gives it back, equal.

    Why: at a million files the row is most of the store.  What a series shares (patient,
    study, series, classes, identifiers, which named UIDs are replaced) is one JSON text
    the store interns; a file keeps its path, size, time, SOP Instance UID and the replaced
    UIDs no named field holds (references, mostly none).
    """
    head = row.copy()
    for name in FILE_FIELDS:
        head.pop(name, None)
    if not head and "replace" not in row:  # unreadable, or listed only (-d, dumb mode)
        return (rel, row.get("size"), row.get("mtime_ns"), row.get("sop"), None, None, None,
                row.get("error_kind"), row.get("error"))
    replace = set(row.get("replace") or ())
    named = [name for name in NAMED_UIDS if row.get(name) in replace]
    replace.difference_update([row[name] for name in named])
    study = row.get("study")
    return (rel, row.get("size"), row.get("mtime_ns"), row.get("sop"),
            study if isinstance(study, str) else None, _head_text(head, named),
            json.dumps(sorted(replace), separators=(",", ":")) if replace else None,
            row.get("error_kind"), row.get("error"))


#: the last head encoded in this process: (head with its replaced names, JSON text)
_LAST_HEAD: list[Any] = [None, ""]


def _head_text(head: dict[str, Any], named: list[str]) -> str:
    """``head`` with the names of its replaced UIDs (added to it) as sorted compact JSON.

    Why the last one is kept: the files of a series come one after the other and share
    their head, and comparing two dicts costs a fraction of encoding one."""
    head[_HEAD_REPLACED] = named
    if head == _LAST_HEAD[0]:
        return str(_LAST_HEAD[1])
    text = json.dumps(head, sort_keys=True, separators=(",", ":"))
    _LAST_HEAD[:] = head, text
    return text


class Head(NamedTuple):
    """A decoded head, prepared for :func:`unpack_row` (decoded once per series)."""

    fields: dict[str, Any]  # the shared fields, without the list of replaced names
    uids: tuple[str, ...]  # the values of the replaced named UIDs but the SOP Instance UID
    sop_replaced: bool


def prepare_head(head: dict[str, Any]) -> Head:
    fields = dict(head)
    named = fields.pop(_HEAD_REPLACED, ())
    return Head(fields, tuple(fields[name] for name in named if name != "sop"),
                "sop" in named)


def unpack_row(size: int | None, mtime_ns: int | None, sop: str | None, head: Head | None,
               extra: str | None, error_kind: str | None, error: str | None
               ) -> dict[str, Any]:
    """The row :func:`pack_row` packed (``head`` prepared by :func:`prepare_head`: callers
    cache it, a series shares it)."""
    row: dict[str, Any] = {} if head is None else head.fields.copy()
    if size is not None:
        row["size"] = size
    if mtime_ns is not None:
        row["mtime_ns"] = mtime_ns
    if error_kind is not None:
        row["error_kind"], row["error"] = error_kind, error
    if head is None:  # no header read: no SOP Instance UID unless the walk had one
        if sop is not None:
            row["sop"] = sop
        return row
    row["sop"] = sop
    uids = head.uids + (sop,) if head.sop_replaced else head.uids
    if extra:
        row["replace"] = sorted(set(uids).union(json.loads(extra)))
    else:
        row["replace"] = sorted(set(uids)) if len(uids) > 1 else list(uids)
    return row


class ScanBatch(NamedTuple):
    """Paths (relative to ``root``) scanned by one task.

    Carries the replaced tags rather than a profile name, so workers need not load (or
    even see) a site profile file; ``listed``, when known, the (size, modification time)
    of each path as the listing found it (:func:`scan_file`: the file is not asked again).
    """

    batch_id: int
    root: str
    rels: tuple[str, ...]
    replaced: frozenset[int] | None = None
    listed: tuple[tuple[int, int], ...] | None = None

    def one_per_file(self) -> list[ScanBatch]:
        """This batch as batches of one file each (a failed task's quarantine)."""
        listed = self.listed or (None,) * len(self.rels)
        return [ScanBatch(self.batch_id, self.root, (rel,), self.replaced,
                          None if stat_ is None else (stat_,))
                for rel, stat_ in zip(self.rels, listed, strict=True)]


def scan_batch(batch: ScanBatch) -> dict[str, Any]:
    """Scan a batch: ``{"batch_id", "rows": [packed row], "bytes", "errors", "latest"}``
    (``latest``: the error kind and reason of the batch's last bad file, for the live
    display).

    A dict (distributed serialises a bare list's elements one by one); rows are packed
    here, on the worker (:func:`pack_row`), so the driver stores them as they are (at scale
    the single driver, not the workers, would otherwise set the pace).
    """
    root = os.path.join(batch.root, "")  # plain string joins: no Path per file
    replaced = _default_replaced() if batch.replaced is None else batch.replaced
    listed = batch.listed or (None,) * len(batch.rels)
    rows: list[PackedRow] = []
    nbytes = errors = 0
    latest: tuple[str, str] | None = None
    for rel, stat_ in zip(batch.rels, listed, strict=True):
        row = scan_file(root + rel, replaced, stat_)
        nbytes += row.get("size") or 0
        if "error_kind" in row:
            errors += 1
            latest = (str(row["error_kind"]), str(row.get("error") or ""))
        rows.append(pack_row(rel, row))
    return {"batch_id": batch.batch_id, "rows": rows, "bytes": nbytes, "errors": errors,
            "latest": latest}
