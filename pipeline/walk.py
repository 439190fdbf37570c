"""Listing the input tree: a streaming, sorted, fault-tolerant walk.

Why a generator of small entries: the archive may hold millions of files and the driver's
memory must not grow with it; only one directory's names are held at a time (sorted, so
every run, and every resume, sees the same order).  Entries that cannot be read (dangling
links, FIFOs, unlistable folders, directory loops) come back as error entries for the
report instead of exceptions, and a FIFO is never opened (that would block the run).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from tasks.errors import UsageError
from tasks.fileio import TEMP_MARKER

#: error_kind of entries the walk itself cannot list or read
UNREADABLE = "Unreadable"
#: error_kind of a symbolic link that leads out of the input folder: skipped (never a
#: failure), unless the run follows such links
LINK_OUTSIDE = "LinkOutsideInput"


class Entry(NamedTuple):
    """One input file: path relative to the input root (POSIX separators) and its stat."""

    rel: str
    size: int = 0
    mtime_ns: int = 0
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None


def check_locations(input_dir: Path, output_dir: Path) -> None:
    """Refuse an output folder equal to, inside, or containing the input folder.

    Inside: a recursive rerun would scan its own outputs.  Containing: the mirrored tree
    could overwrite input files (``in=out/a``, file ``a/x`` -> ``out/a/x``).
    """
    if not input_dir.is_dir():
        raise UsageError(f"input {input_dir} is not a directory")
    src = input_dir.resolve()
    dst = output_dir.resolve()
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"output {output_dir} exists and is not a directory")
    if dst == src:
        raise UsageError(f"output folder {output_dir} is the input folder")
    if dst.is_relative_to(src):
        raise UsageError(f"output folder {output_dir} is inside the input folder {input_dir}")
    if src.is_relative_to(dst):
        raise UsageError(f"input folder {input_dir} is inside the output folder {output_dir}")


def skipped_name(name: str) -> bool:
    """Dot-files (hidden, editors' and our own temp files) are not part of the archive."""
    return name.startswith(".") or TEMP_MARKER in name


def iter_files(root: Path, recursive: bool = False, follow_outside: bool = False
               ) -> Iterator[Entry]:
    """Files under ``root`` in sorted order; sub-folders only with ``recursive`` (``-r``).

    Symbolic links within the input folder are followed (to files and, with ``-r``, to
    folders); one that leads outside it is an entry of kind :data:`LINK_OUTSIDE` (a link
    planted in an archive must not pull other files into the output), unless
    ``follow_outside``.  A link that points back to one of its own ancestors is reported
    once instead of looping.
    """
    root_stat = os.stat(root)
    real_root = os.path.join(os.path.realpath(root), "")
    # each frame: (folder path, rel prefix, iterator over its sorted names, ancestor inode
    # set); a frame's iterator goes on where it was left for a sub-folder
    stack: list[tuple[str, str, Iterator[str], frozenset[tuple[int, int]]]] = []
    first = _list(str(root))
    if isinstance(first, Entry):
        yield first
        return
    stack.append((str(root), "", iter(first),
                  frozenset({(root_stat.st_dev, root_stat.st_ino)})))
    join, lstat = os.path.join, os.lstat
    while stack:
        folder, prefix, names, ancestors = stack[-1]
        for name in names:
            if skipped_name(name):
                continue
            path = join(folder, name)
            rel = prefix + name
            try:
                st = lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    st = os.stat(path)
                    if not follow_outside and _leaves(path, real_root):
                        yield _outside(rel)
                        continue
            except FileNotFoundError:
                if os.path.islink(path):
                    yield Entry(rel, error_kind=UNREADABLE, error="dangling symbolic link")
                continue  # vanished between listing and stat: not part of the archive any more
            except OSError as exc:
                yield Entry(rel, error_kind=UNREADABLE, error=_reason(exc))
                continue
            mode = st.st_mode
            if stat.S_ISREG(mode):
                yield Entry(rel, st.st_size, st.st_mtime_ns)
            elif stat.S_ISDIR(mode):
                if not recursive:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    yield Entry(rel, error_kind=UNREADABLE,
                                error="folder loop through a symbolic link")
                    continue
                listed = _list(path, rel)
                if isinstance(listed, Entry):
                    yield listed
                    continue
                stack.append((path, rel + "/", iter(listed), ancestors | {key}))
                break  # into the sub-folder; this folder's names go on after it
            else:
                yield Entry(rel, error_kind=UNREADABLE,
                            error=f"not a regular file ({_kind_of(mode)})")
        else:
            stack.pop()


def _leaves(path: str, real_root: str) -> bool:
    """Whether ``path`` resolves outside ``real_root`` (resolved, with a trailing slash)."""
    return not os.path.realpath(path).startswith(real_root)


def _outside(rel: str) -> Entry:
    return Entry(rel, error_kind=LINK_OUTSIDE, error="symbolic link to outside the input "
                 "folder: skipped (--follow-symlinks follows it)")


def _list(folder: str, rel: str = ".") -> list[str] | Entry:
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        return Entry(rel, error_kind=UNREADABLE, error=f"cannot list folder: {_reason(exc)}")


def _reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def subfolders_with_dicom(root: Path, probe: int = 64) -> int | None:
    """With no file at the top of ``root``: how many of its sub-folders hold a DICOM file
    (a "DICM" prefix at byte 128 among the first ``probe`` files below each); None when
    the top holds files (then a run without ``-r`` has something to do).

    Why: without ``-r`` a folder of patient folders lists no file at all, and a run that
    finds nothing would look like a success.
    """
    folders = []
    try:
        with os.scandir(root) as listing:
            for item in listing:
                if skipped_name(item.name):
                    continue
                if item.is_file():
                    return None
                if item.is_dir():
                    folders.append(item.path)
    except OSError:
        return None
    return sum(1 for folder in folders if _holds_dicom(folder, probe))


def _holds_dicom(folder: str, probe: int) -> bool:
    seen = 0
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            if skipped_name(name) or not os.path.isfile(path):  # a FIFO would block
                continue
            seen += 1
            try:
                with open(path, "rb") as fh:
                    if fh.read(132)[128:] == b"DICM":
                        return True
            except OSError:
                pass
            if seen >= probe:
                return False
    return False


def check_listed(rel: str) -> str | None:
    """Why ``rel`` (a line of ``--files-from``) is no path inside the input, or None."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or ".." in parts or "" in parts or "." in parts:
        return "not a relative path inside the input folder (no leading /, no . or ..)"
    return None


def iter_listed(root: Path, rels: Iterable[str], follow_outside: bool = False
                ) -> Iterator[Entry]:
    """The listed files (``--files-from``, ``--retry-failed``) as the walk would give them,
    sorted; a listed path that is gone or no regular file comes back as an error entry, one
    that resolves outside the input as :data:`LINK_OUTSIDE` (as in :func:`iter_files`)."""
    real_root = os.path.join(os.path.realpath(root), "")
    for rel in sorted(set(rels)):
        path = os.path.join(str(root), rel)
        try:
            st = os.stat(path)
            if not follow_outside and _leaves(path, real_root):
                yield _outside(rel)
                continue
        except FileNotFoundError:
            yield Entry(rel, error_kind=UNREADABLE, error="listed file not found")
            continue
        except OSError as exc:
            yield Entry(rel, error_kind=UNREADABLE, error=_reason(exc))
            continue
        if stat.S_ISREG(st.st_mode):
            yield Entry(rel, st.st_size, st.st_mtime_ns)
        else:
            yield Entry(rel, error_kind=UNREADABLE,
                        error=f"not a regular file ({_kind_of(st.st_mode)})"
                        if not stat.S_ISDIR(st.st_mode) else "listed path is a folder")
