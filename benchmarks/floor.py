"""The floor under ``anonpipe -e`` of an archive: its system calls and nothing else.

Why: ``make bench`` compares anonpipe with ``cp -r``, which only copies.  This script
does what a run's two passes must do to the file system, no more, from the same two
forked workers after the same imports, so the distance between it and ``cp -r`` is what
the design costs (two processes sharing this machine's cores, the interpreter, a header
read in pass 1), and the distance between anonpipe and it is what the per-file
computation costs (parsing, the profile, the CMS envelope, the store, the driver).

Per file, as a run does: pass 1 opens it, reads its first 16 KB and closes it; pass 2
stats and opens it, reads its head, creates an unnamed output (``O_TMPFILE``) in the
output folder, writes the head up to the Pixel Data element, copies the rest with
``copy_file_range``, links the output in under the input's name and closes both.
Files are handed out in fixed batches of 60, alternately to the two workers, with no
driver, store or messages.

Usage: ``python benchmarks/floor.py ARCHIVE OUTPUT`` (OUTPUT must not exist).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

#: what a directory run has imported by the time its workers start (pipeline.earlypool)
RUN_MODULES = ("pipeline.options", "pipeline.earlypool", "pipeline.runner", "tasks.batch",
               "tasks.inventory")

WORKERS = 2
BATCH = 60
HEAD = 16384
PIXEL_DATA = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


def listed(root: str) -> list[str]:
    """Every file under ``root``, relative, sorted."""
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def scan(root: str, rels: Sequence[str], _: str) -> None:
    for rel in rels:
        fd = os.open(os.path.join(root, rel), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            os.fstat(fd)
            os.pread(fd, HEAD, 0)
        finally:
            os.close(fd)


def copy(root: str, rels: Sequence[str], output: str) -> None:
    folders: dict[str, int] = {}
    for rel in rels:
        path = os.path.join(root, rel)
        os.stat(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, HEAD, 0)
            at = head.rfind(PIXEL_DATA)
            cut = at if at >= 0 else len(head)
            folder = os.path.dirname(rel)
            dir_fd = folders.get(folder)
            if dir_fd is None:
                os.makedirs(os.path.join(output, folder), exist_ok=True)
                dir_fd = folders[folder] = os.open(os.path.join(output, folder),
                                                   os.O_RDONLY | os.O_DIRECTORY)
            out = os.open(".", os.O_WRONLY | os.O_CLOEXEC | os.O_TMPFILE, 0o644, dir_fd=dir_fd)
            try:
                os.write(out, head[:cut])
                offset = cut
                while offset < size:
                    copied = os.copy_file_range(fd, out, size - offset, offset)
                    if not copied:
                        break
                    offset += copied
                os.link(f"/proc/self/fd/{out}", os.path.basename(rel), dst_dir_fd=dir_fd)
            finally:
                os.close(out)
        finally:
            os.close(fd)
    for dir_fd in folders.values():
        os.close(dir_fd)


def fan_out(work: Callable[[str, Sequence[str], str], None], root: str, rels: list[str],
            output: str) -> None:
    """``work`` on batches of ``rels``, alternately in :data:`WORKERS` forked processes."""
    batches = [rels[i:i + BATCH] for i in range(0, len(rels), BATCH)]
    pids = []
    for worker in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            status = 1  # a forked child never returns into the parent's code
            try:
                for batch in batches[worker::WORKERS]:
                    work(root, batch, output)
                status = 0
            except OSError as exc:
                print(f"floor: {exc}", file=sys.stderr)
            finally:
                os._exit(status)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]
    if failed:
        raise SystemExit(f"floor: {len(failed)} worker(s) failed")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    root, output = argv
    for name in RUN_MODULES:
        importlib.import_module(name)
    os.mkdir(output)
    rels = listed(root)
    fan_out(scan, root, rels, output)
    fan_out(copy, root, rels, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
