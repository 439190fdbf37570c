"""Atomic output files: a reader never sees a half-written DICOM file.

The bytes are written to a nameless ``O_TMPFILE`` in the destination folder and linked in
under the final name when complete, so a killed writer leaves nothing.  Where that is not
available (or the final name exists), a temporary file in the destination folder (same file
system, so ``os.replace`` is atomic) is renamed over it; it starts with a dot (directory
scans skip it) and carries a fixed marker so a resumed run can sweep leftovers of a killed
one.

Durability.  Alone, :func:`write_atomic` fsyncs each file before the rename (single-file
mode).  Inside :func:`deferred_durability` (what a pass-2 batch uses) it does not: the
batch writes and renames all its files, then, for workers on another machine than the
driver, :meth:`Durability.commit` makes them durable at once with one ``syncfs(2)`` per
output file system (or, where there is no ``syncfs``, an fsync of every file and folder
written) before the batch returns its rows for the driver to journal.  Why: a per-file
fsync costs 0.25 ms of I/O wait on this kind of disk, and worse, each one forces an ext4
journal commit that the next file's ``open`` then waits behind (measured: 2,000 small
files, 3.0 s with per-file fsync, most of it in ``open``/``fsync``; one ``syncfs`` per 200
files costs ~6 ms).  Workers on the driver's machine skip even that: the driver confirms
their outputs in the background and a restart of the machine makes the next run redo what
was not confirmed (``pipeline.writeback``).  What holds either way: a killed process never
leaves a partial file under its final name, and no journaled file is lost to a crash
without the next run writing it again.

Where.  Inside :func:`output_policy` (every pass-2 batch, and single-file mode) outputs are
created relative to the output folder's descriptor, each folder on the way opened with
``O_NOFOLLOW``, so a link planted in the output tree cannot send a file elsewhere; an output
name that exists as a link is refused, not replaced; and each output is created no more
readable than its input (:meth:`OutputPolicy.like`).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

from tasks.errors import DicomFormatError, OutputError

TEMP_MARKER = ".anonpipe-tmp-"
MAX_PIECES = 512  # below IOV_MAX (1024 on Linux): more pieces are joined first
COPY_BLOCK = 1 << 20  # bytes per read/write where the kernel cannot copy a range itself


class FileRange:
    """A piece of an output that is a byte range of an open input file (a large file's
    pixel data): copied file to file by the kernel (``copy_file_range``), never read into
    the process, so a worker's memory does not grow with the files it writes."""

    __slots__ = ("fd", "length", "offset")

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length

    def __repr__(self) -> str:
        return f"FileRange(fd={self.fd}, offset={self.offset}, length={self.length})"

    def __len__(self) -> int:
        return self.length


class Stream:
    """A piece of an output made while it is written: ``chunks()`` yields its bytes in
    order, ``length`` of them in all, known before (a large file's pixel data cleaned frame
    by frame, the encryption of its original pixel data), so that the piece is never held
    whole.  A source that ends early or runs on is an error, not a wrong output."""

    __slots__ = ("chunks", "length")

    def __init__(self, length: int, chunks: Callable[[], Iterable[bytes | memoryview]]
                 ) -> None:
        self.length = length
        self.chunks = chunks

    def __repr__(self) -> str:
        return f"Stream(length={self.length})"

    def __len__(self) -> int:
        return self.length


Piece = bytes | memoryview | FileRange | Stream


def temp_path_for(dst: Path) -> Path:
    return dst.parent / _temp_name(dst.name)


def _temp_name(name: str) -> str:
    return f".{name}{TEMP_MARKER}{os.getpid()}-{os.urandom(4).hex()}"


