"""Atomic output files: a reader never sees a half-written DICOM file.

The temporary file lives in the destination folder (same file system, so ``os.replace`` is
atomic), starts with a dot (directory scans skip it) and carries a fixed marker so a resumed
run can sweep leftovers of a killed one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tasks.errors import OutputError

TEMP_MARKER = ".anonpipe-tmp-"


def temp_path_for(dst: Path) -> Path:
    return dst.parent / f".{dst.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"


def write_atomic(dst: Path, data: bytes, fsync: bool = True) -> int:
    """Write ``data`` to ``dst`` through a temp file + fsync + rename; returns bytes written."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder: {exc.strerror}") from None
    tmp = temp_path_for(dst)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OutputError(f"cannot write output: {exc.strerror or exc}") from None
    return len(data)


def sweep_temp_files(folder: Path) -> int:
    """Remove temp files a killed run left under ``folder``; returns how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for path in folder.rglob(f"*{TEMP_MARKER}*"):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed
