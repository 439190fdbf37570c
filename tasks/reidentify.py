"""PS3.15 E.1.2 Re-identifier: restores what gdcmanon ``-e`` or anonpipe ``-e`` protected.

The payload is decrypted, checked (one (0400,0550) item holding (0008,0018)), transcoded to
the file's encoding and put back at top level; (0012,0062), (0012,0063) and (0400,0500) are
removed unless the payload restores their original values.  A file de-identified by
anonpipe comes back byte for byte, preamble and meta included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from tasks.crypto import (
    CbcContent,
    load_private_key,
    load_private_key_bytes,
    read_private_key,
)
from tasks.dicomio import (
    DEFLATED_LE,
    EXPLICIT_LE_ENC,
    UNDEFINED,
    DicomFile,
    element_header,
    encoding_for,
    item_end,
    parse_elements,
    read_dicom,
    sequence_end,
    split_file,
    tag_str,
)
from tasks.edit import Chunk, EditPlan, encode_element, render, render_parts, transcode
from tasks.engine import Staged, file_pieces, stage, write_staged
from tasks.errors import CryptoError, DicomFormatError
from tasks.fileio import Piece, Stream
from tasks.model import FieldEquality, Unrecorded, Written
from tasks.payload import (
    Payload,
    PayloadPixels,
    encrypted_content_at,
    open_payload,
    open_payload_in_pieces,
)
from tasks.pixeltail import (
    MAX_HEADER,
    MIN_FIRST_READ,
    SPLIT_FROM,
    SplitFile,
    WholeFile,
    read_split,
    split_rendered,
)
from tasks.tags import (
    DEIDENTIFICATION_METHOD,
    ENCRYPTED_ATTRIBUTES,
    MEDIA_SOP_INSTANCE_UID,
    PATIENT_IDENTITY_REMOVED,
    PIXEL_DATA,
    SOP_INSTANCE_UID,
)

_KEYS: dict[tuple[bytes, bytes | None], Any] = {}

#: a payload ((0400,0520) value) this large or larger, in a file at least as large, is
#: decrypted in pieces and its original pixel data written as it is decrypted, never held
#: whole (the payload of a cine whose pixels were cleaned: ``reidentify_streamed``); the
#: same size as the one from which -e streams cleaned pixels
STREAM_PAYLOAD_FROM = SPLIT_FROM
#: the envelope's first bytes read to find its key (the recipients come before the
#: ciphertext: a few hundred bytes each)
_ENVELOPE_HEAD = 64 << 10


class ReidentifySettings(FieldEquality):
    """Key material for re-identification (PEM bytes, so it pickles to workers).

    Immutable; compared, hashed and fingerprinted by :attr:`_fields`
    (``pipeline.plan.op_fingerprint``), whose last, ``_unused``, is always empty: every
    fingerprint of a ``-d`` run has held it, so stores made before still resume.  Its repr
    says whether a key and passwords are set, never what they are."""

    __slots__ = ("key_password", "key_pem", "password", "stream_payload_from")
    _fields = ("key_pem", "key_password", "password", "stream_payload_from", "_unused")
    _unused: ClassVar[tuple[()]] = ()
    key_pem: bytes | None
    key_password: bytes | None  # unlocks an encrypted key
    password: bytes | None  # opens a PasswordRecipientInfo (gdcmanon -p)
    stream_payload_from: int  # see STREAM_PAYLOAD_FROM

    def __init__(self, key_pem: bytes | None = None, key_password: bytes | None = None,
                 password: bytes | None = None,
                 stream_payload_from: int = STREAM_PAYLOAD_FROM) -> None:
        put = object.__setattr__
        put(self, "key_pem", key_pem)
        put(self, "key_password", key_password)
        put(self, "password", password)
        put(self, "stream_payload_from", stream_payload_from)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ReidentifySettings is immutable: cannot set {name}")

    def __reduce__(self) -> tuple[type[ReidentifySettings], tuple[Any, ...]]:
        return type(self), (self.key_pem, self.key_password, self.password,
                            self.stream_payload_from)

    def __repr__(self) -> str:
        def said(value: bytes | None) -> str:
            return "none" if value is None else "set"

        return (f"ReidentifySettings(key_pem={said(self.key_pem)}, "
                f"key_password={said(self.key_password)}, password={said(self.password)}, "
                f"stream_payload_from={self.stream_payload_from})")

    def private_key(self) -> Any:
        if self.key_pem is None:
            return None
        cache_key = (self.key_pem, self.key_password)
        key = _KEYS.get(cache_key)
        if key is None:
            key = load_private_key_bytes(self.key_pem, self.key_password)
            _KEYS[cache_key] = key
        return key


def checked_key(path: Path, password: bytes | None = None) -> bytes:
    """The private key file's bytes, loaded and checked now (a bad key or passphrase fails
    before any file) and kept loaded for :meth:`ReidentifySettings.private_key`: loading
    an RSA key checks it, ~50 ms, which the first file (one-file mode) and every worker
    forked after this would otherwise pay again."""
    data, key = read_private_key(path, password)
    _KEYS[(data, password)] = key
    return data


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
    file for the writer to copy (``tasks.pixeltail``), or its payload decrypted as it is
    written (:func:`reidentify_streamed`); None (or the file's bytes, when already read)
    when it does not split."""
    if size >= settings.stream_payload_from:
        streamed = reidentify_streamed(fd, size, settings)
        if streamed is not None:
            return streamed
    if size < SPLIT_FROM:
        return None  # split only to stream a payload (a lowered stream_payload_from)
    return split_rendered(fd, size, lambda df, stand_in: _reidentified(df, settings, stand_in))