class Durability:
    """The files written since :func:`deferred_durability` began, not yet made durable.

    ``track`` false: the files are not even noted, for a caller that leaves their
    durability to someone else (a batch on the driver's machine: ``pipeline.writeback``)."""

    def __init__(self, track: bool = True) -> None:
        self.track = track
        self.folders: dict[int, str] = {}  # st_dev -> one folder written on that file system
        self.paths: list[str] = []  # files written (for the fallback without syncfs)
        self._known: set[str] = set()  # folders already noted

    def note(self, path: str) -> None:
        self.paths.append(path)
        folder = os.path.dirname(path) or "."
        if folder not in self._known:
            self._known.add(folder)
            try:
                self.folders.setdefault(os.stat(folder).st_dev, folder)
            except OSError:
                pass  # the commit's fallback still fsyncs the file itself

    def commit(self) -> None:
        """Make every noted file durable (raises OutputError when that fails)."""
        if not self.paths:
            return
        try:
            syncfs = _syncfs()
            if syncfs is not None:
                for folder in self.folders.values():
                    fd = os.open(folder, os.O_RDONLY)
                    try:
                        syncfs(fd)
                    finally:
                        os.close(fd)
            else:
                for path in self.paths:
                    _fsync_path(path)
                for folder in self._known:
                    _fsync_path(folder)
        except OSError as exc:
            raise OutputError(f"cannot make outputs durable: {exc.strerror or exc}") from None
        self.paths.clear()


_DEFERRED: contextvars.ContextVar[Durability | None] = contextvars.ContextVar(
    "anonpipe_deferred_durability", default=None)
_SYNCFS: list[Callable[[int], None] | None] = []  # resolved once per process


def _syncfs() -> Callable[[int], None] | None:
    """``syncfs(fd)`` from the C library (Linux), or None where it does not exist."""
    if not _SYNCFS:
        function: Callable[[int], None] | None = None
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            raw = libc.syncfs
        except (OSError, AttributeError, ImportError):
            raw = None
        if raw is not None:
            def call(fd: int) -> None:
                if raw(fd) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, os.strerror(errno))

            function = call
        _SYNCFS.append(function)
    return _SYNCFS[0]


