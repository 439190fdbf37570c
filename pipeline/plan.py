"""The plan between the passes: the recorded mapping, and the pass-2 work list in batches.

The replacements themselves are derived on the workers by HMAC-SHA256 from the secret
(``tasks.uids``), so every worker and every rerun agrees without reading the store; the
plan *records* them (old UID -> new UID, identifier -> pseudonym, per-patient facts) for
audits, consistency checks and re-linking.  The work list is read back from the store in
(study, path) order and cut into batches bounded by file count and bytes, so files of one
study travel together and no list of all files is ever held.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.job import Mode, TreeJob
from pipeline.names import OutputNames, uid_name
from pipeline.pools import tapered_batch
from pipeline.store import Store
from pipeline.walk import LINK_OUTSIDE
from tasks.actions import date_offset_days, dummy_value
from tasks.dicomio import dictionary_vr
from tasks.inventory import replaced_tags
from tasks.model import Batch, Status, WorkItem
from tasks.profile import Action, CompiledProfile, get_profile
from tasks.tags import (
    ACCESSION_NUMBER,
    PATIENT_ID,
    PATIENT_NAME,
    SOP_INSTANCE_UID,
    STUDY_ID,
)
from tasks.uids import new_uid

#: rows of the mapping written per step between two pass-2 results (~30 ms)
MAPPING_STEP = 1_000


def op_fingerprint(operation: object) -> str:
    """Identifies the operation's settings, so a resume never keeps outputs made otherwise.

    A hash of a canonical form (sets sorted, records by field): a pickle is not stable
    across processes (set order follows string hash randomisation).  The form includes the
    secret and keys; only the hash is stored.
    """
    text = repr(_canonical(operation)).encode("utf-8", "surrogateescape")
    return hashlib.sha256(b"anonpipe-op\0" + text).hexdigest()[:24]


def _canonical(value: Any, depth: int = 0) -> Any:
    if depth > 50:
        raise ValueError("operation settings nest too deeply to fingerprint")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, enum.Enum):
        return (type(value).__qualname__, _canonical(value.value, depth + 1))
    if isinstance(value, Path):
        return str(value)
    kind = type(value)
    named = getattr(kind, "_fields", None)  # a NamedTuple, or a class that names its fields
    if named is None and hasattr(kind, "__dataclass_fields__"):
        import dataclasses  # none of anonpipe's records is one: an operation of a caller's

        named = tuple(f.name for f in dataclasses.fields(value))
    if named is not None and not isinstance(value, type):
        # the same form for each kind of record: a settings class may change kind and
        # keep the fingerprints of the stores that resume with it
        return (kind.__qualname__,
                tuple((name, _canonical(getattr(value, name), depth + 1)) for name in named))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((repr(_canonical(k, depth + 1)), _canonical(v, depth + 1))
                                      for k, v in value.items()), key=lambda kv: kv[0])))
    if isinstance(value, set | frozenset):
        return ("set", tuple(sorted(repr(_canonical(v, depth + 1)) for v in value)))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v, depth + 1) for v in value)
    state = getattr(value, "__dict__", None)
    if state is not None:
        return (type(value).__qualname__, _canonical(state, depth + 1))
    return (type(value).__qualname__, repr(value))


# --------------------------------------------------------------------------- mapping


class MappingStats:
    """What recording the mapping wrote, counted as it goes (:func:`mapping_steps`)."""

    __slots__ = ("identifiers", "patients", "uids", "uids_before")

    def __init__(self) -> None:
        self.uids = 0  # written by this run
        self.uids_before = 0  # recorded by an earlier run with the same secret, kept
        self.patients = 0
        self.identifiers = 0


def profile_of(job: TreeJob) -> CompiledProfile:
    """The compiled profile a de-identification job's operation applies (options
    included): the plan records what the workers do."""
    if job.profile is None:
        raise ValueError(f"a {job.mode} run has no profile")
    return job.profile


def _dummy_for(secret: bytes, tag: int, value: str) -> str:
    """The pseudonym ``tasks.deidentify`` writes for ``value`` under action D."""
    return dummy_value(secret, dictionary_vr(tag), value.encode("latin-1", "replace")).decode()


def record_mapping(store: Store, secret: bytes, root: str, profile: Any) -> MappingStats:
    """Write old -> new UIDs, identifier pseudonyms and per-patient facts to the store.

    ``profile`` is a compiled profile (:func:`profile_of`): its action-D tags get recorded
    pseudonyms, and with Retain Longitudinal Modified Dates each patient's date offset.
    """
    stats = MappingStats()
    for _ in mapping_steps(store, secret, root, profile, stats):
        pass
    return stats


def mapping_steps(store: Store, secret: bytes, root: str, profile: Any,
                  stats: MappingStats) -> Iterator[None]:
    """:func:`record_mapping` in steps of at most MAPPING_STEP rows, counted into ``stats``.

    Why steps: the mapping is for reports and audits, the workers derive every replacement
    themselves; pass 2 takes one step between two results, so a million UIDs (~30 s of the
    driver's time) never keep the workers waiting for their next batches.  None at all
    when the inventory has not changed since a mapping recorded whole with the same
    secret, root and profile rows (``Store.mapped_inventory``): its counts are reported."""
    # a mapping recorded with this secret and root is complete for the UIDs it holds: a
    # rerun over a changed inventory adds only the new ones
    made_with = hashlib.sha256(b"anonpipe-uid-mapping\0" + secret + b"\0" + root.encode()
                               ).hexdigest()[:24]
    compiled = get_profile(profile)
    pseudonymised = {tag for tag, action in compiled.actions.items() if action is Action.D}
    shifted = getattr(compiled, "dates", None) == "modified"
    accession_kept = compiled.actions.get(ACCESSION_NUMBER) in (None, Action.K)
    # everything the rows below depend on besides the inventory: a rerun over an inventory
    # unchanged since a mapping recorded with the same has nothing to record
    recorded_with = hashlib.sha256(json.dumps(
        [made_with, sorted(pseudonymised), shifted, accession_kept]).encode()).hexdigest()[:24]
    mapped = store.mapped_inventory()
    if mapped is not None and mapped.get("with") == recorded_with:
        stats.uids_before = int(mapped["uids"])
        stats.patients = int(mapped["patients"])
        stats.identifiers = int(mapped["identifiers"])
        return
    missing_only = store.uid_mapping_key() == made_with
    if not missing_only:
        store.set_uid_mapping_key(None)  # until every UID is written again with this secret
    yield from _put_steps(store.put_uids, ((uid, new_uid(secret, root, uid)) for uid in
                                           store.replaced_uids(missing_only=missing_only)),
                          stats, "uids")
    store.set_uid_mapping_key(made_with)
    stats.uids_before = store.table_size("uids") - stats.uids if missing_only else 0

    def patient_rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for pid, names, dates, studies in store.patients():
            row: dict[str, Any] = {"names": names, "birth_dates": dates, "studies": studies,
                                   "conflict": len(names) > 1 or len(dates) > 1}
            if PATIENT_ID in pseudonymised:
                row["pseudonym"] = _dummy_for(secret, PATIENT_ID, pid)
            if PATIENT_NAME in pseudonymised:
                row["name_pseudonyms"] = [_dummy_for(secret, PATIENT_NAME, n) for n in names]
            if shifted:
                row["date_offset_days"] = date_offset_days(secret,
                                                           pid.encode("latin-1", "replace"))
            yield pid, row

    def identifier_rows() -> Iterator[tuple[str, str]]:
        for field_name, tag, label in (("patient_id", PATIENT_ID, "PatientID"),
                                       ("patient_name", PATIENT_NAME, "PatientName"),
                                       ("study_id", STUDY_ID, "StudyID"),
                                       ("accession", ACCESSION_NUMBER, "AccessionNumber")):
            if tag in pseudonymised:
                for value in store.identifiers(field_name):
                    yield f"{label}:{value}", _dummy_for(secret, tag, value)
            elif tag == ACCESSION_NUMBER:  # the crosswalk lists it whatever becomes of it
                for value in store.identifiers(field_name):
                    yield f"{label}:{value}", value if accession_kept else ""

    yield from _put_steps(store.put_patients, patient_rows(), stats, "patients")
    yield from _put_steps(store.put_ids, identifier_rows(), stats, "identifiers")
    store.set_mapped_inventory({"with": recorded_with, "uids": stats.uids + stats.uids_before,
                                "patients": stats.patients,
                                "identifiers": stats.identifiers})


def _put_steps(put: Callable[[dict[str, Any]], None], pairs: Iterator[tuple[str, Any]],
               stats: MappingStats, counter: str) -> Iterator[None]:
    """Write ``pairs`` through ``put`` MAPPING_STEP at a time (the driver's memory stays
    flat however large the archive), yielding after each, and count them in ``stats``."""
    chunk: dict[str, Any] = {}
    for key, value in pairs:
        chunk[key] = value
        if len(chunk) >= MAPPING_STEP:
            put(chunk)
            setattr(stats, counter, getattr(stats, counter) + len(chunk))
            chunk = {}
            yield
    put(chunk)
    setattr(stats, counter, getattr(stats, counter) + len(chunk))
    yield


# --------------------------------------------------------------------------- work list


def rejection(job: TreeJob, row: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, reason) when pass 1 already shows the file cannot be processed."""
    if row.get("error_kind"):
        return str(row["error_kind"]), str(row.get("error") or "unreadable")
    if job.mode is Mode.DEIDENTIFY:
        if row.get("deidentified"):
            return "UnsupportedFileError", "already de-identified"
        if row.get("dicomdir"):
            return "UnsupportedFileError", "DICOMDIR: rebuild it from the outputs"
        burned = burned_in_check(job)
        if burned is not None:
            why = burned.burned_in_reason(row.get("sop_class"), row.get("burned_in"))
            if why is not None:  # the words of tasks.pixels.clean.pixel_step
                reason = f"burned-in annotation: {why}; --pixels refuse (--pixels clean blanks it)"
                return "UnsupportedFileError", reason
    return None


def burned_in_check(job: TreeJob) -> Any:
    """The compiled profile when -e refuses burned-in files (``--pixels refuse``; ``clean``
    blanks the text in pass 2, ``keep`` and ``--allow-burned-in`` leave it)."""
    if job.mode is not Mode.DEIDENTIFY or job.operation.pixel_policy != "refuse":
        return None
    return profile_of(job)


def is_done(row: dict[str, Any], journaled: dict[str, Any] | None, dst: Path | str,
            op: str) -> bool:
    """Resume rule: journaled done by the same operation from the same input, output intact."""
    if not journaled or journaled.get("status") != Status.DONE.value or journaled.get("op") != op:
        return False
    if (journaled.get("src_size") != row.get("size")
            or journaled.get("src_mtime_ns") != row.get("mtime_ns")):
        return False
    return _intact(dst, journaled.get("bytes_out"))


def _intact(dst: Path | str, size: object) -> bool:
    """Whether the output is there with the size the journal recorded."""
    try:
        return os.stat(dst).st_size == size
    except OSError:
        return False


class Event(NamedTuple):
    """A file settled without a worker: rejected by pass 1, or done by an earlier run."""

    rel: str
    status: Status
    size: int = 0
    mtime_ns: int | None = None
    kind: str | None = None
    reason: str | None = None


EVENT_CHUNK = 1000


def _no_events(events: list[Event]) -> None:
    """A sink that drops what it is told (a planner whose caller counts nothing)."""


def _no_count(files: int) -> None:
    """A done-sink that drops the count."""


class Planner:
    """Streams the work list as batches; settled files go to ``sink`` as :class:`Event` s.

    The sink is called from inside :meth:`batches` every ``EVENT_CHUNK`` events, so a
    resumed run of a million done files never queues a million events.
    """

    def __init__(self, job: TreeJob, store: Store, op: str, *,
                 sink: Callable[[list[Event]], None] = _no_events,
                 done_sink: Callable[[int], None] = _no_count,
                 batch_files: int | None = None, expected: int | None = None,
                 workers: int = 1) -> None:
        self.job = job
        self.store = store
        self.op = op
        self.sink = sink
        #: told how many files an earlier run did whose outputs are intact (they come as
        #: a count, not as events: ``Store.intact_done``)
        self.done_sink = done_sink
        self.events: list[Event] = []
        self.next_id = 0
        #: (size, mtime) of files handed out and not yet journaled: bounded by the window
        self.pending: dict[str, tuple[int, int | None, str]] = {}
        #: files per batch (default ``job.batch_files``; the runner may balance it smaller)
        self.batch_files = batch_files
        #: the files the pass expects (None: unknown) and the workers it plans: the last
        #: batches are cut smaller (``pipeline.pools.tapered_batch``)
        self.expected = expected
        self.workers = workers
        #: batches make their outputs durable themselves (workers on other machines)
        self.sync_batches = True
        #: output names by replacement values (``--output-names uid``); set up on first use
        self._naming: tuple[bytes, str, bool, frozenset[str]] | None = None

    def output_rel(self, rel: str, row: dict[str, Any]) -> str:
        """Where the output of input ``rel`` goes, relative to the output root."""
        if self.job.output_names != OutputNames.UID.value or self.job.mode is not Mode.DEIDENTIFY:
            return rel
        if self._naming is None:
            replace = SOP_INSTANCE_UID in replaced_tags(profile_of(self.job))
            shared = frozenset(uid for uid, _ in self.store.duplicate_sops(limit=-1))
            self._naming = (self.job.secret or b"", self.job.root_uid or "", replace, shared)
        secret, root, replace, shared = self._naming
        return uid_name(secret, root, row, replace, rel if row.get("sop") in shared else None)

    def dst(self, rel: str, row: dict[str, Any] | None = None) -> Path:
        return self.job.output / (rel if row is None else self.output_rel(rel, row))

    def batches(self) -> Iterator[Batch]:
        job = self.job
        # plain string joins: a Path per file costs ~10 us of driver time (rel is POSIX)
        src_root = os.path.join(str(job.input), "")
        dst_root = os.path.join(str(job.output), "")
        items: list[WorkItem] = []
        nbytes = 0
        reject_status = Status.SKIPPED if job.continue_on_error else Status.FAILED
        full = self.batch_files or job.tuning.batch_files
        limit = tapered_batch(full, self.expected, self.workers)
        # the fast resume check knows mirrored outputs only (the operation's fingerprint
        # does not cover the naming)
        mirrored = self.job.output_names != OutputNames.UID.value or job.mode is not Mode.DEIDENTIFY
        seen = 0  # of the files expected: done before, or handed out
        if mirrored:
            intact = self.store.intact_done(self.op)
            seen += intact
            if intact:
                self.done_sink(intact)
        for rel, row, journaled in self.store.resume_pages(self.op if mirrored else None):
            if len(self.events) >= EVENT_CHUNK:
                self.flush()
            if row is None:  # journaled done by this operation from this very source
                assert journaled is not None
                if _intact(dst_root + journaled["output"], journaled["bytes_out"]):
                    self.events.append(Event(rel, Status.SKIPPED, int(journaled["size"] or 0)))
                    seen += 1
                    continue
                row, journaled = self.store.get("files", rel), self.store.get("journal", rel)
                assert row is not None
            size = int(row.get("size") or 0)
            mtime = row.get("mtime_ns")
            rejected = rejection(job, row)
            if rejected is not None:
                status = Status.SKIPPED if rejected[0] == LINK_OUTSIDE else reject_status
                self.events.append(Event(rel, status, size, mtime, *rejected))
                continue
            out_rel = self.output_rel(rel, row)
            dst = dst_root + out_rel
            seen += 1
            if journaled is not None and is_done(row, journaled, dst, self.op):
                self.events.append(Event(rel, Status.SKIPPED, size, mtime))
                continue
            self.pending[rel] = (size, mtime, out_rel)
            if items and (len(items) >= limit or nbytes + size > job.tuning.batch_bytes):
                yield self._batch(items)
                items, nbytes = [], 0
                left = None if self.expected is None else self.expected - seen + 1
                limit = tapered_batch(full, left, self.workers)
            items.append(WorkItem(src_root + rel, dst, rel, size))
            nbytes += size
        if items:
            yield self._batch(items)

    def _batch(self, items: list[WorkItem]) -> Batch:
        self.next_id += 1
        return Batch(self.next_id, tuple(items), str(self.job.output), self.sync_batches)

    def rejections(self) -> Iterator[Event]:
        """Only the files pass 1 rejects (a run that stops before pass 2 journals these)."""
        status = Status.SKIPPED if self.job.continue_on_error else Status.FAILED
        for rel, row, _ in self.store.work_pages():
            rejected = rejection(self.job, row)
            if rejected is not None:
                yield Event(rel, Status.SKIPPED if rejected[0] == LINK_OUTSIDE else status,
                            int(row.get("size") or 0), row.get("mtime_ns"), *rejected)

    def flush(self) -> None:
        events, self.events = self.events, []
        if events:
            self.sink(events)

    def split(self, batch: Batch) -> list[Batch]:
        """A batch whose task failed, as one batch per file (to find the file at fault)."""
        return [self._batch([item]) for item in batch.items]

    def journal_row(self, result: dict[str, Any]) -> dict[str, Any]:
        """A worker's result row plus what the resume rule compares (added to it: the
        row is the driver's own, one per file)."""
        size, mtime, out_rel = self.pending.pop(result["source"], (None, None, None))
        result["op"] = self.op
        result["src_size"] = size
        result["src_mtime_ns"] = mtime
        result["output"] = result["source"] if out_rel is None else out_rel
        return result

    def event_row(self, event: Event) -> dict[str, Any]:
        return {"source": event.rel, "status": event.status.value, "bytes_in": event.size,
                "bytes_out": 0, "error_kind": event.kind, "error": event.reason,
                "op": self.op, "src_size": event.size, "src_mtime_ns": event.mtime_ns}

    def forget(self, batch: Batch) -> None:
        """Files of a batch that will not be journaled (left untouched after a stop)."""
        for item in batch.items:
            self.pending.pop(item.rel, None)
