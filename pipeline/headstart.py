"""Pass 1 begun while the driver starts: a process forked early in the driver's start-up
reads headers on the core that the start-up leaves idle.

Why: before its first pass-1 batch a directory run's driver spends ~0.1 s on one core,
importing its modules and reading its options (the pool workers are forked after that, so
that they start with all of it: ``pipeline.earlypool``).  On a 960-slice CT series that
was a fifth of the run, and pass 1 another ~50 ms after it.  The head start lists the input
as pass 1 does (``pipeline.walk``) and scans one file after another
(``tasks.inventory.scan_file``), until pass 1 begins.  It writes packed rows to a file in
memory (``memfd_create``), not a pipe: a pipe holds 64 KiB, ~270 rows of a CT series, and
the driver, busy starting, would leave it waiting there.

Then :func:`collect` stops it and takes its rows.  Pass 1 (``pipeline.scan``) uses a row
only when the head start replaced the same tags as the job does (its profile and Options,
read from the same command line) and only for a file that the driver's own listing finds
with the size and modification time the row was read with, and that was read without
error: the test the store's kept rows pass (``Store.unchanged``).  Every other file is
scanned as before.  What the head start sees is never printed; it exits at once on any
error, and the driver stops it (:func:`close`) however the run ends.

It starts only where it can help and not hurt: ``-e`` on a folder, workers on this
machine (no ``--scheduler``, ``--cluster``, ``--files-from``, job script or
``--explain``), at least two cores; and it reads at most :data:`MAX_FILES` files (their
rows wait in the driver until pass 1).
"""

from __future__ import annotations

# what the driver imports here is on its path to forking the head start: the rest is
# imported where it is used
import argparse
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.inventory import PackedRow

#: files the head start reads at most (a larger archive's pass 1 is mostly the pool's)
MAX_FILES = 4000
#: rows written together (one pickle: a series' shared head text is written once in it)
CHUNK = 32
#: seconds the driver waits for the head start to end the file it is reading
STOP_WITHIN = 2.0
_LENGTH = 4

#: what it needs of the system (Linux): a file in memory, a process handle, the CPU set
_LINUX = all(hasattr(os, name) for name in ("memfd_create", "pidfd_open", "sched_getaffinity"))
#: the running head start: (process id, its memory file)
_running: tuple[int, int] | None = None


def requested_profile(args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    """The profile (name or YAML path) and the PS3.15 Options the command line asks for."""
    from tasks.profile import DEFAULT_PROFILE

    return args.profile or DEFAULT_PROFILE, tuple(sorted(set(args.profile_options or ())))


def wanted(args: argparse.Namespace) -> bool:
    """Whether the command line is a run the head start helps (module docstring)."""
    paths = list(args.paths)
    source = args.input if args.input is not None else (paths[0] if paths else None)
    return (_LINUX and set(args.mode or ["e"]) == {"e"} and source is not None
            and args.scheduler is None and args.cluster is None and args.files_from is None
            and not args.print_job_script and args.explain is None
            and len(os.sched_getaffinity(0)) >= 2 and os.path.isdir(source))


def start(args: argparse.Namespace) -> None:
    """Fork the head start when :func:`wanted` says so (at most one per process).

    The driver imports what the scan needs and derives the replaced tags first: it needs
    both itself (the profile's are cached), and so the head start scans from its first
    instant, where importing them again on its own cost it ~35 ms."""
    global _running
    if _running is not None or not wanted(args):
        return
    from pipeline.walk import iter_files
    from tasks.inventory import pack_row, replaced_tags, scan_file
    from tasks.profile import get_profile, load_profile

    name, options = requested_profile(args)
    try:
        replaced = replaced_tags(get_profile(load_profile(name), options))
    except Exception:  # noqa: BLE001 - a bad profile: the options say so, in their words
        return
    root = Path(args.input if args.input is not None else args.paths[0])  # as the job has it
    try:
        rows = os.memfd_create("anonpipe-head-start", os.MFD_CLOEXEC)
    except OSError:
        return  # out of descriptors or memory: pass 1 does it all, as without
    try:
        pid = os.fork()
    except OSError:
        os.close(rows)
        return
    if pid == 0:  # the head start: never returns into the driver's code
        # (the collector is off, as in the driver's start-up: its rows hold no cycles)
        code = 0
        try:
            signal.signal(signal.SIGTERM, _stop_asked)
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it with the driver
            _send(rows, (str(root), args.recursive, args.follow_symlinks, replaced))
            chunk: list[PackedRow] = []
            prefix = os.path.join(str(root), "")
            for count, entry in enumerate(iter_files(root, args.recursive,
                                                     args.follow_symlinks)):
                if _stopped or count >= MAX_FILES:
                    break
                if entry.error_kind is None:
                    row = scan_file(prefix + entry.rel, replaced, (entry.size, entry.mtime_ns))
                    chunk.append(pack_row(entry.rel, row))
                    if len(chunk) >= CHUNK:
                        _send(rows, chunk)
                        chunk = []
            if chunk:
                _send(rows, chunk)
            _send(rows, [])
        except BaseException:  # noqa: BLE001 - silent: the driver scans what is missing
            code = 1
        finally:
            os._exit(code)
    _running = (pid, rows)


#: set in the head start by SIGTERM: stop after the file being read
_stopped: list[bool] = []


def _stop_asked(signum: int, frame: object) -> None:
    _stopped.append(True)


def collect(source: str, recursive: bool, follow_symlinks: bool,
            replaced: frozenset[int]) -> dict[str, PackedRow]:
    """Stop the head start and take its rows, by path, when it listed ``source`` as pass 1
    does and replaced the same tags (else none)."""
    global _running
    running, _running = _running, None
    if running is None:
        return {}
    pid, fd = running
    try:
        _stop(pid)
        messages = _messages(os.pread(fd, os.fstat(fd).st_size, 0))
        if next(messages, None) != (source, recursive, follow_symlinks, replaced):
            return {}
        return {row[0]: row for chunk in messages for row in chunk}
    finally:
        _drop(fd)


def close() -> None:
    """Stop a head start nobody collected (the run ended before pass 1)."""
    global _running
    running, _running = _running, None
    if running is not None:
        pid, fd = running
        _kill(pid)
        _drop(fd)


def _drop(fd: int) -> None:
    """Free the rows' memory (pool workers forked since hold the file too) and close it."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _stop(pid: int) -> None:
    """Ask the head start to stop after the file it is reading; killed if it does not
    within :data:`STOP_WITHIN` seconds (a file on a hung network share)."""
    import select

    try:
        os.kill(pid, signal.SIGTERM)
        ended = os.pidfd_open(pid)  # readable once the process has ended
        try:
            select.select([ended], [], [], STOP_WITHIN)
        finally:
            os.close(ended)
    except OSError:
        pass
    _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _send(fd: int, message: object) -> None:
    import pickle

    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(_LENGTH, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def _messages(data: bytes) -> Iterator[Any]:
    """The whole messages in ``data``, up to the empty chunk or a message cut short (the
    head start was killed while writing it)."""
    import pickle

    at = 0
    while at + _LENGTH <= len(data):
        size = int.from_bytes(data[at:at + _LENGTH], "little")
        at += _LENGTH
        if at + size > len(data):
            return
        message = pickle.loads(data[at:at + size])
        at += size
        if message == []:
            return
        yield message