def sync_file_system(folder: Path | str) -> None:
    """Write out every dirty page of the file system holding ``folder`` (``syncfs(2)``;
    ``sync(2)`` where there is none).  Raises OutputError when that fails."""
    syncfs = _syncfs()
    try:
        if syncfs is None:
            os.sync()
            return
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syncfs(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot make outputs durable: {exc.strerror or exc}") from None


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def deferred_durability(track: bool = True) -> Iterator[Durability]:
    """Within the block, :func:`write_atomic` skips its per-file fsync and notes the file;
    the caller must call :meth:`Durability.commit` before reporting the files as written
    (or, with ``track`` false, see to their durability otherwise: nothing is noted)."""
    state = Durability(track)
    token = _DEFERRED.set(state)
    try:
        yield state
    finally:
        _DEFERRED.reset(token)


def write_atomic(dst: Path | str, data: bytes | Sequence[Piece], fsync: bool = True) -> int:
    """Write ``data`` (bytes, or the file's pieces in order) to ``dst`` atomically; returns
    bytes written.

    Where the file system allows (Linux ``O_TMPFILE``: ext4, xfs, btrfs, tmpfs) the bytes
    go to a nameless file that is linked in under ``dst`` once complete: a process killed
    mid-write leaves nothing behind, and one directory entry is made instead of two.
    Elsewhere, and to replace an existing ``dst``, a dot-named temp file is renamed over it.
    The file is fsynced first unless ``fsync`` is false or a :func:`deferred_durability`
    block will make it durable with its batch.  Pieces go out with one ``writev``: a large
    file's pixel data is never joined into a new buffer, and a :class:`FileRange` is copied
    from its input file by the kernel.
    """
    if isinstance(data, _BUFFERS):
        chunks: Sequence[Piece] = (data,)
        total = len(data)
    else:
        chunks = data
        if len(chunks) > MAX_PIECES or not _WRITEV:
            chunks = joined(chunks)
        total = sum(map(len, chunks))
    deferred = _DEFERRED.get() if fsync else None
    sync = fsync and deferred is None
    policy = _POLICY.get()
    path = os.fspath(dst)
    mode = policy.mode if policy is not None else DEFAULT_MODE
    folder, name, owned = _output_folder(policy, path)
    try:
        try:
            _write_once(folder, name, chunks, total, sync, mode)
        except _LinkRefused:  # /proc or linkat unusable here: named temp files from now on
            _write_once(folder, name, chunks, total, sync, mode)
    finally:
        if owned:
            os.close(folder)
    if deferred is not None and deferred.track:
        deferred.note(path)
    return total


_BUFFERS = (bytes, bytearray, memoryview)
_WRITEV = hasattr(os, "writev")


# --------------------------------------------------------------------------- where outputs go

#: creation mode of an output when nothing narrower applies (the umask still applies)
DEFAULT_MODE = 0o644
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class OutputPolicy:
    """Where and how the outputs of one batch (or one single-file run) are created.

    ``root``: the output folder.  Every output under it is created relative to the
    folder's descriptor, each folder on the way opened without following a symbolic link
    (``O_NOFOLLOW``): a link planted in the output tree (``out/study -> /etc``) cannot send
    an output elsewhere; that file is refused instead.  ``mode``: the creation mode of the
    next output, never more readable than its input (:meth:`like`).
    """

    __slots__ = ("_folder", "folder_mode", "mode", "root", "root_fd")

    def __init__(self) -> None:
        self.root: str | None = None  # with a trailing separator
        self.root_fd = -1
        self.mode = DEFAULT_MODE
        #: creation mode of folders made for the next output (their names mirror the
        #: input's, and may name a patient): no class that cannot read the input may list
        #: them
        self.folder_mode = 0o777
        #: the last folder opened under root, kept open
        self._folder: tuple[str, int] | None = None

    def like(self, src: Path | str) -> None:
        """The next output gets no read or write permission its input lacks (the owner
        keeps write permission, so a rerun can replace it)."""
        try:
            permissions = os.stat(src).st_mode
        except OSError:
            permissions = 0o600  # the operation will fail on it anyway
        self.like_mode(permissions)

    def like_mode(self, st_mode: int) -> None:
        """:meth:`like` for an input whose ``st_mode`` is known (the ``fstat`` of the open
        input: ``tasks.engine``)."""
        permissions = st_mode & 0o777
        self.mode = DEFAULT_MODE & (permissions | stat.S_IWUSR)
        self.folder_mode = (stat.S_IRWXU | (stat.S_IRWXG if permissions & stat.S_IRGRP else 0)
                            | (stat.S_IRWXO if permissions & stat.S_IROTH else 0))

    def folder(self, rel: str) -> int:
        """Descriptor of the folder ``rel`` under the root (made when missing); no link is
        followed on the way.  Kept open: a batch's files share few folders."""
        if self._folder is not None and self._folder[0] == rel:
            return self._folder[1]
        parts = rel.split("/") if rel else []
        if any(part in ("", ".", "..") for part in parts):
            raise OutputError("output path with an empty, '.' or '..' component")
        fd = os.dup(self.root_fd)
        for part in parts:
            fd = _enter(fd, part, self.folder_mode)  # closes the folder it leaves, always
        self.close_folder()
        self._folder = (rel, fd)
        return fd

    def close_folder(self) -> None:
        if self._folder is not None:
            os.close(self._folder[1])
            self._folder = None


def _enter(parent: int, name: str, mode: int) -> int:
    """Open (making it when missing) the sub-folder ``name`` of ``parent`` without following
    a link; ``parent`` is closed."""
    try:
        for attempt in (0, 1):
            try:
                return os.open(name, _FOLDER_FLAGS | _NOFOLLOW, dir_fd=parent)
            except FileNotFoundError:
                if attempt:
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=parent)
                except FileExistsError:
                    pass  # made meanwhile by another worker
        raise AssertionError("unreachable")
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutputError("a folder on the output path is a symbolic link or not a "
                              "folder: refused (links in the output tree are never "
                              "followed)") from None
        raise OutputError(f"cannot create output folder: {exc.strerror or exc}") from None
    finally:
        os.close(parent)