def reidentify_streamed(fd: int, size: int, settings: ReidentifySettings
                        ) -> list[Piece] | None:
    """:func:`reidentify_bytes` of a file whose payload holds its original Pixel Data (a
    cine whose pixels were cleaned), the payload never read whole: its (0400,0500) element
    is left out of the parse (``tasks.pixeltail``, ``without``), its envelope's key found
    from the DER's head and last blocks (the padding checked before anything is written),
    the small elements decrypted, and the original pixel data decrypted into the output as
    it is written, which is linked in under its name only once complete.  None when the
    file is not that plain case (Explicit or Implicit VR Little Endian, the payload as -e
    lays it out, at least ``settings.stream_payload_from`` bytes): the usual paths."""
    try:
        found = _find_payload(fd, size, settings.stream_payload_from)
    except OSError as exc:
        raise DicomFormatError(f"cannot read: {exc.strerror or exc}") from None
    if found is None:
        return None
    head, hole, body_start, der_at, der_size = found
    split = read_split(fd, size, False, hole)
    if (not isinstance(split, SplitFile) or split.df.top(ENCRYPTED_ATTRIBUTES) is not None
            or not any(el.start == hole[0] - body_start for el in split.df.elements)):
        return None  # the hole is not one whole top-level element
    df = split.df
    opened = open_payload_in_pieces(head, der_size,
                                    lambda offset, count: _read(fd, count, der_at + offset),
                                    settings.private_key() if settings.key_pem else None,
                                    settings.password)
    if opened is None:
        return None
    payload, pixels, content = opened
    header = pixels.header
    if df.enc != EXPLICIT_LE_ENC:
        if pixels.length == UNDEFINED:
            return None  # encapsulated in an implicit VR file: the usual path refuses it
        header = element_header(PIXEL_DATA, header[4:6].decode(), pixels.length, df.enc)
    marker = bytes(bytearray(b"pixel data"))  # a new object, found again by identity
    pieces: list[Piece] = list(_restored(df, payload, marker=marker))
    spots = [i for i, piece in enumerate(pieces) if piece is marker]
    if len(spots) != 1:
        return None
    pieces[spots[0]:spots[0] + 1] = [
        header, Stream(pixels.end - pixels.start, lambda: _value(content, pixels))]
    return pieces


def _find_payload(fd: int, size: int, least: int
                  ) -> tuple[bytes, tuple[int, int], int, int, int] | None:
    """The envelope's first bytes, the (offset, length) of the (0400,0500) element in the
    file, where the data set starts, and the offset and length of its envelope; None when the file has no such
    payload of ``least`` bytes or more laid out as -e writes it (checked by the caller)."""
    want = MIN_FIRST_READ
    while True:
        head = os.pread(fd, min(want, size), 0)
        try:
            _, _, _, syntax, body_start = split_file(head)
        except DicomFormatError:
            return None  # the usual path says what is wrong
        enc = encoding_for(syntax)
        if syntax == DEFLATED_LE or not enc.little:
            return None
        found = encrypted_content_at(head, body_start, enc)
        if found is not None:
            start, der_at, der_size = found
            if der_size < least:
                return None
            if der_at + min(der_size, _ENVELOPE_HEAD) <= len(head):
                break
        if len(head) >= size or want >= MAX_HEADER:
            return None
        want *= 2
    end = der_at + der_size
    if end + 16 > size or os.pread(fd, 16, end) != item_end(enc) + sequence_end(enc):
        return None
    return (head[der_at:der_at + _ENVELOPE_HEAD], (start, end + 16 - start), body_start,
            der_at, der_size)


def _read(fd: int, count: int, offset: int) -> bytes:
    """``count`` bytes of the input at ``offset``; a file cut short is the input's error."""
    try:
        data = os.pread(fd, count, offset)
        while len(data) < count and (more := os.pread(fd, count - len(data),
                                                      offset + len(data))):
            data += more
    except OSError as exc:
        raise DicomFormatError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) != count:
        raise DicomFormatError("the file shrank while it was read (changed during the run)")
    return data


def _value(content: CbcContent, pixels: PayloadPixels) -> Iterator[bytes]:
    return content.plaintext(pixels.start, pixels.end)


def _reidentified(df: DicomFile, settings: ReidentifySettings,
                  stand_in: tuple[int, bytes] | None = None) -> list[Chunk]:
    """The restored file as pieces; ``stand_in``: a Pixel Data stand-in's body offset and
    the object to render in its place (see :func:`reidentify_split`)."""
    return _restored(df, extract_payload(df, settings), stand_in)


def _restored(df: DicomFile, payload: Payload, stand_in: tuple[int, bytes] | None = None,
              marker: bytes | None = None) -> list[Chunk]:
    """:func:`_reidentified` with the payload opened; ``marker``: the object to render in
    place of the payload's Pixel Data, a stand-in there (see :func:`reidentify_streamed`)."""
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
        if marker is not None and el.tag == PIXEL_DATA:
            plan.insert[el.tag] = marker
            continue
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


class _ReidentifyFields(NamedTuple):
    settings: ReidentifySettings


class Reidentify(_ReidentifyFields, Unrecorded):
    """The per-file re-identification operation."""

    __slots__ = ()

    def __call__(self, src: Path | str, dst: Path | str) -> int | Written:
        return write_staged(self.prepare(src), dst)

    def prepare(self, src: Path | str) -> Staged:
        return stage(src, lambda data: _reidentified(read_dicom(data), self.settings),
                     lambda fd, size: reidentify_split(fd, size, self.settings),
                     min(SPLIT_FROM, self.settings.stream_payload_from))


__all__ = [
    "STREAM_PAYLOAD_FROM",
    "Reidentify",
    "ReidentifySettings",
    "checked_key",
    "extract_payload",
    "load_private_key",
    "reidentify_bytes",
    "reidentify_streamed",
]
