"""What creating files costs right after others were deleted, with and without the page
cache dropped first (the reason ``make bench`` drops it: ``run.quiesce``).

    .venv/bin/python benchmarks/creates.py [--files 20000] [--rounds 5] [--folder DIR]

Each round deletes the last round's files, writes dirty pages back (``sync``), waits 2 s,
then, in alternating order, creates ``--files`` files of 1.5 KB in a new folder either
as the cache is or after dropping its clean pages (``vm.drop_caches=1``, root only), and
prints the system time each creation took.  On an ext4 without a journal the kernel
checks each free inode it may hand out against recent deletions, reading its inode table
block from the cache; where that block is not cached the check is free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import pagecache  # benchmarks/pagecache.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = b"x" * 1500


def create(folder: Path, files: int) -> float:
    """Seconds of system time to create ``files`` files in the new ``folder``."""
    folder.mkdir()
    before = os.times().system
    for i in range(files):
        fd = os.open(folder / f"f{i:06d}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        try:
            os.write(fd, PAYLOAD)
        finally:
            os.close(fd)
    return os.times().system - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=ROOT / "build" / "bench" / "creates")
    args = parser.parse_args(argv)
    if not pagecache.available():
        print("dropping the page cache needs root", file=sys.stderr)
        return 2
    args.folder.mkdir(parents=True, exist_ok=True)
    target = args.folder / "files"
    times: dict[str, list[float]] = {"cache as it was": [], "clean cache dropped": []}
    try:
        create(target, args.files)  # the first deletion's files
        for rnd in range(args.rounds):
            order = list(times) if rnd % 2 == 0 else list(reversed(times))
            for label in order:
                shutil.rmtree(target)
                os.sync()
                time.sleep(2)
                if label == "clean cache dropped":
                    pagecache.drop()
                times[label].append(create(target, args.files))
    finally:
        shutil.rmtree(args.folder, ignore_errors=True)
    for label, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{label:20} system s: {shown}  median {statistics.median(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
