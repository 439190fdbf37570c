"""The frame every per-file operation runs in: input opened, read whole or split, output
assembled and written.

De-identification (``tasks.deidentify``), re-identification (``tasks.reidentify``) and dumb
mode (``tasks.dumb``) differ only in the edit they make of one parsed file; how the input is
opened (regular files only), whether it is read whole or split at its pixel data
(``tasks.pixeltail``), how the output's pieces are put together (a deflated data set
deflated again, PS3.5 A.5) and written (``tasks.fileio``) is this module's, once for all
three, so none of them depends on another.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from tasks.dicomio import DicomFile
from tasks.edit import Chunk
from tasks.errors import DicomFormatError
from tasks.fileio import FileRange, Piece, Stream, current_policy, joined, write_atomic
from tasks.model import Written
from tasks.pixeltail import WholeFile

#: an operation on a file's bytes: the output's pieces (or bytes)
Whole = Callable[[bytes], Sequence[Piece] | bytes]
#: an operation on a large file open at ``fd`` of ``size`` bytes, its pixel data left in the
#: file (``tasks.pixeltail.split_rendered``); None, or the file's bytes when already read,
#: when the file does not split
Split = Callable[[int, int], list[Piece] | WholeFile | None]


def write_staged(staged: Staged, dst: Path | str) -> int | Written:
    """Write ``staged`` to ``dst`` and close its input, written or not."""
    try:
        return staged.write(dst)
    finally:
        staged.close()


def stage(src: Path | str, whole: Whole, split: Split, split_from: int) -> Staged:
    """The output of ``src``, made and not yet written: by ``split`` (the pixel data left
    in the file: ``tasks.pixeltail``) for files of ``split_from`` bytes and more that
    split, else by ``whole`` on the file's bytes (those ``split`` read, if it read them
    all).  The input stays open until :meth:`Staged.close`: the output's pieces may still
    read from it."""
    fd, size, mode = _open_input(src)
    try:
        data = None
        if size >= split_from:
            pieces = split(fd, size)
            if isinstance(pieces, WholeFile):
                data = pieces.data
            elif pieces is not None:
                # the header's pieces around the pixel data joined: a restored file has
                # hundreds (a scanner's private groups put back one by one), each looked
                # at again by every later step, where one copy of the header costs less
                pieces = joined(pieces)
                return Staged(fd, pieces, _held(pieces), mode)
        parts = whole(data if data is not None else _read_all(fd, size))
        if size < JOIN_BELOW and not isinstance(parts, bytes):
            try:
                parts = b"".join(parts)  # type: ignore[arg-type]  # or TypeError
            except TypeError:  # a FileRange or Stream among them: written as pieces
                pass
        return Staged(fd, parts, _held(parts), mode)
    except BaseException:
        os.close(fd)
        raise


class Staged:
    """An output made and not yet written, and the input it was made from, still open.

    Why a step of its own: a pass-2 batch makes several outputs before it writes them
    (``tasks.batch``), so that the kernel's copies of their pixel data, which sweep the
    processor's caches, do not come between the reads, parses and edits of consecutive
    files (measured on 512x512 CT slices: a run's user CPU 14 % lower)."""

    __slots__ = ("fd", "held", "pieces", "pixels", "st_mode")

    def __init__(self, fd: int, pieces: Sequence[Piece] | bytes, held: int, st_mode: int,
                 pixels: str | None = None) -> None:
        self.fd = fd  #: the input (a FileRange or Stream among the pieces reads from it)
        self.pieces = pieces
        #: bytes of the pieces held in memory (not the ranges still in the input)
        self.held = held
        self.st_mode = st_mode  #: the input's mode, which the output's permissions follow
        self.pixels = pixels  #: how Clean Pixel Data was applied, if it was

    def write(self, dst: Path | str) -> int | Written:
        """Write the output atomically to ``dst``; the bytes written (with how its pixels
        were cleaned, if they were).  Inside ``tasks.fileio.output_policy``, it is created
        no more readable than its input."""
        policy = current_policy()
        if policy is not None:
            policy.like_mode(self.st_mode)
        size = write_atomic(dst, self.pieces)
        return size if self.pixels is None else Written(size, self.pixels)

    def close(self) -> None:
        """Close the input (written or not); once is enough."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _held(parts: Sequence[Piece] | bytes) -> int:
    if isinstance(parts, bytes):
        return len(parts)
    return sum(len(part) for part in parts if not isinstance(part, FileRange | Stream))


#: inputs below this size have their output's pieces joined before it is written: copying
#: a few kilobytes costs less than handing ``writev`` a buffer per piece and summing their
#: lengths (~7,000 instructions for a 1.5 KB CT header's two dozen pieces); larger files
#: keep their pieces (their pixel data is then never copied)
JOIN_BELOW = 64 << 10


def file_pieces(df: DicomFile, prefix: bytes, meta: bytes, body: Sequence[Chunk],
                stream: bytes | None = None) -> list[Chunk]:
    """The output file of ``df`` edited: ``prefix`` (preamble and "DICM"), ``meta``, the
    rendered ``body`` and ``df``'s trailer.  A deflated input's body is deflated again;
    ``stream`` is a deflate stream to use instead when it inflates to that same body (the
    original one, which our compressor would not reproduce)."""
    if not df.deflated:
        return [prefix, meta, *body, df.trailer]
    data = b"".join(body) + df.trailer
    if stream is not None and _inflates_to(stream, data):
        return [prefix, meta, stream]
    return [prefix, meta, deflate(data)]


def deflate(body: bytes) -> bytes:
    """Raw deflate as PS3.5 A.5 requires (no zlib header)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(body) + compressor.flush()
    return data + b"\0" if len(data) % 2 else data


def _inflates_to(stream: bytes, body: bytes) -> bool:
    try:
        return zlib.decompress(stream, -zlib.MAX_WBITS) == body
    except zlib.error:
        return False


# --------------------------------------------------------------------------- input


def read_input(src: Path | str) -> bytes:
    """The whole input file (see :func:`opened_input` for what is refused)."""
    with opened_input(src) as (fd, size):
        return _read_all(fd, size)


@contextlib.contextmanager
def opened_input(src: Path | str) -> Iterator[tuple[int, int]]:
    """The input open for reading, and its size.  Anything but a regular file is refused
    before it is opened: reading a FIFO blocks until a writer comes (forever, in a batch),
    a device never ends.  Inside ``tasks.fileio.output_policy``, the policy takes the
    permissions of the file opened (``OutputPolicy.like_mode``) for the next output."""
    fd, size, mode = _open_input(src)
    try:
        policy = current_policy()
        if policy is not None:
            policy.like_mode(mode)
        yield fd, size
    finally:
        os.close(fd)


def _open_input(src: Path | str) -> tuple[int, int, int]:
    """The input open (:func:`opened_input`), its size and its mode (the file read, not
    whatever the name pointed to before)."""
    try:
        mode = os.stat(src).st_mode
        if not S_ISREG(mode):
            if S_ISDIR(mode):
                raise DicomFormatError("is a directory")
            raise DicomFormatError(f"not a regular file ({_file_kind(mode)})")
        # O_NONBLOCK: should a FIFO replace the file after the stat, open() still returns
        fd = os.open(src, _INPUT_FLAGS)
    except PermissionError:
        raise DicomFormatError("permission denied") from None
    except FileNotFoundError:
        reason = "dangling symbolic link" if os.path.islink(src) else "no such file"
        raise DicomFormatError(reason) from None
    except IsADirectoryError:
        raise DicomFormatError("is a directory") from None
    except OSError as exc:
        raise DicomFormatError(f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not S_ISREG(info.st_mode):
            raise DicomFormatError("not a regular file (replaced while opening)")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size, info.st_mode


_INPUT_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


def _read_all(fd: int, size: int) -> bytes:
    """The rest of the file from its current offset (it may have grown since the stat)."""
    try:
        data = os.read(fd, size + 1)
        if data and len(data) != size:  # grown since the stat, or a short read: to the end
            chunks = [data]
            while more := os.read(fd, 1 << 20):
                chunks.append(more)
            data = b"".join(chunks)
    except OSError as exc:
        raise DicomFormatError(f"cannot read: {exc.strerror or exc}") from None
    if not data:
        raise DicomFormatError("empty file")
    return data


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return f"mode {stat.S_IFMT(mode):o}"
