"""The one exception hierarchy of anonpipe.

Every error a user can cause derives from :class:`AnonpipeError`; the CLI maps them to
exit codes in one place.  Messages name the file (relative to the input when known) and
the reason, never a patient value.
"""

from __future__ import annotations


class AnonpipeError(Exception):
    """Root of every error anonpipe raises on purpose."""


class UsageError(AnonpipeError, ValueError):
    """Bad command line or option value."""


class DicomFormatError(AnonpipeError, ValueError):
    """The input is not DICOM, or is truncated or corrupt."""


class UnsupportedFileError(AnonpipeError):
    """A valid DICOM file this operation refuses (already de-identified, DICOMDIR, ...)."""


class CryptoError(AnonpipeError):
    """Certificate, key, envelope or payload problem."""


class ProfileError(AnonpipeError, ValueError):
    """A de-identification profile or tag specification is invalid."""


class OutputError(AnonpipeError, OSError):
    """The output cannot be written (permissions, disk full, location refused)."""


class InputNotFoundError(AnonpipeError, FileNotFoundError):
    """The input path does not exist (or is a dangling symbolic link)."""
