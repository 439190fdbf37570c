"""A directory run: pass 1 (scan), plan, pass 2 (run), report — ``run_tree(job)``.

The driver is the only writer of the store and commits once per finished batch, so killing
it (or a worker) at any moment loses at most the in-flight batches, which a rerun redoes:
outputs are written atomically, leftover temp files are swept at start, and the resume
rule (``pipeline.plan.is_done``) skips what is journaled done and still intact.

Without ``continue_on_error`` the first failure stops submission; in-flight batches finish
and are journaled, and the summary carries ``failed > 0``.  Files pass 1 already shows to be
unprocessable stop the run before pass 2 writes anything.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import outcomes
from pipeline.cluster import Backend, open_client
from pipeline.job import Mode, RunSummary, TreeJob
from pipeline.jobqueue import WorkersUnavailable
from pipeline.leftovers import check_before, remove_after
from pipeline.names import mirrored_paths_holding
from pipeline.plan import (
    Event,
    MappingStats,
    Planner,
    burned_in_check,
    mapping_steps,
    op_fingerprint,
    profile_of,
)
from pipeline.pools import Outcome, balanced_batch, task_failure
from pipeline.progress import DEBUG, ERROR, INFO, WARNING, PassStats, RunProgress
from pipeline.report import (
    FailedList,
    build_report,
    failed_list_path,
    one_line,
    plan_path,
    private_open,
    reason_lines,
    study_list_path,
    summary_table,
    write_report,
)
from pipeline.scan import run_scan
from pipeline.signals import signal_name
from pipeline.store import Store, job_store_path
from pipeline.walk import check_locations, subfolders_with_dicom
from pipeline.writeback import Writeback, boot_id, recover
from tasks.batch import run_batch
from tasks.errors import UsageError
from tasks.fileio import remove_temp_files_of, sweep_temp_files
from tasks.filemeta import PREAMBLE_NOTE
from tasks.model import Batch, FileResult, Status

if TYPE_CHECKING:
    from rich.console import Console

MAX_SUMMARY_ERRORS = 1000
DONE = Status.DONE.value
MAX_DISTINCT_REASONS = 10_000  # distinct (outcome, kind, reason) counted; the rest as "other reasons"


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _check(job: TreeJob, store_path: Path) -> None:
    check_locations(job.input, job.output)
    if not job.recursive and not job.files:
        holding = subfolders_with_dicom(job.input)
        if holding:
            raise UsageError(f"{job.input} has no file at its top but {holding:,} sub-folders "
                             "hold DICOM files: -r descends into sub-folders")
    if store_path.resolve().is_relative_to(job.output.resolve()):
        raise UsageError(f"the store {store_path} must not be inside the output folder "
                         "(it links originals to pseudonyms)")


def _adopt(store: Store, job: TreeJob, progress: RunProgress) -> None:
    """A store reused for another input, output or mode starts a fresh journal."""
    identity = {"mode": job.mode.value, "input": str(job.input.resolve()),
                "output": str(job.output.resolve())}
    previous = store.job_identity()
    if previous is not None and previous != identity:
        progress.message("store was used for another job: its journal is reset "
                         "(the recorded mapping is kept)", WARNING)
        store.reset_journal()
    store.set_job_identity(identity)


class _Pass2:
    """Consumes outcomes, journals them per batch and keeps the counts."""

    def __init__(self, job: TreeJob, store: Store, progress: RunProgress,
                 summary: RunSummary) -> None:
        self.job, self.store, self.progress, self.summary = job, store, progress, summary
        self.planner = Planner(job, store, op_fingerprint(job.operation), sink=self.settle,
                               done_sink=self.settle_done)
        self.failed_seen = False
        self.key_hint_shown = False
        self.failed_list = FailedList()
        self.reasons: dict[tuple[str, str, str], int] = {}
        #: epochs of rows written by workers on this machine (pipeline.writeback)
        self.writeback: Writeback | None = None
        self.boot = boot_id()

    def note_error(self, rel: str, kind: str, reason: str) -> None:
        if len(self.summary.errors) < MAX_SUMMARY_ERRORS:
            self.summary.errors.append((rel, kind, reason))
        self.progress.message(f"{rel}: {kind}: {reason}", DEBUG)

    def record(self, rel: str, status: str, kind: str | None, reason: str | None) -> str:
        """Count one settled file under its outcome (the one vocabulary of the counts)."""
        name = outcomes.outcome(status, kind, reason)
        summary = self.summary
        if name == outcomes.WRITTEN:
            summary.done += 1
        elif name == outcomes.ALREADY_DONE:
            summary.already_done += 1
        else:
            setattr(summary, outcomes.key(name), getattr(summary, outcomes.key(name)) + 1)
            self.note_error(rel, str(kind), reason or "")
            self.failed_list.add(rel, name, str(kind), reason or "")
            self.progress.set_latest(name if name != outcomes.FAILED else str(kind))
            line = (name, str(kind), reason or "")
            if line in self.reasons or len(self.reasons) < MAX_DISTINCT_REASONS:
                self.reasons[line] = self.reasons.get(line, 0) + 1
            else:
                other = (name, str(kind), "other reasons")
                self.reasons[other] = self.reasons.get(other, 0) + 1
            if self.job.mode is Mode.REIDENTIFY and kind == "CryptoError":
                self.wrong_key(rel, reason or "")
        return name

    def wrong_key(self, rel: str, reason: str) -> None:
        """The first wrong-key failure with nothing written yet: name the certificate the
        files were encrypted for (once)."""
        if self.key_hint_shown or self.summary.done or not reason.startswith(
                "cannot decrypt the payload: wrong key"):
            return
        from pipeline.recipients import recipients_of

        self.key_hint_shown = True
        needed = recipients_of(self.job.input / rel)
        if needed:
            self.progress.message(
                "the key (-k) does not open these files: they were encrypted for "
                + "; ".join(needed), ERROR)

    def settle(self, events: list[Event]) -> None:
        """Files settled without a worker: rejected by pass 1, or done by an earlier run."""
        rows: dict[str, Any] = {}
        written = not_written = 0
        for event in events:
            if event.kind is None:  # resumed: already journaled done, keep that row
                self.record(event.rel, event.status.value, None, None)
                written += 1
                continue
            rows[event.rel] = self.planner.event_row(event)
            self.record(event.rel, event.status.value, event.kind, event.reason)
            not_written += 1
        self.store.journal(rows)
        self.progress.advance(errors=not_written, skipped=written + not_written)

    def settle_done(self, files: int) -> None:
        """Files an earlier run did, their outputs intact: counted, nothing journaled."""
        self.summary.already_done += files
        self.progress.advance(skipped=files)

    def lost(self, batch: Batch) -> list[Batch]:
        """A batch whose task failed: its files one per batch, for the window to run alone
        (pipeline.pools: the file at fault is found); a lost worker may have been writing,
        so its temporary files go first."""
        for item in batch.items:
            remove_temp_files_of(Path(item.dst), self.job.output)
        return self.planner.split(batch) if len(batch.items) > 1 else [batch]

    def consume(self, outcome: Outcome[Batch], window: Any) -> None:
        batch = outcome.payload
        if outcome.error is not None:  # a lost worker may have been writing: no leftovers
            for item in batch.items:
                remove_temp_files_of(Path(item.dst), self.job.output)
            reason = f"processing task failed: {task_failure(outcome.error)}"
            rows = [FileResult(item.rel, Status.FAILED, item.size, 0, "WorkerLost",
                               reason).as_row() for item in batch.items]
        else:
            assert outcome.result is not None
            rows = outcome.result["rows"]
            if len(rows) < len(batch.items):  # stopped at a failure: the rest is untouched
                returned = {str(r["source"]) for r in rows}
                for item in batch.items:
                    if item.rel not in returned:
                        self.planner.pending.pop(item.rel, None)
        journal: dict[str, Any] = {}
        done = failed = nbytes = 0
        journal_row, summary = self.planner.journal_row, self.summary
        for row in rows:
            rel = str(row["source"])
            journal[rel] = journal_row(row)
            size, written = _count(row.get("bytes_in")), _count(row.get("bytes_out"))
            nbytes += size
            if row["status"] == DONE and row.get("error_kind") is None:
                summary.done += 1  # outcomes.WRITTEN, as record() counts it
                done += 1
                summary.bytes_in += size
                summary.bytes_out += written
                if row.get("pixels"):
                    how = str(row["pixels"])
                    summary.pixels[how] = summary.pixels.get(how, 0) + 1
                continue
            kind = row.get("error_kind")
            self.record(rel, str(row["status"]), None if kind is None else str(kind),
                        None if row.get("error") is None else str(row.get("error")))
            if row["status"] == DONE:
                done += 1
                summary.bytes_in += size
                summary.bytes_out += written
            else:
                failed += 1
        epoch = None
        if self.writeback is not None:
            epoch, state = self.writeback.mark(self.boot)
            if state is not None:  # recorded before rows of a new epoch
                self.store.set_writeback(state)
        self.store.journal(journal, epoch)
        self.progress.advance(files=done + failed, nbytes=nbytes, errors=failed)
        if failed and not self.job.continue_on_error and not self.failed_seen:
            self.failed_seen = True
            window.stop()
            self.progress.message("a file failed: no more batches are submitted "
                                  "(--continue goes on past failures)", WARNING)

    def run(self, backend: Backend, expected: int, total: int,
            meanwhile: Iterable[None] = (), nbytes: int | None = None) -> PassStats:
        """Pass 2; ``meanwhile`` is driver-side bookkeeping that the workers need not wait
        for, in steps: one step between two results once the first batches are submitted,
        the rest after the last."""
        job = self.job
        pool = backend.pool(expected, nbytes)
        workers = backend.planned_workers(pool)
        self.planner.batch_files = balanced_batch(job.tuning.batch_files, expected, workers)
        self.planner.expected, self.planner.workers = expected, workers
        if backend.shares_machine:
            state = self.store.writeback() or {}
            self.writeback = Writeback(job.output, int(state.get("next", 1)),
                                       int(state.get("confirmed", 0)))
            self.planner.sync_batches = False
            self.writeback.start()
        self.progress.begin(f"pass 2 {job.mode}", total=total)
        window = pool.imap(run_batch, self.planner.batches(), job.operation,
                           not job.continue_on_error, split=self.lost)
        window.start()
        steps = iter(meanwhile)
        self.progress.count_workers = pool.workers_alive if pool.kind != "inline" else None
        for outcome in window:
            self.progress.set_workers(pool.workers_alive() if pool.kind != "inline" else None,
                                      pool.dashboard)
            self.consume(outcome, window)
            next(steps, None)
        for _ in steps:
            pass
        self.planner.flush()
        return self.progress.end()

    def finish(self, wait: bool) -> bool:
        """Stop confirming outputs in the background; with ``wait`` (``--sync``), return
        once they are on disk.  Whether every output written is known to be on disk."""
        if self.writeback is None:
            return True  # none written, or each batch made its own durable
        confirmed = self.writeback.stop(wait)
        self.store.set_writeback(self.writeback.final_state(self.boot))
        return confirmed

    def reject_only(self, total: int) -> PassStats:
        """Pass 1 found unprocessable files and there is no ``--continue``: journal them."""
        self.progress.begin(f"pass 2 {self.job.mode}", total=total)
        chunk: list[Event] = []
        for event in self.planner.rejections():
            chunk.append(event)
            if len(chunk) >= 1000:
                self.settle(chunk)
                chunk = []
        self.settle(chunk)
        return self.progress.end()


def _show_findings(job: TreeJob, findings: dict[str, Any], store: Store,
                   progress: RunProgress) -> None:
    f = findings
    if job.mode is not Mode.DEIDENTIFY:  # -d and --dumb list files without reading headers
        progress.message(f"found {f['files']:,} files ({f['bytes'] / 1e6:,.1f} MB)", WARNING)
        if f["unreadable"]:
            progress.message(f"  {f['unreadable']:,} unreadable", WARNING)
        return
    progress.message(
        f"found {f['files']:,} files ({f['bytes'] / 1e6:,.1f} MB): {f['patients']:,} patients, "
        f"{f['studies']:,} studies, {f['series']:,} series, {len(f['sop_classes'])} SOP classes, "
        f"{len(f['transfer_syntaxes'])} transfer syntaxes", WARNING)
    problems = [
        (f["unreadable"], "unreadable or not DICOM"),
        (f["already_deidentified"], "already de-identified"),
        (f["dicomdir"], "DICOMDIR"),
        (f["duplicate_sop_uids"],
         f"SOP Instance UIDs shared by {f['files_with_duplicate_sop_uid']} files"),
        (f["conflicting_patients"], "Patient IDs with conflicting names or birth dates"),
    ]
    problems.append((f.get("preamble_data", 0), f"files: {PREAMBLE_NOTE}"))  # -e only here
    for count, what in problems:
        if count:
            progress.message(f"  {count:,} {what}", WARNING)
    for kind, n in f["errors_by_kind"].items():
        progress.message(f"  unreadable: {n:,} {kind}", INFO)
    for uid, n in f["sop_classes"].items():
        progress.message(f"  SOP class {uid}: {n:,}", INFO)
    for uid, n in f["transfer_syntaxes"].items():
        progress.message(f"  transfer syntax {uid}: {n:,}", INFO)
    if progress.verbosity >= DEBUG:
        for uid, paths in store.duplicate_sops():
            progress.message(f"  duplicate SOP Instance UID {uid}: {', '.join(paths)}", DEBUG)
        for pid, names, dates in store.conflicting_patients():
            progress.message(f"  Patient ID {pid}: names {names}, birth dates {dates}", DEBUG)


def _check_names(job: TreeJob, store: Store, progress: RunProgress) -> None:
    """Stop before writing when mirrored output names would hold patient identifiers."""
    if job.output_names != "mirror" or job.keep_names:
        return
    count, first = mirrored_paths_holding(store)
    if not count:
        return
    for rel in first:
        progress.message(f"  {rel}", DEBUG)
    raise UsageError(
        f"{count:,} output paths would hold a patient name, ID, accession number or birth "
        "date in their folder or file names: rerun with --output-names uid (outputs named "
        "PSEUDONYM/STUDY/SERIES/INSTANCE.dcm by the replacement values) or --keep-names "
        "(mirror the input names anyway)" + ("" if job.verbosity >= DEBUG else
                                             "; -D lists the paths"))


def _planned(job: TreeJob, store: Store, op: str) -> Iterator[str]:
    """The output paths of the inventory's files (relative to the output)."""
    planner = Planner(job, store, op)
    for rel, row, _ in store.work_pages():
        yield planner.output_rel(rel, row)


