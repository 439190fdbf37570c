"""``make bench-journaled``: a command (``make bench``) with its outputs on a journaled ext4.

    .venv/bin/python benchmarks/journaled.py COMMAND [ARG ...]

Why: an ext4 without a journal (this VM's disk: ``/sys/fs/ext4/vda/journal_task`` reads
``<none>``) checks each free inode it may hand out against the inodes deleted in the last
minute, or the last six when their inode table block is dirty (``recently_deleted`` in
the kernel's ``fs/ext4/ialloc.c``).  So creating files soon after deleting others costs
~0.3 ms each: 20,000 files of 20 KB took 6.2 s of system time 3 s after 20,000 others were
deleted, and 0.34 s on a journaled ext4 on the same disk (benchmarks/README.md).  The
harness deletes outputs between repetitions, so on such a disk every small-file figure
(``cp -r``'s, gdcmanon's and anonpipe's) carries that cost, unevenly, unless the harness
may drop the page cache before each command (root: ``run.quiesce``).

The file system is a sparse image under ``build/bench``, on a loop device with direct I/O
(no second page cache between the two file systems), formatted and mounted for the
command and removed after it, however the command ends.  It needs root (``losetup``,
``mount``); ``BENCH_OUTPUTS`` tells the command where to write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: room for one archive's outputs of every command, twice (the harness deletes them after
#: each repetition); sparse: only what is written takes space
IMAGE_BYTES = 24 << 30
TOOLS = ("mkfs.ext4", "losetup", "mount", "umount")


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except subprocess.CalledProcessError as exc:  # the tool said why above: one line more
        print(f"journaled file system: {exc.cmd[0]} failed (exit {exc.returncode})",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"journaled file system: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 1


def _run(command: list[str]) -> int:
    if not command:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        why = f"{', '.join(missing)} not found" if missing else "not run as root"
        print(f"a journaled file system for the outputs needs root and {', '.join(TOOLS)}: "
              f"{why}", file=sys.stderr)
        return 2
    work = ROOT / "build" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    image, mount_point = work / "journaled.img", work / "journaled"
    attached = subprocess.run(["losetup", "--associated", str(image)], check=True,
                              capture_output=True, text=True).stdout.strip()
    if os.path.ismount(mount_point) or attached:
        print(f"{mount_point} is still mounted or {image.name} still attached (a run that "
              f"was killed?): umount {mount_point}, then losetup --detach the device "
              f"that `losetup --associated {image}` names", file=sys.stderr)
        return 2
    with open(image, "wb") as stream:
        stream.truncate(IMAGE_BYTES)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        device = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(image)],
                                check=True, capture_output=True, text=True).stdout.strip()
        try:
            mount_point.mkdir(exist_ok=True)
            subprocess.run(["mount", device, str(mount_point)], check=True)
            try:
                env = {**os.environ, "BENCH_OUTPUTS": str(mount_point / "outputs")}
                return subprocess.run(command, check=False, env=env).returncode
            finally:
                subprocess.run(["umount", str(mount_point)], check=True)
                mount_point.rmdir()
        finally:
            subprocess.run(["losetup", "--detach", device], check=True)
    finally:
        image.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
