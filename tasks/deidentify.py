"""PS3.15 E.1.1 De-identifier, byte-compatible with gdcmanon ``-e``.

Per file: locate the attributes the profile names (every depth), edit only their byte
ranges, put the original top-level elements (whole sequences where a change lies inside)
into one Modified Attributes Sequence item, CMS-encrypt it into the Encrypted Attributes
Sequence (0400,0500) exactly as gdcmanon lays it out, set (0012,0062)/(0012,0063), and
re-sync (0002,0003).  Everything else - preamble, meta, pixel data - keeps its bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.dicomio import (
    EXPLICIT_LE,
    EXPLICIT_LE_ENC,
    UNDEFINED,
    DicomFile,
    Element,
    Encoding,
    Item,
    element_header,
    item_end,
    item_header,
    read_dicom,
    sequence_end,
)
from tasks.edit import EditPlan, encode_element, render, transcode
from tasks.errors import UnsupportedFileError
from tasks.fileio import write_atomic
from tasks.profile import Action, Profile, get_profile
from tasks.uids import DEFAULT_ROOT, new_uid, pseudonym

if TYPE_CHECKING:
    from tasks.crypto import EnvelopeEncryptor

ENCRYPTED_ATTRIBUTES = 0x04000500
ENCRYPTED_CONTENT_TS = 0x04000510
ENCRYPTED_CONTENT = 0x04000520
MODIFIED_ATTRIBUTES = 0x04000550
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
MEDIA_SOP_INSTANCE_UID = 0x00020003
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: A private record appended after the (0400,0550) element in the payload.  gdcmanon -d
#: parses only the first element and ignores what follows (reference §3.4), so this carries
#: what gdcmanon's layout cannot: original file meta that (0008,0018) does not determine.
RESTORE_CREATOR_TAG = 0x04010010
RESTORE_CREATOR = b"ANONPIPE RESTORE"
RESTORE_META_TAG = 0x04011001
RESTORE_DEFLATED_TAG = 0x04011002
RESTORE_DEFLATED_LENGTH_TAG = 0x04011003  # OB values are padded to even length


@dataclass(frozen=True, slots=True)
class DeidentifySettings:
    """Everything a worker needs to de-identify files (small and picklable)."""

    secret: bytes
    root_uid: str = DEFAULT_ROOT
    profile: str = "gdcmanon"
    encryptor: "EnvelopeEncryptor | None" = None  # None: irreversible, no (0400,0500)

    @property
    def irreversible(self) -> bool:
        return self.encryptor is None


# --------------------------------------------------------------------------- dummies


def _dummy(secret: bytes, vr: str, original: bytes) -> bytes:
    """A valid non-empty value for ``vr``, consistent per original value (Action D)."""
    key = original.rstrip(b"\0 ")
    if vr == "PN":
        return f"ANON^{pseudonym(secret, 'pn', key, 10)}".encode()
    if vr in ("LO", "UC", "LT", "ST", "UT"):
        return f"ANON{pseudonym(secret, 'id', key, 12)}".encode()
    if vr in ("SH", "CS", "AE"):
        return f"ANON{pseudonym(secret, 'id', key, 12)}".encode()[:16]
    fixed = {"DA": b"19000101", "TM": b"000000", "DT": b"19000101000000",
             "AS": b"000D", "DS": b"0", "IS": b"0"}
    return fixed.get(vr, b"ANONYMIZED")


class _Deidentifier:
    """One file's edit plan, built by walking the element tree."""

    def __init__(self, df: DicomFile, profile: Profile, settings: DeidentifySettings):
        self.df = df
        self.buf = df.body
        self.profile = profile
        self.settings = settings
        self.plan = EditPlan()
        self.payload: dict[int, Element] = {}  # top-level originals, by tag
        self.uid_cache: dict[bytes, bytes] = {}

    def walk(self, elements: list[Element], enc: Encoding, path: list[Element | Item]) -> None:
        actions = self.profile.actions
        for el in elements:
            action = actions.get(el.tag)
            if action is not None and action is not Action.K:
                new = self._apply(el, action, enc)
                top = path[0] if path else el
                if path or new is not None:
                    self.payload[top.tag] = top  # type: ignore[union-attr]
                if new is not None:
                    self.plan.set(el, new, path)
                continue
            if el.items:
                sub = el.item_enc or enc
                for item in el.items:
                    self.walk(item.elements, sub, path + [el, item])

    def _apply(self, el: Element, action: Action, enc: Encoding) -> bytes | None:
        """New encoded bytes for ``el``, or None when the value does not change."""
        if action is Action.X:
            return b""
        if el.items is not None or el.vr == "SQ":
            if action is Action.Z or action is Action.D:
                if el.items == [] or (el.length == 0):
                    return None
                header = self.buf[el.start:el.value_start]
                if el.undefined:
                    return header + sequence_end(enc)
                return _zero_length_header(header, enc)
            return None
        if el.undefined:
            return None  # encapsulated data under a text action: leave to the profile author
        value = el.value(self.buf)
        if action is Action.Z:
            if el.length == 0:
                return None
            return encode_element(el.tag, el.vr, b"", enc)
        if action is Action.U:
            if not value.rstrip(b"\0 "):
                return None
            return encode_element(el.tag, el.vr, self.map_uids(value), enc)
        if action is Action.D:
            return encode_element(el.tag, el.vr, _dummy(self.settings.secret, el.vr, value), enc)
        return None

    def map_uids(self, value: bytes) -> bytes:
        cached = self.uid_cache.get(value)
        if cached is None:
            parts = value.rstrip(b"\0 ").split(b"\\")
            cached = b"\\".join(
                new_uid(self.settings.secret, self.settings.root_uid,
                        p.strip(b"\0 ").decode("ascii", "replace")).encode()
                if p.strip(b"\0 ") else b""
                for p in parts
            )
            self.uid_cache[value] = cached
        return cached