def _remove_stale(job: TreeJob, store: Store, op: str, progress: RunProgress) -> None:
    removed = remove_after(job.output, store, op)
    if removed:
        progress.message(f"removed {len(removed):,} files from the output that the current "
                         "settings did not produce (earlier runs with other settings, or "
                         "other programs)", WARNING)
        for rel in removed[:MAX_SUMMARY_ERRORS]:
            progress.message(f"  removed {rel}", DEBUG)


def _dry_run(job: TreeJob, planner: Planner, progress: RunProgress, run_id: str) -> None:
    """The plan, sorted by input path: ``input<TAB>output`` per file to write,
    ``input<TAB>(already done)`` or ``input<TAB>(not written: outcome: kind: reason)``.

    Paths may hold identifiers: the plan goes to ``--plan FILE`` or beside the report
    (0600), or to stdout with ``-D`` (``> plan.txt``); the terminal gets counts only.
    """
    lines: list[str] = []

    def show(events: list[Event]) -> None:
        for event in events:
            if event.kind is None:
                lines.append(f"{one_line(event.rel)}\t(already done)")
            else:
                name = outcomes.outcome(Status.FAILED.value, event.kind, event.reason)
                lines.append(f"{one_line(event.rel)}\t(not written: {name}: {event.kind}: "
                             f"{one_line(event.reason or '')})")

    planner.sink = show
    root = os.path.join(str(job.output), "")
    for batch in planner.batches():
        for item in batch.items:
            dst = item.dst.removeprefix(root)
            lines.append(f"{one_line(item.rel)}\t{one_line(dst)}")
        planner.forget(batch)
    planner.flush()
    lines.sort()
    if job.plan is None and job.verbosity >= DEBUG:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        return
    path = job.plan or plan_path(run_id)
    with private_open(path) as fh:
        fh.writelines(line + "\n" for line in lines)
    progress.message(f"plan of {len(lines):,} files (paths, 0600): {path}", ERROR)


