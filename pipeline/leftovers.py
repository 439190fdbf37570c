"""Files in the output folder that the current settings did not produce.

A stricter rerun must not leave the outputs of a laxer one behind (a file the gdcmanon
profile wrote stays when ``basic`` refuses it; a mirrored ``DOE^JOHN/`` stays beside the
``--output-names uid`` tree).  The store's journal names every output a run wrote and the
operation (settings fingerprint) that wrote it, so:

* before pass 2, files in the output that no journal row names and this run does not
  write (another program's, another store's) stop the run with exit 2, unless ``--force``;
* after pass 2, every file not journaled done by the current operation is removed, and
  the folders it leaves empty; the run says how many (paths only with ``-D``).

The output is walked once, before pass 2; a run into an empty or new output folder has
nothing to check at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.store import Store
from tasks.errors import UsageError
from tasks.fileio import TEMP_MARKER


def output_files(root: Path) -> Iterator[tuple[str, int]]:
    """Every file under ``root`` (relative, POSIX) and its size, temp files of a running
    write aside.

    Plain string joins over ``os.scandir``: the walk runs on every rerun into a filled
    output, so it costs what a listing and a stat per file cost.  The size is what the
    journal's is compared with (``Store.resume_pages``); a file gone meanwhile is left out.
    """
    stack = [("", str(root))]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((prefix + entry.name + "/", entry.path))
            elif TEMP_MARKER not in entry.name:
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
                yield prefix + entry.name, size


def check_before(root: Path, store: Store, force: bool,
                 planned: Callable[[], Iterable[str]]) -> int:
    """Refuse an output holding files no run of this store wrote (unless ``force``);
    returns how many files the output holds, kept in the store for :func:`remove_after`
    (every file the run adds is the current settings' own).

    ``planned`` lists the outputs this run writes: a run killed before it journaled its
    last batches left those files, and its rerun writes them again.
    """
    if not root.is_dir():
        return 0
    listed = store.list_outputs(output_files(root))
    if not listed:
        return 0
    unknown = set(store.not_journaled_outputs())
    if unknown:
        for rel in planned():
            unknown.discard(rel)
    if unknown and not force:
        raise UsageError(
            f"the output folder holds {len(unknown):,} files that no run of this store wrote: "
            "choose an empty output folder, or --force to remove them at the end of the run")
    return listed


def remove_after(root: Path, store: Store, op: str) -> list[str]:
    """Remove the files :func:`check_before` listed (the output before the run) that the
    current operation did not produce; returns their paths.

    Each folder on the way is opened without following a link (as outputs are created), so
    a folder swapped for a link meanwhile cannot turn the removal onto files elsewhere; a
    link found in the output is itself removed, never its target.
    """
    stale = store.not_journaled_outputs(op)
    removed = []
    for rel in stale:
        with contextlib.suppress(OSError):
            _unlink_below(root, rel)
            removed.append(rel)
    return removed


_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _unlink_below(root: Path, rel: str) -> None:
    """Unlink ``root/rel`` and the folders it leaves empty, descriptor by descriptor."""
    *folders, name = rel.split("/")
    fds = [os.open(root, _FOLDER)]
    try:
        for folder in folders:
            fds.append(os.open(folder, _FOLDER, dir_fd=fds[-1]))
        os.unlink(name, dir_fd=fds[-1])
        for fd, folder in zip(reversed(fds[:-1]), reversed(folders)):
            try:
                os.rmdir(folder, dir_fd=fd)
            except OSError:
                break  # not empty: neither are its parents
    finally:
        for fd in fds:
            os.close(fd)