def _zero_length_header(header: bytes, enc: Encoding) -> bytes:
    if len(header) == 12:
        return header[:8] + struct.pack(enc.endian + "I", 0)
    return header[:4] + struct.pack(enc.endian + "I", 0)


# --------------------------------------------------------------------------- payload


def build_payload(buf: bytes, elements: list[Element], enc: Encoding) -> bytes:
    """The Encrypted Attributes Data Set: (0400,0550) SQ, one item, Explicit VR LE.

    Layout as gdcmanon writes it (reference §3.3): undefined-length sequence and item,
    the original elements in ascending tag order, values little-endian.
    """
    body = b"".join(transcode(buf, el, enc, EXPLICIT_LE_ENC) for el in elements)
    return (
        element_header(MODIFIED_ATTRIBUTES, "SQ", UNDEFINED, EXPLICIT_LE_ENC)
        + item_header(UNDEFINED, EXPLICIT_LE_ENC)
        + body
        + item_end(EXPLICIT_LE_ENC)
        + sequence_end(EXPLICIT_LE_ENC)
    )


def encrypted_attributes_element(cms_der: bytes, enc: Encoding) -> bytes:
    """(0400,0500) with one item holding (0400,0510) and (0400,0520), gdcmanon's layout."""
    if len(cms_der) % 2:
        cms_der += b"\0"  # gdcmanon pads an odd DER with one NUL; readers ignore it
    item = (
        encode_element(ENCRYPTED_CONTENT_TS, "UI", EXPLICIT_LE.encode(), enc)
        + element_header(ENCRYPTED_CONTENT, "OB", len(cms_der), enc)
        + cms_der
    )
    return (
        element_header(ENCRYPTED_ATTRIBUTES, "SQ", UNDEFINED, enc)
        + item_header(UNDEFINED, enc)
        + item
        + item_end(enc)
        + sequence_end(enc)
    )


# --------------------------------------------------------------------------- file level


def check_deidentifiable(df: DicomFile) -> None:
    """Refuse files we must not process (gdcmanon's pre-checks, with reasons)."""
    if df.top(ENCRYPTED_ATTRIBUTES) is not None:
        raise UnsupportedFileError(
            "already de-identified: it has an Encrypted Attributes Sequence (0400,0500)"
        )
    removed = df.top_text(PATIENT_IDENTITY_REMOVED)
    if removed is not None and removed.strip().upper() == "YES":
        raise UnsupportedFileError("already de-identified: Patient Identity Removed is YES")
    sop_class = df.top_text(SOP_CLASS_UID)
    media = df.meta_element(0x00020002)
    media_class = media.value(df.meta_bytes).rstrip(b"\0 ").decode() if media else None
    if DICOMDIR_SOP_CLASS in (sop_class, media_class):
        raise UnsupportedFileError(
            "DICOMDIR: its records point at file offsets; rebuild it from the outputs"
        )