def _rejected(job: TreeJob, store: Store) -> int:
    """Files pass 1 shows will not be written (pipeline.plan.rejection, counted in SQL)."""
    profile = burned_in_check(job)
    classes = None if profile is None else sorted(profile.spec.burned_in_sop_classes)
    if profile is not None and not profile.spec.burned_in_check:
        classes = None
    return store.count_rejected(job.mode is Mode.DEIDENTIFY, classes)


def _why(stop: BaseException) -> str:
    """A stopped run's cause, for its report: the signal, or the lost workers."""
    return signal_name(stop) if isinstance(stop, KeyboardInterrupt) else "no workers"


def run_tree(job: TreeJob, console: Console | None = None,
             clock: Callable[[], float] = time.monotonic) -> RunSummary:
    """Run ``job`` over its input tree; the store and report are left in the state folder."""
    store_path = job.store or job_store_path(job.output)
    _check(job, store_path)
    summary = RunSummary(preview=job.scan_only or job.dry_run)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()
    started = time.time()
    with RunProgress(console, job.verbosity, clock) as progress, \
            open_client(job, lambda text: progress.message(text, WARNING)) as backend, \
            Store(store_path) as store:
        _adopt(store, job, progress)
        store.put_run(run_id, {"status": "running", "started": started, "mode": job.mode.value,
                               "options": dict(job.report_options),
                               "secret_fingerprint": job.secret_fingerprint})
        writing = not (job.scan_only or job.dry_run)
        if writing and job.output.is_dir():
            swept = sweep_temp_files(job.output)
            if swept:
                progress.message(f"removed {swept} temporary files left by an interrupted run",
                                 INFO)
        if writing:
            recovered = recover(store, job.output)
            if recovered.forgotten:
                progress.message(
                    f"{recovered.forgotten:,} outputs written before this machine restarted "
                    "were not confirmed on disk: they are written again", WARNING)
        passes: list[PassStats] = []
        findings: dict[str, Any] = {}
        mapping = MappingStats()
        interrupted: KeyboardInterrupt | WorkersUnavailable | None = None
        second = _Pass2(job, store, progress, summary)
        second.failed_list.path = failed_list_path(run_id)
        try:
            passes.append(run_scan(job, store, backend, progress))
            findings = store.counts()
            _show_findings(job, findings, store, progress)
            op = op_fingerprint(job.operation)
            try:
                if job.mode is Mode.DEIDENTIFY and not job.scan_only:
                    _check_names(job, store, progress)
                before = check_before(job.output, store, job.force,
                                      lambda: _planned(job, store, op)) if writing else 0
            except UsageError:
                store.put_run(run_id, {"status": "refused", "started": started,
                                       "mode": job.mode.value,
                                       "secret_fingerprint": job.secret_fingerprint})
                raise

            def map_steps() -> Iterator[None]:
                secret, root = job.secret, job.root_uid
                if job.mode is Mode.DEIDENTIFY and secret and root and not job.scan_only:
                    yield from mapping_steps(store, secret, root, profile_of(job), mapping)

            def map_now() -> None:
                for _ in map_steps():
                    pass

            if job.scan_only or job.dry_run:
                if job.dry_run:
                    map_now()
                    _dry_run(job, Planner(job, store, op), progress, run_id)
                for event in second.planner.rejections():  # what pass 2 would not write
                    second.record(event.rel, Status.FAILED.value, event.kind, event.reason)
            else:
                rejected = _rejected(job, store)
                total = int(findings["files"])
                if rejected and not job.continue_on_error:
                    map_now()
                    passes.append(second.reject_only(total))
                    progress.message(
                        f"{rejected:,} files cannot be processed ({_split(summary)}): nothing "
                        "is written; --continue writes the others", ERROR)
                    progress.message("pass 1 reads headers and element lengths: damage inside "
                                     "encapsulated or deflated data and files that cannot be "
                                     "written show in pass 2", WARNING)
                    summary.stopped_early = True
                else:
                    # the workers derive replacements themselves: the recorded mapping is
                    # written step by step while they work
                    passes.append(second.run(backend, total - rejected, total,
                                             meanwhile=map_steps(),
                                             nbytes=_count(findings["bytes"])))
                    summary.stopped_early = second.failed_seen
                if before:
                    _remove_stale(job, store, op, progress)
        except (KeyboardInterrupt, WorkersUnavailable) as exc:  # Ctrl-C, SIGTERM, no
            # worker jobs left: the report says how far the run got
            interrupted = exc
            summary.stopped_early = True
            passes.extend(progress.interrupt())
            findings = findings or store.counts()
        on_disk = second.finish(wait=job.sync and interrupted is None)
        if job.sync and interrupted is None and not on_disk:
            progress.message("outputs are written but not confirmed on disk: "
                             f"{second.writeback.error if second.writeback else ''}", ERROR)
        summary.failed_list = second.failed_list.close()
        if job.mode is Mode.DEIDENTIFY and (summary.done or summary.already_done):
            summary.study_list = _study_summary(job, store, progress, run_id)
        report = build_report(
            job, run_id, started, summary, passes, findings, second.reasons,
            backend.describe(), store_path,
            extra={"mapping": {"uids": mapping.uids + mapping.uids_before,
                               "patients": mapping.patients,
                               "identifiers": mapping.identifiers},
                   "interrupted": _why(interrupted) if interrupted else None,
                   "outputs_confirmed_on_disk": on_disk},
        )
        summary.report_path = write_report(report)
        status = ("interrupted" if interrupted else "stopped" if summary.stopped_early
                  else "finished")
        store.put_run(run_id, {"status": status,
                               "started": started, "mode": job.mode.value,
                               "counts": report["counts"], "seconds": report["seconds"],
                               "report": str(summary.report_path),
                               "failed_list": None if summary.failed_list is None
                               else str(summary.failed_list),
                               "secret_fingerprint": job.secret_fingerprint})
        if interrupted is not None:  # the cluster is closed (jobs cancelled) on the way out
            progress.message(f"stopped ({_why(interrupted)}): report: {summary.report_path}",
                             ERROR)
            raise interrupted
    _show_summary(job, console, report, summary)
    return summary


