"""The kernel's page cache between two measured commands of ``make bench``.

Why: an ext4 without a journal, before handing out a free inode, looks its inode table
block up in the cache and skips the inode when that block is dirty and the inode was
deleted lately (``recently_deleted``, ``fs/ext4/ialloc.c``); a block that is not cached
counts as written out.  After the harness deleted earlier outputs, creating files thus
cost each command 0.02-0.3 ms a file, depending on what the cache held (20,000 creates:
2.45-2.97 s of system time with the cache as it was, 0.40-0.44 s after a drop;
``benchmarks/creates.py``).  So before each command the clean cache is dropped
(``vm.drop_caches=1``, root only) and what the commands read is read back in: the
archive, and the files of the programs (interpreters, libraries, modules) that were in
the cache after a round of every command, so that no command reads its code from the
disk either (anonpipe's imports took 104-126 ms after a drop, 62-69 ms before).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

DROP_CACHES = Path("/proc/sys/vm/drop_caches")
READ_CHUNK = 1 << 20
PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def available() -> bool:
    """Whether this process may drop the clean page cache (root, and a ``/proc/sys`` it
    may write: a container's may be read-only)."""
    return os.access(DROP_CACHES, os.W_OK)


def drop() -> None:
    """Drop the clean page cache (dirty pages stay: write them back first)."""
    DROP_CACHES.write_text("1\n")


def cached(path: str) -> bool:
    """Whether any page of the regular file ``path`` is in the page cache (``mincore``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            return False
        try:
            pages = ctypes.create_string_buffer((size + PAGE - 1) // PAGE)
            if _libc.mincore(address, size, pages) != 0:
                return False
            return any(byte & 1 for byte in pages.raw)
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)


def files(root: Path) -> Iterator[str]:
    """The regular files under ``root`` (not through links)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path) and os.path.isfile(path):
                yield path


def read(paths: Sequence[str] | Iterator[str]) -> int:
    """Read each file through (into the page cache); the bytes read."""
    total = 0
    buffer = bytearray(READ_CHUNK)
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as fh:
                while count := fh.readinto(buffer):
                    total += count
        except OSError:
            continue  # gone or unreadable since it was listed: nothing to warm
    return total


class PageCache:
    """Drops the clean page cache and reads back what the measured commands read."""

    def __init__(self, program_roots: Sequence[Path]) -> None:
        self.program_roots = program_roots
        self.programs: list[str] = []

    def remember(self) -> int:
        """Note the files under the program roots now in the cache (call it after a
        round of every command); the number noted."""
        self.programs = [path for root in self.program_roots for path in files(root)
                         if cached(path)]
        return len(self.programs)

    def reset(self, archive: Path) -> int:
        """Drop the clean cache (dirty pages are the caller's to write back first), then
        read the archive and the remembered program files back in; the bytes read."""
        drop()
        return read(files(archive)) + read(self.programs)
