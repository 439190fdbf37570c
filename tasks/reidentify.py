"""PS3.15 E.1.2 Re-identifier: restores what gdcmanon ``-e`` or anonpipe ``-e`` protected.

The payload is decrypted, checked (one (0400,0550) item holding (0008,0018)), transcoded to
the file's encoding and put back at top level; (0012,0062), (0012,0063) and (0400,0500) are
removed unless the payload restores their original values.  A file de-identified by
anonpipe comes back byte for byte, preamble and meta included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tasks.crypto import load_private_key, load_private_key_bytes
from tasks.dicomio import EXPLICIT_LE_ENC, DicomFile, parse_elements, read_dicom, tag_str
from tasks.edit import Chunk, EditPlan, encode_element, render, render_parts, transcode
from tasks.engine import apply_to_file, file_pieces
from tasks.errors import CryptoError, DicomFormatError
from tasks.fileio import Piece
from tasks.payload import Payload, open_payload
from tasks.pixeltail import SPLIT_FROM, WholeFile, split_rendered
from tasks.tags import (
    DEIDENTIFICATION_METHOD,
    ENCRYPTED_ATTRIBUTES,
    MEDIA_SOP_INSTANCE_UID,
    PATIENT_IDENTITY_REMOVED,
    SOP_INSTANCE_UID,
)

_KEYS: dict[tuple[bytes, bytes | None], Any] = {}


@dataclass(frozen=True, slots=True)
class ReidentifySettings:
    """Key material for re-identification (PEM bytes, so it pickles to workers)."""

    key_pem: bytes | None = None
    key_password: bytes | None = None  # unlocks an encrypted key
    password: bytes | None = None  # opens a PasswordRecipientInfo (gdcmanon -p)
    _unused: tuple[()] = field(default=(), repr=False)

    def private_key(self) -> Any:
        if self.key_pem is None:
            return None
        cache_key = (self.key_pem, self.key_password)
        key = _KEYS.get(cache_key)
        if key is None:
            key = load_private_key_bytes(self.key_pem, self.key_password)
            _KEYS[cache_key] = key
        return key


def extract_payload(df: DicomFile, settings: ReidentifySettings) -> Payload:
    """Decrypt and check (0400,0500) (see :func:`tasks.payload.open_payload`)."""
    return open_payload(df.top(ENCRYPTED_ATTRIBUTES), df.body,
                        settings.private_key() if settings.key_pem is not None else None,
                        settings.password)


def reidentify_bytes(data: bytes, settings: ReidentifySettings) -> bytes:
    """Re-identify one file held in memory; returns the restored file bytes."""
    return b"".join(_reidentified(read_dicom(data), settings))


def reidentify_split(fd: int, size: int, settings: ReidentifySettings
                     ) -> list[Piece] | WholeFile | None:
    """:func:`reidentify_bytes` of a large file open at ``fd``, its pixel data left in the
    file for the writer to copy (``tasks.pixeltail``); None (or the file's bytes, when
    already read) when it does not split."""
    return split_rendered(fd, size, lambda df, stand_in: _reidentified(df, settings, stand_in))


def _reidentified(df: DicomFile, settings: ReidentifySettings,
                  stand_in: tuple[int, bytes] | None = None) -> list[Chunk]:
    """The restored file as pieces; ``stand_in``: a Pixel Data stand-in's body offset and
    the object to render in its place (see :func:`reidentify_split`)."""
    payload = extract_payload(df, settings)
    plaintext, restored = payload.plaintext, payload.restored
    tags = {el.tag for el in restored}
    if SOP_INSTANCE_UID not in tags and df.top(SOP_INSTANCE_UID) is not None:
        raise CryptoError("payload does not contain the SOP Instance UID (0008,0018)")
    plan = EditPlan()
    # what -e added ((0012,0064), (0028,0303)) goes, unless the payload restores an original
    for tag in (PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD, ENCRYPTED_ATTRIBUTES,
                *payload.added_tags):
        el = df.top(tag)
        if el is not None and tag not in tags:
            plan.set(el, b"", [])
    sop_uid: bytes | None = None
    as_payload = df.enc == EXPLICIT_LE_ENC  # once: a CT payload restores ~140 elements
    for el in restored:
        if el.tag >> 16 == 0x0002:
            raise CryptoError("payload tries to restore file meta elements")
        if as_payload:
            encoded = plaintext[el.start:el.end]
        else:
            encoded = transcode(plaintext, el, EXPLICIT_LE_ENC, df.enc)
        if not as_payload and not _reparses(encoded, el.tag, df):
            # implicit VR drops the payload's VR: a damaged one must not make a bad file
            raise CryptoError(f"decrypted payload element {tag_str(el.tag)} does not fit "
                              "this file's encoding")
        plan.insert[el.tag] = encoded
        if el.tag == SOP_INSTANCE_UID:
            sop_uid = el.value(plaintext)
    if stand_in is not None and stand_in[0] not in plan.replace:
        # an edit of the pixel data itself (a profile removing it, a payload restoring it)
        # leaves no place for it: the caller then reads the file whole
        plan.replace[stand_in[0]] = stand_in[1]
    pieces = render_parts(df.body, df.elements, plan, df.enc)
    meta = payload.meta(df.transfer_syntax)
    if meta is None:  # gdcmanon's output, or ours from before the meta was rebuilt
        meta = expected_meta(df, sop_uid)
    prefix = df.raw_prefix
    preamble = payload.preamble()
    if preamble is not None and len(prefix) == len(preamble) + 4:
        prefix = preamble + prefix[len(preamble):]
    return file_pieces(df, prefix, meta, pieces,
                       payload.deflated_stream() if df.deflated else None)


def expected_meta(df: DicomFile, sop_uid: bytes | None) -> bytes:
    """The meta re-identification derives without a record: ``df``'s, (0002,0003) set from
    the restored (0008,0018) and (0002,0000) recomputed (what gdcmanon -d does too)."""
    media = df.meta_element(MEDIA_SOP_INSTANCE_UID)
    if media is None or sop_uid is None:
        return df.meta_bytes
    encoded = encode_element(MEDIA_SOP_INSTANCE_UID, "UI", sop_uid.rstrip(b" "),
                             EXPLICIT_LE_ENC)
    if encoded == df.meta_bytes[media.start:media.end]:
        return df.meta_bytes  # already what it would be (the usual case): nothing to render
    plan = EditPlan()
    plan.set(media, encoded, [])
    return render(df.meta_bytes, df.meta, plan, EXPLICIT_LE_ENC)


def _reparses(encoded: bytes, tag: int, df: DicomFile) -> bool:
    try:
        parsed = parse_elements(encoded, 0, None, df.enc)
    except DicomFormatError:
        return False
    return len(parsed) == 1 and parsed[0].tag == tag and parsed[0].end == len(encoded)


@dataclass(frozen=True, slots=True)
class Reidentify:
    """The per-file re-identification operation."""

    settings: ReidentifySettings

    # no secret, no profile, no new UIDs: the driver has nothing to record (FileOperation)
    secret: ClassVar[bytes | None] = None
    secret_fingerprint: ClassVar[str] = ""
    profile: ClassVar[None] = None
    root_uid: ClassVar[str | None] = None
    pixel_policy: ClassVar[str] = "keep"
    encryptor: ClassVar[None] = None

    def __call__(self, src: Path, dst: Path) -> int:
        return apply_to_file(src, dst,
                             lambda data: _reidentified(read_dicom(data), self.settings),
                             lambda fd, size: reidentify_split(fd, size, self.settings),
                             SPLIT_FROM)


__all__ = [
    "Reidentify",
    "ReidentifySettings",
    "extract_payload",
    "load_private_key",
    "reidentify_bytes",
]
