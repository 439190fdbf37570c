"""Files de-identification refuses whatever the profile, decided in one place.

gdcmanon ``-e`` refuses a file that is already de-identified (it holds an Encrypted
Attributes Sequence (0400,0500), or Patient Identity Removed (0012,0062) is YES: PS3.3
C.7.1.1), and so do we: a second pass would encrypt the first one's output, not the
original.  A DICOMDIR (PS3.10 8.6) is refused too: its records point at byte offsets of
the files it lists, which de-identification moves; it is rebuilt from the outputs.

Pass 1 (``tasks.inventory``) records the answer in the inventory row, pass 2
(``tasks.deidentify``) raises it; both ask :func:`refusals`.
"""

from __future__ import annotations

import enum

from tasks.dicomio import DicomFile
from tasks.tags import (
    DICOMDIR_SOP_CLASS,
    ENCRYPTED_ATTRIBUTES,
    MEDIA_SOP_CLASS_UID,
    PATIENT_IDENTITY_REMOVED,
    SOP_CLASS_UID,
)


class Refusal(str, enum.Enum):
    """Why a file is not de-identified; the value is the reason given for it."""

    ENCRYPTED = "already de-identified: it has an Encrypted Attributes Sequence (0400,0500)"
    IDENTITY_REMOVED = "already de-identified: Patient Identity Removed is YES"
    DICOMDIR = "DICOMDIR: its records point at file offsets; rebuild it from the outputs"

    @property
    def deidentified(self) -> bool:
        """Whether the file is refused as already de-identified."""
        return self is not Refusal.DICOMDIR


def refusals(df: DicomFile) -> list[Refusal]:
    """Every reason to refuse ``df``, in the order the first one is reported."""
    found = []
    if df.top(ENCRYPTED_ATTRIBUTES) is not None:
        found.append(Refusal.ENCRYPTED)
    removed = df.top_value(PATIENT_IDENTITY_REMOVED)
    if removed is not None and removed.rstrip(b"\0 ").decode("latin-1").strip().upper() == "YES":
        found.append(Refusal.IDENTITY_REMOVED)
    if _dicomdir(df):
        found.append(Refusal.DICOMDIR)
    return found


_DICOMDIR = DICOMDIR_SOP_CLASS.encode()


def _dicomdir(df: DicomFile) -> bool:
    """Whether (0008,0016) or (0002,0002) names the Media Storage Directory class.  Any
    bytes: a corrupt UID must not raise here."""
    sop_class = df.top_value(SOP_CLASS_UID)
    if sop_class is not None and sop_class.rstrip(b"\0 ") == _DICOMDIR:
        return True
    media = df.meta_element(MEDIA_SOP_CLASS_UID)
    return media is not None and media.value(df.meta_bytes).rstrip(b"\0 ") == _DICOMDIR
