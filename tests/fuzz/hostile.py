"""Hostile DICOM inputs built in code, shared by the engine, CLI and fuzz tests.

Builders write the few bytes a case needs (explicit and implicit elements, file meta, nested
items) so each bad input is visible in the test that uses it; real files come from pydicom's
bundled test data.  Nothing here holds patient data: the names are invented.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from tasks.crypto import EnvelopeEncryptor, decrypt_envelope
from tasks.dicomio import EXPLICIT_LE_ENC, Element, Encoding, _Parser, read_dicom
from tasks.edit import EditPlan, render
from tasks.engine import deflate
from tasks.errors import AnonpipeError, DicomFormatError, UnsupportedFileError
from tasks.payload import encrypted_attributes_element
from tasks.tags import ENCRYPTED_ATTRIBUTES, ENCRYPTED_CONTENT
from tests.conftest import pydicom_file

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # not a class the burned-in check refuses
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

#: pydicom test files the fuzz targets mutate: every encoding the engine reads
#: (explicit/implicit LE, big endian, deflated), sequences (rtplan, test-SR), private blocks.
SEEDS = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm",
         "test-SR.dcm", "image_dfl.dcm")
#: the files the truncation sweep cuts every 97 bytes
TRUNCATED_SEEDS = ("CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm")
TRUNCATION_STEP = 97

ITEM, ITEM_END, SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
UNDEFINED = 0xFFFFFFFF
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _pad(value: bytes, vr: str) -> bytes:
    if len(value) % 2 == 0:
        return value
    return value + (b"\0" if vr in ("UI", "OB", "UN") else b" ")


def explicit(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element; ``length`` overrides the declared length."""
    value = _pad(value, vr)
    n = len(value) if length is None else length
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in _LONG:
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), n) + value


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    """One Implicit VR Little Endian element."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF,
                       len(value) if length is None else length) + value


def delimiter(tag: tuple[int, int], length: int = 0) -> bytes:
    """An item or delimiter header."""
    return struct.pack("<HHI", *tag, length)


def file_meta(ts: str = EXPLICIT_LE, sop_class: str = CT_IMAGE,
              sop_instance: str = "1.2.3.4.5") -> bytes:
    """Preamble, DICM and a group 0002 (no group length: readers must not need it)."""
    return (b"\0" * 128 + b"DICM"
            + explicit(0x00020001, "OB", b"\0\1")
            + explicit(0x00020002, "UI", sop_class.encode())
            + explicit(0x00020003, "UI", sop_instance.encode())
            + explicit(0x00020010, "UI", ts.encode()))


def patient(name: bytes = b"Hostile^Patient") -> bytes:
    return explicit(0x00100010, "PN", name) + explicit(0x00100020, "LO", b"HOSTILE-1")


def dataset(body: bytes, ts: str = EXPLICIT_LE, sop_class: str = CT_IMAGE) -> bytes:
    """SOP Class and Instance UIDs followed by ``body`` (which must sort after them)."""
    if ts == IMPLICIT_LE:
        return (implicit(0x00080016, _pad(sop_class.encode(), "UI"))
                + implicit(0x00080018, b"1.2.3.4.5\0") + body)
    return (explicit(0x00080016, "UI", sop_class.encode())
            + explicit(0x00080018, "UI", b"1.2.3.4.5") + body)


def dicom(body: bytes, ts: str = EXPLICIT_LE, sop_class: str = CT_IMAGE) -> bytes:
    """A whole file: meta, then :func:`dataset`."""
    return file_meta(ts, sop_class) + dataset(body, ts, sop_class)


def nested_undefined(levels: int, closed: bool = True) -> bytes:
    """``levels`` undefined-length (0008,1140) sequences, one inside the other's item."""
    inner = patient()
    for _ in range(levels):
        inner = (explicit(0x00081140, "SQ", b"", length=UNDEFINED) + delimiter(ITEM, UNDEFINED)
                 + inner + (delimiter(ITEM_END) + delimiter(SEQ_END) if closed else b""))
    return inner