def _study_summary(job: TreeJob, store: Store, progress: RunProgress,
                   run_id: str) -> Path | None:
    """Per study: old -> new Patient ID and accession, new Study UID, files (0600 TSV
    beside the report; on the terminal with -D only: it links old and new)."""
    from pipeline.crosswalk import STUDY_HEADER, study_rows

    path = study_list_path(run_id)
    rows = 0
    with private_open(path) as fh:
        fh.write("\t".join(STUDY_HEADER) + "\n")
        for row in study_rows(store):
            fh.write("\t".join(one_line(v) for v in row) + "\n")
            rows += 1
            progress.message("study: Patient ID {} -> {}, accession {} -> {}, Study UID {}, "
                             "{} files, {} written".format(*row), DEBUG)
    progress.message(f"{rows:,} studies, old -> new Patient ID and accession (0600): {path}",
                     WARNING)
    return path


def _split(summary: RunSummary) -> str:
    parts = [(summary.not_dicom, outcomes.NOT_DICOM), (summary.refused, outcomes.REFUSED),
             (summary.failed, outcomes.FAILED)]
    return ", ".join(f"{n:,} {name}" for n, name in parts if n)


def _show_summary(job: TreeJob, console: Console | None, report: dict[str, Any],
                  summary: RunSummary) -> None:
    """The table at default verbosity; with -E the reason lines alone, when files were not
    written (an error-only run must still say why it exits 1)."""
    if job.verbosity < WARNING and not summary.not_written:
        return
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if job.verbosity >= WARNING:
        console.print(summary_table(report))
    else:
        for line in reason_lines(report):
            console.print(line, highlight=False, soft_wrap=True)
    if summary.failed_list is not None:
        console.print(f"files not written (paths, 0600): {summary.failed_list}",
                      highlight=False, soft_wrap=True)
    console.print(f"report: {summary.report_path}", highlight=False, soft_wrap=True)
