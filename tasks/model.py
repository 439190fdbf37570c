"""Boundary types between the driver and the per-file work.

Everything here is a small record of plain values (a ``NamedTuple``: it pickles cheaply to
workers, is made faster than a frozen dataclass, and defining it costs next to nothing at
start-up, where each frozen dataclass compiles its methods, ~0.5 ms); heavyweight objects
(keys, certificates) are rebuilt lazily on the worker.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

if TYPE_CHECKING:
    from tasks.crypto import EnvelopeEncryptor
    from tasks.engine import Staged
    from tasks.profile import CompiledProfile


class FieldEquality:
    """Equality and hash by the fields a class names in ``_fields``, as a NamedTuple's,
    for records that cannot be tuples (slots the compiled modules read, a cache of its
    own).  An operation's fingerprint reads the same fields (``pipeline.plan``)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())


class Unrecorded:
    """What the driver asks of an operation (:class:`FileOperation`) that leaves it nothing
    to record, re-identification and dumb mode: no secret, no profile, no new UIDs, the
    pixels as they are.  A base of their NamedTuples (it adds no slot)."""

    __slots__ = ()
    secret: ClassVar[None] = None
    secret_fingerprint: ClassVar[str] = ""
    profile: ClassVar[None] = None
    root_uid: ClassVar[None] = None
    pixel_policy: ClassVar[str] = "keep"
    encryptor: ClassVar[None] = None


class Status(str, enum.Enum):
    """Outcome of one file."""

    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class FileResult(NamedTuple):
    """What happened to one file.  ``error`` never contains a patient value."""

    source: str
    status: Status
    bytes_in: int = 0
    bytes_out: int = 0
    error_kind: str | None = None
    error: str | None = None
    seconds: float = 0.0
    #: what Clean Pixel Data did (tasks.pixels.clean.PixelResult.how), None: nothing
    pixels: str | None = None

    def as_row(self) -> dict[str, object]:
        """A JSON-ready dict (what dask tasks return and the store journals)."""
        extra: dict[str, object] = {} if self.pixels is None else {"pixels": self.pixels}
        return {
            "source": self.source,
            "status": self.status.value,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "error_kind": self.error_kind,
            "error": self.error,
            "seconds": round(self.seconds, 6),  # a row per file in the store: no noise digits
            **extra,
        }


class Written(NamedTuple):
    """What an operation wrote when it has more to say than the byte count."""

    size: int
    pixels: str | None = None  # rule, ocr or checked: Clean Pixel Data was applied


class FileOperation(Protocol):
    """A picklable per-file operation: read ``src``, write ``dst`` atomically.

    Raises :class:`tasks.errors.AnonpipeError` subclasses for bad files; the caller turns
    them into a failed :class:`FileResult`.  Returns the number of bytes written.  The
    paths come as ``str`` from a batch (no path object built per file), as ``Path`` from
    single-file mode.
    """

    def __call__(self, src: Path | str, dst: Path | str) -> int | Written: ...

    def prepare(self, src: Path | str) -> Staged:
        """The output of ``src`` made, not yet written (:class:`tasks.engine.Staged`): what
        a batch calls, to write several outputs together (``tasks.batch``).  Raises as
        ``__call__`` does; the input stays open until the caller closes it."""

    # what the driver needs of the operation's settings (None: the operation has none)
    @property
    def secret(self) -> bytes | None:
        """The HMAC secret of the replacements (tasks.uids); never logged."""

    @property
    def secret_fingerprint(self) -> str:
        """Its public fingerprint, for reports ("" without a secret)."""

    @property
    def profile(self) -> CompiledProfile | None:
        """The compiled profile applied (options included)."""

    @property
    def root_uid(self) -> str | None:
        """The root of the new UIDs."""

    @property
    def pixel_policy(self) -> str:
        """What it does with pixels that may show text: clean, refuse or keep
        (tasks.pixels.clean; ``keep`` for an operation that does not look at pixels)."""

    @property
    def encryptor(self) -> EnvelopeEncryptor | None:
        """The recipients of the encrypted originals (None: nothing encrypted)."""


class WorkItem(NamedTuple):
    """One file of a batch: absolute source, absolute destination, path relative to input."""

    src: str
    dst: str
    rel: str
    size: int = 0


class Batch(NamedTuple):
    """A unit of dask work: several files processed by one task."""

    batch_id: int
    items: tuple[WorkItem, ...] = ()
    #: the output folder: outputs under it are created without following links in it
    output_root: str | None = None
    #: make the outputs durable before returning (one ``syncfs``); False where the driver
    #: shares the workers' machine and confirms them itself (pipeline.writeback)
    sync: bool = True

    def __reduce__(self) -> tuple[Callable[..., Batch], tuple[object, ...]]:
        """Pickled with its items as columns of plain values: a record per item costs a
        Python call each way (``__getnewargs__``, then ``__new__``)."""
        items = self.items
        others = {name: getattr(self, name) for name in _BATCH_FIELDS}
        return _batch, (others, [item.src for item in items], [item.dst for item in items],
                        [item.rel for item in items], [item.size for item in items])


#: the fields of a Batch other than its items (pickled as they are)
_BATCH_FIELDS = tuple(name for name in Batch._fields if name != "items")


def _batch(others: dict[str, Any], srcs: list[str], dsts: list[str], rels: list[str],
           sizes: list[int]) -> Batch:
    """A Batch from what :meth:`Batch.__reduce__` gives."""
    return Batch(items=tuple(map(WorkItem, srcs, dsts, rels, sizes)), **others)