def nested_un(levels: int) -> bytes:
    """A private UN element holding ``levels`` defined-length implicit sequences (CP-246)."""
    inner = implicit(0x00100010, b"Hidden^Patient")
    for _ in range(levels):
        item = delimiter(ITEM, len(inner)) + inner
        inner = implicit(0x00091010, item)
    return explicit(0x00090010, "LO", b"ACME") + explicit(0x00091010, "UN", inner[8:])


def seed(name: str) -> bytes:
    return pydicom_file(name).read_bytes()


@dataclass(frozen=True)
class Header:
    """Where one element or item header sits in a file, and where its length field is."""

    start: int
    length_at: int
    length_size: int  # 2 (explicit short VR) or 4
    endian: str  # struct prefix of the length field


def headers(data: bytes) -> list[Header]:
    """Every element and item header of a file (empty for deflated files, whose element
    bytes are not in the file)."""
    df = read_dicom(data)
    if df.deflated:
        return []
    found = [Header(len(df.raw_prefix) + el.start,
                    len(df.raw_prefix) + el.value_start - (4 if el.vr in _LONG else 2),
                    4 if el.vr in _LONG else 2, "<") for el in df.meta]
    return found + _walk(df.elements, len(df.raw_prefix) + len(df.meta_bytes), df.enc)


def payload_headers(plaintext: bytes) -> list[Header]:
    """Every element and item header of a payload (an Explicit VR LE data set)."""
    return _walk(_Parser(plaintext).parse(0, len(plaintext), EXPLICIT_LE_ENC), 0,
                 EXPLICIT_LE_ENC)


def _walk(elements: list[Element], base: int, enc: Encoding) -> list[Header]:
    found = []
    for el in elements:
        short = el.value_start - el.start == 8 and not enc.implicit
        found.append(Header(base + el.start, base + el.value_start - (2 if short else 4),
                            2 if short else 4, enc.endian))
        sub = el.item_enc or enc
        for item in el.items or ():
            found.append(Header(base + item.start, base + item.start + 4, 4, sub.endian))
            found += _walk(item.elements, base, sub)
    return found


def payload_of(deidentified: bytes, private_key: object) -> bytes:
    """The decrypted Encrypted Attributes payload of a de-identified file."""
    df = read_dicom(deidentified)
    encrypted = df.top(ENCRYPTED_ATTRIBUTES)
    assert encrypted is not None and encrypted.items
    blob = next(e for e in encrypted.items[0].elements if e.tag == ENCRYPTED_CONTENT)
    return decrypt_envelope(blob.value(df.body), private_key)  # type: ignore[arg-type]


def with_payload(deidentified: bytes, plaintext: bytes | None, encryptor: EnvelopeEncryptor,
                 cms: bytes | None = None) -> bytes:
    """``deidentified`` with (0400,0500) re-encrypted around ``plaintext`` (or holding ``cms``)."""
    df = read_dicom(deidentified)
    encrypted = df.top(ENCRYPTED_ATTRIBUTES)
    assert encrypted is not None
    blob = cms if cms is not None else encryptor.encrypt(plaintext or b"")
    plan = EditPlan()
    plan.set(encrypted, encrypted_attributes_element(blob, df.enc), [])
    body = render(df.body, df.elements, plan, df.enc) + df.trailer
    return df.raw_prefix + df.meta_bytes + (deflate(body) if df.deflated else body)


def modified_attributes(*items: bytes, outer: int = 0x04000550) -> bytes:
    """A payload: ``outer`` SQ (undefined length) holding one undefined-length item per body."""
    return (explicit(outer, "SQ", b"", length=UNDEFINED)
            + b"".join(delimiter(ITEM, UNDEFINED) + body + delimiter(ITEM_END) for body in items)
            + delimiter(SEQ_END))


# --------------------------------------------------------------------------- bad inputs


@dataclass(frozen=True)
class Bad:
    """A bad input file: how to build it, what the engine must raise, words of its message."""

    id: str
    build: Callable[[], bytes]
    error: type[AnonpipeError]
    match: str


_BODY = patient()

