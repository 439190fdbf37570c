"""The exit codes of every anonpipe command, in one place.

gdcmanon exits 0 on success and 1 on any failure; anonpipe keeps 1 for "a file was not
written" (or, for the audit, "a finding") and adds 2 for a command line or configuration
refused before anything is written, as argparse does.  A run stopped by a signal exits as a
shell reports a process killed by it: 128 + the signal number (130 Ctrl-C, 143 SIGTERM).
Only each command's ``main`` turns exceptions into these codes.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0  # every file written (audit: nothing found)
    FAILED = 1  # a file not written, the store unreadable (audit: a finding)
    USAGE = 2  # bad command line or configuration: nothing written


def interrupted(signum: int) -> int:
    """What a shell reports for a process killed by ``signum``."""
    return 128 + signum


def of_argparse(code: object) -> int:
    """The exit code of argparse's ``SystemExit`` (help or version: 0; bad usage: 2)."""
    return int(code) if isinstance(code, int) else (Exit.USAGE if code else Exit.OK)

