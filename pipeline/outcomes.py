"""The five words a run's counts use, and which file ends up under which.

Every file of a directory run ends in exactly one outcome, so the counts add up to the
files found: the live display, the summary table, its reason lines, the report, the failed
list and the exit code all count with this one function.

- written: an output was written by this run;
- already done: an earlier run wrote it and the output is intact (resume);
- not DICOM: the file is no DICOM file at all (no preamble, no recognisable header);
- refused: DICOM, but not processed on purpose (already de-identified, a DICOMDIR,
  burned-in annotation under ``--pixels refuse``, text OCR still reads after cleaning
  the pixels: ``UnsupportedFileError``, ``BurnedInTextError``), or a symbolic link leading
  out of the input folder (``LinkOutsideInput``, unless ``--follow-symlinks``);
- failed: anything else (damaged or truncated DICOM, wrong key, unreadable entry, I/O).
"""

from __future__ import annotations

from typing import Final

from pipeline.walk import LINK_OUTSIDE

WRITTEN: Final = "written"
ALREADY_DONE: Final = "already done"
NOT_DICOM: Final = "not DICOM"
REFUSED: Final = "refused"
FAILED: Final = "failed"
OUTCOMES: Final = (WRITTEN, ALREADY_DONE, NOT_DICOM, REFUSED, FAILED)
#: outcomes of files the run did not write (what the failed list holds)
NOT_WRITTEN: Final = (NOT_DICOM, REFUSED, FAILED)

#: (error kind, reason prefix) -> outcome; the first match wins, "" matches every reason
RULES: Final = (
    ("DicomFormatError", "not a DICOM file", NOT_DICOM),
    ("UnsupportedFileError", "", REFUSED),
    ("BurnedInTextError", "", REFUSED),  # Clean Pixel Data: OCR still reads text after it
    (LINK_OUTSIDE, "", REFUSED),  # a planted link must not pull other files in
)


def outcome(status: str, kind: str | None, reason: str | None) -> str:
    """The outcome of one file from its journal status, error kind and reason."""
    if status == "done":
        return WRITTEN
    if kind is None:
        return ALREADY_DONE if status == "skipped" else FAILED
    for rule_kind, prefix, name in RULES:
        if kind == rule_kind and (reason or "").startswith(prefix):
            return name
    return FAILED


def key(name: str) -> str:
    """The outcome as a JSON key of the report (``already done`` -> ``already_done``)."""
    return name.replace(" ", "_").lower()