#: Inputs the de-identifier must refuse with one clear reason (engine and CLI tests).
BAD_INPUTS: list[Bad] = [
    Bad("not-dicom", lambda: b"hello, this is not DICOM at all\n" * 10, DicomFormatError,
        "not a DICOM file"),
    Bad("only-preamble", lambda: b"\0" * 128 + b"DICM", DicomFormatError,
        "no file meta information"),
    Bad("dicm-without-meta", lambda: b"\0" * 128 + b"DICM" + _BODY, DicomFormatError,
        "no file meta information"),
    Bad("meta-without-transfer-syntax",
        lambda: b"\0" * 128 + b"DICM" + explicit(0x00020002, "UI", CT_IMAGE.encode()) + _BODY,
        DicomFormatError, "no transfer syntax"),
    Bad("meta-length-past-eof",
        lambda: b"\0" * 128 + b"DICM" + explicit(0x00020010, "UI", b"1.2", length=0xFFF0),
        DicomFormatError, "truncated file meta"),
    Bad("huge-OB-length", lambda: dicom(explicit(0x00091001, "OB", b"\0" * 16,
                                                 length=0xFFFFFFF0)),
        DicomFormatError, "declares 4294967280 bytes"),
    Bad("huge-SQ-length", lambda: dicom(explicit(0x00081140, "SQ", b"", length=0xFFFFFFF0)),
        DicomFormatError, "declares 4294967280 bytes"),
    Bad("huge-item-length",
        lambda: dicom(explicit(0x00081140, "SQ", b"", length=UNDEFINED)
                      + delimiter(ITEM, 0xFFFFFFF0) + _BODY + delimiter(SEQ_END)),
        DicomFormatError, "runs past"),
    Bad("item-overruns-its-sequence",
        lambda: dicom(explicit(0x00081140, "SQ", delimiter(ITEM, 64) + _BODY)),
        DicomFormatError, "runs past its sequence"),
    Bad("short-length-overruns-file", lambda: dicom(explicit(0x00100010, "PN", b"A^B",
                                                             length=0xFFFF)),
        DicomFormatError, "declares 65535 bytes"),
    Bad("invalid-VR", lambda: dicom(_BODY[:4] + b"\x00\x00" + _BODY[6:]), DicomFormatError,
        "invalid VR"),
    Bad("undefined-length-text", lambda: dicom(explicit(0x00100010, "UT", b"", length=UNDEFINED)
                                                + _BODY[8:]),
        DicomFormatError, "undefined length on non-sequence"),
    Bad("item-tag-at-top-level", lambda: dicom(delimiter(ITEM, 0) + _BODY), DicomFormatError,
        "unexpected item"),
    Bad("out-of-order", lambda: dicom(explicit(0x00100020, "LO", b"X")
                                      + explicit(0x00100010, "PN", b"A^B")),
        DicomFormatError, "out of order"),
    Bad("missing-item-delimiter", lambda: dicom(nested_undefined(3, closed=False)),
        DicomFormatError, "missing item delimiter"),
    Bad("nested-10000-undefined-items", lambda: dicom(nested_undefined(10_000)),
        DicomFormatError, "nested deeper than"),
    Bad("nested-10000-unclosed-items", lambda: dicom(nested_undefined(10_000, closed=False)),
        DicomFormatError, "nested deeper than"),
    Bad("un-sequence-nested-too-deep", lambda: dicom(nested_un(200)), DicomFormatError,
        "nested deeper than"),
    Bad("bad-fragment", lambda: dicom(explicit(0x7FE00010, "OB", b"", length=UNDEFINED)
                                      + delimiter((0x0008, 0x0010), 4) + b"abcd"),
        DicomFormatError, "bad fragment"),
    Bad("corrupt-deflate", lambda: file_meta(DEFLATED_LE) + b"\xff" * 64,
        DicomFormatError, "corrupt deflated"),
    Bad("truncated-deflate", lambda: file_meta(DEFLATED_LE) + deflate(dataset(_BODY))[:-8],
        DicomFormatError, "corrupt deflated"),
    Bad("dicomdir", lambda: seed("dicomdirtests/DICOMDIR"), UnsupportedFileError, "DICOMDIR"),
    Bad("dicomdir-class-only", lambda: dicom(_BODY, sop_class=DICOMDIR_CLASS),
        UnsupportedFileError, "DICOMDIR"),
]