_POLICY: contextvars.ContextVar[OutputPolicy | None] = contextvars.ContextVar(
    "anonpipe_output_policy", default=None)


@contextlib.contextmanager
def output_policy(root: Path | str | None = None) -> Iterator[OutputPolicy]:
    """Within the block, :func:`write_atomic` creates outputs under ``root`` (made when
    missing) by descriptor and without following links, with the policy's mode."""
    policy = OutputPolicy()
    if root is not None:
        try:
            os.makedirs(root, exist_ok=True)
            policy.root_fd = os.open(root, _FOLDER_FLAGS)
            policy.root = os.path.join(os.fspath(root), "")
        except OSError:
            pass  # each file then fails with its own line (no folder to write in)
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)
        policy.close_folder()
        if policy.root_fd >= 0:
            os.close(policy.root_fd)


def current_policy() -> OutputPolicy | None:
    return _POLICY.get()


def _output_folder(policy: OutputPolicy | None, path: str) -> tuple[int, str, bool]:
    """(folder descriptor, file name, whether the caller closes it) for ``path``."""
    if policy is not None and policy.root is not None and path.startswith(policy.root):
        folder, _, name = path[len(policy.root):].rpartition("/")
        return policy.folder(folder), name, False
    parent = os.path.dirname(path) or "."
    try:
        try:
            fd = os.open(parent, _FOLDER_FLAGS)
        except (FileNotFoundError, NotADirectoryError):  # made on demand, not checked first
            os.makedirs(parent, mode=policy.folder_mode if policy else 0o777, exist_ok=True)
            fd = os.open(parent, _FOLDER_FLAGS)
    except OSError as exc:
        raise OutputError(f"cannot create output folder: {exc.strerror or exc}") from None
    return fd, os.path.basename(path), True


#: O_TMPFILE (Linux) and the /proc/self/fd path that links such a file in; cleared for
#: the rest of the process when the output file system refuses it (NFS, FUSE ...)
_ANONYMOUS = [getattr(os, "O_TMPFILE", 0) if os.path.isdir("/proc/self/fd") else 0]
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)
_TMPFILE_FLAGS = os.O_WRONLY | os.O_CLOEXEC


class _LinkRefused(Exception):
    """Linking a nameless file in failed for a reason other than an existing name."""


def joined(chunks: Sequence[Piece]) -> list[Piece]:
    """The byte pieces between file ranges joined into one each (for few ``writev`` calls)."""
    return [group if isinstance(group, FileRange | Stream) else b"".join(group)
            for group in _grouped(chunks)]


def _grouped(chunks: Sequence[Piece]
             ) -> Iterator[FileRange | Stream | list[bytes | memoryview]]:
    """The file ranges and streams, and the runs of byte pieces between them, in order."""
    run: list[bytes | memoryview] = []
    for chunk in chunks:
        if isinstance(chunk, FileRange | Stream):
            if run:
                yield run
                run = []
            yield chunk
        else:
            run.append(chunk)
    if run:
        yield run


def _write_once(folder: int, name: str, chunks: Sequence[Piece], total: int, fsync: bool,
                mode: int) -> None:
    tmp: str | None = None
    try:
        fd, tmp = _create(folder, name, mode)
        try:
            _write_all(fd, chunks, total)
            if fsync:
                os.fsync(fd)
            if tmp is None:
                tmp = _link_in(fd, folder, name)
        finally:
            os.close(fd)
        if tmp is not None:
            _check_replaceable(folder, name)
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write output: {exc.strerror or exc}") from None
        raise


