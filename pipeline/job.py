"""What the CLI hands the pipeline for a directory run, and what it gets back."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from tasks.errors import UsageError
from tasks.model import FileOperation

if TYPE_CHECKING:
    from tasks.profile import CompiledProfile

#: a pass of at least this many files, or bytes, pays for starting local worker processes
#: (ready in ~0.1 s, their imports ~0.1 CPU-s each): measured break-evens on 2 cores, the
#: bytes for large images (106 MB: inline 0.42 s against 0.49; 306 MB: 0.83 against 0.78;
#: benchmarks/README.md)
PROCESSES_FROM = 256
PROCESSES_FROM_BYTES = 192 * 1024 * 1024


class Mode(enum.StrEnum):
    """The operating mode: gdcmanon's ``-e``, ``-d`` and ``--dumb``.  The value is what the
    store's job identity, the run records and the report hold."""

    DEIDENTIFY = "deidentify"
    REIDENTIFY = "reidentify"
    DUMB = "dumb"


#: gdcmanon's mode flags (pipeline.cli) -> mode
MODE_FLAGS = {"e": Mode.DEIDENTIFY, "d": Mode.REIDENTIFY, "dumb": Mode.DUMB}


class _TuningFields(NamedTuple):
    """The fields of :class:`Tuning` (a NamedTuple cannot check its own values)."""

    retries: int = 2  # re-runs of a batch whose task raised; a lost worker's batch is re-run too
    # a pass with fewer files runs inline instead of starting a local cluster: on 2 cores the
    # cluster's start-up (~1.5 s of CPU) pays off only from ~10k files (measured)
    inline_below: int = 5000
    #: ... unless its files hold at least this many bytes (large images: the writes are
    #: what takes the time, and two processes write in parallel); None: files count only
    inline_below_bytes: int | None = None
    #: a pass below ``inline_below`` on the default local dask cluster, but of at least
    #: this many files or bytes, runs on the light process pool instead of inline: on 2
    #: cores a LocalCluster's start-up (~0.35 s, ~0.65 CPU-s) is a good part of a
    #: 2,000-file run, the process pool's 0.07 s is not (benchmarks/README.md); None: such
    #: passes run inline
    processes_from: int | None = PROCESSES_FROM
    processes_from_bytes: int | None = PROCESSES_FROM_BYTES
    inline_while_starting: bool = True  # the driver works inline while a local cluster starts
    batch_files: int = 200  # pass-2 batch bound: files ...
    batch_bytes: int = 256 * 1024 * 1024  # ... and input bytes
    scan_batch_files: int = 500  # pass-1 batch size (header reads are cheap)