def deidentify_bytes(data: bytes, settings: DeidentifySettings) -> bytes:
    """De-identify one file held in memory; returns the new file bytes."""
    df = read_dicom(data)
    check_deidentifiable(df)
    profile = get_profile(settings.profile)
    work = _Deidentifier(df, profile, settings)
    work.walk(df.elements, df.enc, [])
    enc = df.enc
    plan = work.plan
    if settings.irreversible:
        for tag in (PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD):
            el = df.top(tag)
            if el is not None:
                plan.set(el, b"", [])
    else:
        for tag in (PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD):
            el = df.top(tag)
            if el is not None:
                work.payload[tag] = el
        plan.insert[PATIENT_IDENTITY_REMOVED] = encode_element(
            PATIENT_IDENTITY_REMOVED, "CS", b"YES", enc)
        plan.insert[DEIDENTIFICATION_METHOD] = encode_element(
            DEIDENTIFICATION_METHOD, "LO", profile.method.encode(), enc)
    body = render(df.body, df.elements, plan, enc) + df.trailer
    meta = _resync_meta(df, work)
    if not settings.irreversible:
        assert settings.encryptor is not None
        for el in plan.changed_group_lengths:
            work.payload[el.tag] = el
        originals = [work.payload[tag] for tag in sorted(work.payload)]
        payload = build_payload(df.body, originals, enc) + _restore_record(df, data, meta)
        cms = settings.encryptor.encrypt(payload)
        plan.insert[ENCRYPTED_ATTRIBUTES] = encrypted_attributes_element(cms, enc)
        plan.changed_group_lengths.clear()
        body = render(df.body, df.elements, plan, enc) + df.trailer
    if df.deflated:
        body = deflate(body)
    return df.raw_prefix + meta + body


def expected_meta(df: DicomFile, sop_uid: bytes | None) -> bytes:
    """The meta re-identification derives: (0002,0003) set from the restored (0008,0018)."""
    media = df.meta_element(MEDIA_SOP_INSTANCE_UID)
    if media is None or sop_uid is None:
        return df.meta_bytes
    plan = EditPlan()
    plan.set(media, encode_element(MEDIA_SOP_INSTANCE_UID, "UI", sop_uid.rstrip(b" "),
                                   EXPLICIT_LE_ENC), [])
    return render(df.meta_bytes, df.meta, plan, EXPLICIT_LE_ENC)


def _restore_record(df: DicomFile, original: bytes, new_meta: bytes) -> bytes:
    """What re-identification cannot derive, for a byte-identical restore; often nothing.

    The original meta when (0002,0003) is not the (0008,0018) value, and the original
    deflate stream when our compressor would not reproduce it.
    """
    record = b""
    sop = df.top(SOP_INSTANCE_UID)
    sop_uid = None if sop is None or sop.undefined else sop.value(df.body)
    derived = new_meta if sop_uid is None else expected_meta(df, sop_uid)
    if derived != df.meta_bytes:
        record += encode_element(RESTORE_META_TAG, "OB", df.meta_bytes, EXPLICIT_LE_ENC)
    if df.deflated:
        stream = original[len(df.raw_prefix) + len(df.meta_bytes):]
        if deflate(df.body) != stream:
            record += encode_element(RESTORE_DEFLATED_TAG, "OB", stream, EXPLICIT_LE_ENC)
            record += encode_element(RESTORE_DEFLATED_LENGTH_TAG, "UL",
                                     struct.pack("<I", len(stream)), EXPLICIT_LE_ENC)
    if not record:
        return b""
    return encode_element(RESTORE_CREATOR_TAG, "LO", RESTORE_CREATOR, EXPLICIT_LE_ENC) + record


def _resync_meta(df: DicomFile, work: _Deidentifier) -> bytes:
    """(0002,0003) follows the new (0008,0018); (0002,0000) is recomputed by render."""
    media = df.meta_element(MEDIA_SOP_INSTANCE_UID)
    if media is None:
        return df.meta_bytes
    original = media.value(df.meta_bytes)
    if not original.rstrip(b"\0 "):
        return df.meta_bytes
    plan = EditPlan()
    plan.set(media, encode_element(MEDIA_SOP_INSTANCE_UID, "UI", work.map_uids(original),
                                   EXPLICIT_LE_ENC), [])
    return render(df.meta_bytes, df.meta, plan, EXPLICIT_LE_ENC)


def deflate(body: bytes) -> bytes:
    """Raw deflate as PS3.5 A.5 requires (no zlib header)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(body) + compressor.flush()
    return data + b"\0" if len(data) % 2 else data


@dataclass(frozen=True, slots=True)
class Deidentify:
    """The per-file operation the pipeline ships to workers."""

    settings: DeidentifySettings

    def __call__(self, src: Path, dst: Path) -> int:
        return write_atomic(dst, deidentify_bytes(_read_input(src), self.settings))


def _read_input(src: Path) -> bytes:
    from tasks.errors import DicomFormatError

    try:
        data = src.read_bytes()
    except IsADirectoryError:
        raise DicomFormatError("is a directory") from None
    except PermissionError:
        raise DicomFormatError("permission denied") from None
    except FileNotFoundError:
        raise DicomFormatError("no such file (dangling link?)") from None
    except OSError as exc:
        raise DicomFormatError(f"cannot read: {exc.strerror}") from None
    if not data:
        raise DicomFormatError("empty file")
    return data