def _create(folder: int, name: str, mode: int) -> tuple[int, str | None]:
    """An open file to write ``name``'s bytes to: nameless (temp name None) or a named temp
    file, both in ``folder``."""
    if _ANONYMOUS[0]:
        try:
            return os.open(".", _ANONYMOUS[0] | _TMPFILE_FLAGS, mode, dir_fd=folder), None
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:
                raise
            _ANONYMOUS[0] = 0
    tmp = _temp_name(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | _NOFOLLOW
    return os.open(tmp, flags, mode, dir_fd=folder), tmp


def _check_replaceable(folder: int, name: str) -> None:
    """An existing ``name`` is replaced only when it is a regular file: a link there is
    neither followed nor silently removed."""
    try:
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise OutputError(f"the output exists and is {kind}: refused (not replaced)")


def _write_all(fd: int, chunks: Sequence[Piece], total: int) -> None:
    """Write ``chunks`` at ``fd``'s offset.  Mostly they are all bytes: one ``writev``, with
    no look at each piece first (``writev`` refuses a piece that is not a buffer before
    writing anything, and then they go group by group)."""
    if _WRITEV:
        buffers = cast("Sequence[bytes | memoryview]", chunks)
        try:
            written = os.writev(fd, buffers)
        except TypeError:  # a FileRange or Stream among them: nothing was written
            pass
        else:
            if written < total:
                _write_rest(fd, buffers, written)
            return
    for group in _grouped(chunks):
        if isinstance(group, FileRange):
            _copy_range(group, fd)
        elif isinstance(group, Stream):
            _write_stream(group, fd)
        else:
            _write_bytes(fd, group, sum(map(len, group)))


def _write_bytes(fd: int, chunks: Sequence[bytes | memoryview], total: int) -> None:
    if not total:  # an empty piece (no elements after the pixel data): no system call
        return
    if len(chunks) == 1:
        written = os.write(fd, chunks[0])
    else:
        written = os.writev(fd, chunks) if chunks else 0
    if written < total:
        _write_rest(fd, chunks, written)


def _write_rest(fd: int, chunks: Sequence[bytes | memoryview], written: int) -> None:
    """Finish a short write (not seen on regular files): the bytes after ``written``."""
    view = memoryview(b"".join(chunks))[written:]
    while view:
        view = view[os.write(fd, view):]


def _write_stream(part: Stream, out: int) -> None:
    """Append ``part``'s chunks to ``out``; exactly ``part.length`` bytes, or an error."""
    left = part.length
    for chunk in part.chunks():
        if len(chunk) > left:
            raise DicomFormatError("the file grew while it was read (changed during the run)")
        if chunk:
            _write_bytes(out, [chunk], len(chunk))
            left -= len(chunk)
    if left:
        raise DicomFormatError("the file shrank while it was read (changed during the run)")


#: the ways left to copy a range: copy_file_range, then sendfile, then read/write; one is
#: dropped for the rest of the process when the kernel or file system refuses it
_RANGE_COPIERS = ["copy_file_range", "sendfile"]
_REFUSED = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


def _copy_range(part: FileRange, out: int) -> None:
    """Append ``part`` to ``out`` at its current offset; an input that ends early (changed
    under us) is an error, not a short output."""
    offset, left = part.offset, part.length
    while left:
        copied = _copy_some(part.fd, out, offset, min(left, 1 << 30))
        if copied == 0:  # the input's fault, not the output's: said as such
            raise DicomFormatError("the file shrank while it was read (changed during the run)")
        offset += copied
        left -= copied


def read_range(part: FileRange, block: int = COPY_BLOCK) -> Iterator[bytes]:
    """``part``'s bytes, ``block`` at a time; an input that ends early (changed under us)
    is an error, not short data."""
    offset, left = part.offset, part.length
    while left:
        try:
            data = os.pread(part.fd, min(left, block), offset)
        except OSError as exc:
            raise DicomFormatError(f"cannot read: {exc.strerror or exc}") from None
        if not data:
            raise DicomFormatError("the file shrank while it was read (changed during the run)")
        offset += len(data)
        left -= len(data)
        yield data


def _copy_some(src: int, out: int, offset: int, count: int) -> int:
    while _RANGE_COPIERS:
        how = _RANGE_COPIERS[0]
        try:
            if how == "copy_file_range":
                return os.copy_file_range(src, out, count, offset)
            return os.sendfile(out, src, offset, count)
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            _RANGE_COPIERS.pop(0)
    data = os.pread(src, min(count, COPY_BLOCK), offset)
    if data:
        _write_bytes(out, [data], len(data))
    return len(data)


def _link_in(fd: int, folder: int, name: str) -> str | None:
    """Give the nameless file ``fd`` the name ``name`` in ``folder``; when it exists (a
    rerun), give it a temp name instead and return that, for the caller to rename over it."""
    # linkat(AT_FDCWD, "/proc/self/fd/N", folder, name, AT_SYMLINK_FOLLOW): os.link makes
    # that call (not plain link(2), which would link the /proc symlink itself) when given a
    # dir fd.  The path is resolved at each call, so a forked child links its own file.
    source = f"/proc/self/fd/{fd}"
    try:
        try:
            os.link(source, name, dst_dir_fd=folder)
            return None
        except FileExistsError:
            tmp = _temp_name(name)
            os.link(source, tmp, dst_dir_fd=folder)
            return tmp
    except FileExistsError:
        raise  # the temp name is taken (not expected: random): an output error
    except OSError:
        _ANONYMOUS[0] = 0  # hidden /proc, a sandbox refusing linkat ...: the caller retries
        raise _LinkRefused from None


def remove_temp_files_of(dst: Path, root: Path | str | None = None) -> int:
    """Remove the named temp files a killed writer of ``dst`` left; returns how many.
    (Nameless ``O_TMPFILE`` outputs leave none: this is for the other file systems.)

    With ``root`` (the output folder ``dst`` lies under), the folder of ``dst`` is reached
    from the root's descriptor without following a link, as the output was created: a link
    planted in the output tree cannot lead the removal to another folder.  Only regular
    files are removed, never what a link points to."""
    path = os.fspath(dst)
    prefix = f".{os.path.basename(path)}{TEMP_MARKER}"
    base = os.path.join(os.fspath(root), "") if root is not None else None
    try:
        if base is not None and path.startswith(base):
            folder = _open_below(base, path[len(base):].rpartition("/")[0])
        else:
            folder = os.open(os.path.dirname(path) or ".", _FOLDER_FLAGS)
    except OSError:
        return 0  # no folder (or a link where one should be): nothing of ours to remove
    try:
        try:
            names = [entry for entry in os.listdir(folder) if entry.startswith(prefix)]
        except OSError:
            return 0
        return _remove_temps(folder, names)
    finally:
        os.close(folder)


def _open_below(root: str, rel: str) -> int:
    """Descriptor of ``root/rel``, each folder below ``root`` opened without following a
    link (``root`` itself is the user's to name, a link included); raises OSError."""
    fd = os.open(root, _FOLDER_FLAGS)
    for part in rel.split("/") if rel else []:
        try:
            if part in ("", ".", ".."):
                raise OSError(errno.EINVAL, "bad output path component")
            child = os.open(part, _FOLDER_FLAGS | _NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def _remove_temps(folder: int, names: Iterable[str]) -> int:
    """Unlink those of ``names`` in ``folder`` that are regular files; returns how many."""
    removed = 0
    for entry in names:
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(entry, dir_fd=folder, follow_symlinks=False).st_mode):
                os.unlink(entry, dir_fd=folder)
                removed += 1
    return removed


def sweep_temp_files(folder: Path) -> int:
    """Remove temp files a killed run left under ``folder``; returns how many.  The tree is
    walked by descriptor (``os.fwalk``), never through a link planted in it."""
    removed = 0
    if not folder.is_dir():
        return 0
    # the folder itself may be a link the user named (as outputs are written through it)
    for _, _, files, fd in os.fwalk(os.path.realpath(folder), follow_symlinks=False):
        removed += _remove_temps(fd, [entry for entry in files if TEMP_MARKER in entry])
    return removed