class Tuning(_TuningFields):
    """How the pipeline cuts and places the work: no effect on any output byte.

    The defaults suit 2-core machines; the command line sets the thresholds that go with
    its ``--local-pool`` (pipeline.options), tests and benchmarks set the others.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        tuning = super().__new__(cls, *args, **kwargs)
        for name in ("batch_files", "batch_bytes", "scan_batch_files"):
            if getattr(tuning, name) < 1:
                raise UsageError(f"{name} must be at least 1, not {getattr(tuning, name)}")
        return tuning


class TreeJob(NamedTuple):
    """A validated directory run (built once by ``pipeline.options``): what the user asked
    for, the per-file operation, and the :class:`Tuning` of the pipeline."""

    mode: Mode
    input: Path
    output: Path
    #: picklable per-file callable: operation(src, dst) -> bytes written; it carries the
    #: secret (never logged), the profile and the root UID (tasks.model.FileOperation)
    operation: FileOperation
    recursive: bool = False
    continue_on_error: bool = False
    #: follow input links that point outside the input folder (else: skipped, with a reason)
    follow_symlinks: bool = False
    store: Path | None = None  # the run store (sqlite); None -> default in the state folder
    workers: int | None = None  # None: all cores; 0: inline, no dask
    scheduler: str | None = None  # tls://host:port of an existing dask scheduler
    insecure_scheduler: bool = False  # a plain tcp:// scheduler is accepted (pipeline.tls)
    worker_timeout: float | None = None  # seconds to wait for a first worker job; None: ever
    cluster: str | None = None  # name of configs/cluster/NAME.yaml (dask-jobqueue)
    #: local workers (no --scheduler/--cluster): "dask" (a distributed LocalCluster) or
    #: "processes" (a process pool: starts in ~0.1 s instead of ~1 s; the command line's
    #: choice, with ``Tuning.inline_below`` lowered to match: pipeline.options)
    local_pool: str = "dask"
    #: address a local dask cluster serves its dashboard on (":0": any free port); None:
    #: no dashboard, and no worker profiler feeding it (pipeline.cluster)
    dashboard: str | None = None
    #: "mirror" (input names, checked for identifiers) or "uid" (pipeline.names)
    output_names: str = "mirror"
    keep_names: bool = False  # mirror even names that hold identifiers
    #: run into an output holding files this store did not write (removed at the end)
    force: bool = False
    #: --sync: the run returns once every output is on disk (pipeline.writeback)
    sync: bool = False
    scan_only: bool = False
    dry_run: bool = False
    plan: Path | None = None  # --plan FILE: where --dry-run writes its plan (0600)
    #: --files-from / --retry-failed: the input-relative paths to run instead of the walk
    files: tuple[str, ...] | None = None
    verbosity: int = 1  # 0 errors only, 1 warnings, 2 verbose, 3 debug (may show PHI)
    #: options echoed in the report (read only: the default is shared)
    report_options: Mapping[str, Any] = MappingProxyType({})
    tuning: Tuning = Tuning()

    @property
    def secret(self) -> bytes | None:
        """The HMAC secret of the replacements (-e); never logged."""
        return self.operation.secret

    @property
    def secret_fingerprint(self) -> str:
        return self.operation.secret_fingerprint

    @property
    def profile(self) -> CompiledProfile | None:
        """The compiled profile the operation applies (-e; options included)."""
        return self.operation.profile

    @property
    def root_uid(self) -> str | None:
        return self.operation.root_uid


class RunSummary:
    """Counts of one run, by outcome (``pipeline.outcomes``); they add up to the files found.

    ``done`` counts the files written.  The CLI turns :attr:`ok` into the exit code.
    """

    __slots__ = ("already_done", "bytes_in", "bytes_out", "done", "errors", "failed",
                 "failed_list", "not_dicom", "pixels", "preview", "refused", "report_path",
                 "stopped_early", "study_list")

    def __init__(self, *, preview: bool = False) -> None:
        self.done = 0
        self.already_done = 0
        self.not_dicom = 0
        self.refused = 0
        self.failed = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.stopped_early = False
        self.preview = preview  # --scan-only or --dry-run: the counts say what pass 2 would do
        self.report_path: Path | None = None
        #: the relative paths of the files not written, with outcome and reason (0600:
        #: paths may hold identifiers); None when every file was written
        self.failed_list: Path | None = None
        #: per study, old -> new Patient ID and accession (0600; -e only)
        self.study_list: Path | None = None
        self.errors: list[tuple[str, str, str]] = []  # (rel path, kind, reason)
        #: files Clean Pixel Data changed or checked, by how (rule, ocr, checked)
        self.pixels: dict[str, int] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={getattr(self, name)}" for name in (
            "done", "already_done", "not_dicom", "refused", "failed", "stopped_early"))
        return f"RunSummary({counts}, errors={len(self.errors)})"

    @property
    def skipped(self) -> int:
        """Files not written and not failed: already done, not DICOM or refused."""
        return self.already_done + self.not_dicom + self.refused

    @property
    def not_written(self) -> int:
        return self.not_dicom + self.refused + self.failed

    @property
    def ok(self) -> bool:
        """Exit 0: nothing failed, and nothing stopped the run (without ``--continue``
        a refused or not-DICOM file stops it before anything is written)."""
        return self.preview or (not self.failed and not self.stopped_early)
