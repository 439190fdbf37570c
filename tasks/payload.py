"""The encrypted payload of PS3.15 E.1.1/E.1.2, in both directions.

De-identification puts the original top-level elements it changed into one Modified
Attributes Sequence (0400,0550) item, CMS-encrypts that data set and stores it in the
Encrypted Attributes Sequence (0400,0500), laid out exactly as gdcmanon lays it out, so that
either tool's ``-d`` restores the other's output.  After the (0400,0550) element comes
anonpipe's restore record: a private block that gdcmanon ``-d`` ignores (it parses the
first element only) and that carries what the data set cannot: the original file meta
and preamble, the original deflate stream, the tags de-identification added.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from tasks.crypto import CbcContent, ReadBytes, decrypt_envelope, open_envelope_in_pieces
from tasks.dicomio import (
    EXPLICIT_LE,
    EXPLICIT_LE_ENC,
    ITEM,
    SEQ_END,
    UNDEFINED,
    Element,
    Encoding,
    element_header,
    item_end,
    item_header,
    meta_elements,
    parse_elements,
    sequence_end,
    walk,
)
from tasks.edit import encode_element, transcode
from tasks.errors import CryptoError, DicomFormatError, UnsupportedFileError
from tasks.fileio import FileRange
from tasks.tags import (
    ENCRYPTED_ATTRIBUTES,
    ENCRYPTED_CONTENT,
    ENCRYPTED_CONTENT_TS,
    MODIFIED_ATTRIBUTES,
    PIXEL_DATA,
    TRANSFER_SYNTAX_UID,
)

#: A private record appended after the (0400,0550) element in the payload.  gdcmanon -d
#: parses only the first element and ignores what follows, so this carries
#: what gdcmanon's layout cannot.
RESTORE_CREATOR_TAG = 0x04010010
RESTORE_CREATOR = b"ANONPIPE RESTORE"
RESTORE_META_TAG = 0x04011001
RESTORE_DEFLATED_TAG = 0x04011002
RESTORE_DEFLATED_LENGTH_TAG = 0x04011003  # OB values are padded to even length
#: UL list of top-level tags -e added that the original did not have ((0012,0064),
#: (0028,0303)): our -d removes them; gdcmanon -d leaves them behind.
RESTORE_ADDED_TAG = 0x04011004
#: the original 128-byte preamble, when it was not all zeros (-e writes zeros)
RESTORE_PREAMBLE_TAG = 0x04011005
RESTORE_TAGS = (RESTORE_CREATOR_TAG, RESTORE_META_TAG, RESTORE_DEFLATED_TAG,
                RESTORE_DEFLATED_LENGTH_TAG, RESTORE_ADDED_TAG, RESTORE_PREAMBLE_TAG)


# --------------------------------------------------------------------------- forward (E.1.1)


def keep_original(payload: dict[int, Element], element: Element) -> None:
    """Put the original top-level ``element`` into the Modified Attributes item.

    For every step that changes a top-level element outside the attribute walk (pixel
    data cleaned, overlay bits cleared): re-identification puts it back as it was.  The
    element must be one of the file's parsed top-level elements (its bytes are copied from
    the file's body when the payload is built).
    """
    payload[element.tag] = element


def build_payload(buf: bytes, elements: list[Element], enc: Encoding) -> bytes:
    """The Encrypted Attributes Data Set: (0400,0550) SQ, one item, Explicit VR LE.

    Layout as gdcmanon writes it: undefined-length sequence and item,
    the original elements in ascending tag order, values little-endian.
    """
    return b"".join(payload_parts(buf, elements, enc))  # type: ignore[arg-type]


def payload_parts(buf: bytes, elements: list[Element], enc: Encoding,
                  pixels: FileRange | None = None) -> list[bytes | FileRange]:
    """:func:`build_payload` in pieces.  ``pixels``: where the Pixel Data element stands in
    the file when ``buf`` holds a stand-in for it (``tasks.pixeltail``, little endian): its
    value is then a range of the file, never read here."""
    head = (element_header(MODIFIED_ATTRIBUTES, "SQ", UNDEFINED, EXPLICIT_LE_ENC)
            + item_header(UNDEFINED, EXPLICIT_LE_ENC))
    parts: list[bytes | FileRange] = [head]
    if enc == EXPLICIT_LE_ENC:  # no transcoding: adjacent elements go as one slice
        start = end = -1
        for el in elements:
            if pixels is not None and el.tag == PIXEL_DATA:
                if start >= 0:
                    parts.append(buf[start:end])
                parts.append(pixels)  # the element as it is in the file, header included
                start = end = -1
                continue
            if el.start != end:
                if start >= 0:
                    parts.append(buf[start:end])
                start = el.start
            end = el.end
        if start >= 0:
            parts.append(buf[start:end])
    else:
        for el in elements:
            if pixels is not None and el.tag == PIXEL_DATA:
                # the stand-in transcoded (its VR made explicit), with the real length
                header_length = el.value_start - el.start
                header = transcode(buf, el, enc, EXPLICIT_LE_ENC)
                value = FileRange(pixels.fd, pixels.offset + header_length,
                                  pixels.length - header_length)
                parts += [header[:-4] + struct.pack("<I", value.length), value]
            else:
                parts.append(transcode(buf, el, enc, EXPLICIT_LE_ENC))
    parts.append(item_end(EXPLICIT_LE_ENC) + sequence_end(EXPLICIT_LE_ENC))
    return parts


def restore_record(*, meta: bytes | None = None, preamble: bytes | None = None,
                   deflated: bytes | None = None, added: list[int] | None = None) -> bytes:
    """The private block after (0400,0550) that makes our -d byte-exact; b"" when empty.

    ``meta``: the original file meta (group 0002) when re-identification cannot derive it;
    ``preamble``: the original 128 bytes when they were not zeros; ``deflated``: the
    original deflate stream when our compressor would not reproduce it; ``added``: the
    top-level tags de-identification added that the original did not have.
    """
    record = b""
    if meta:
        record += encode_element(RESTORE_META_TAG, "OB", meta, EXPLICIT_LE_ENC)
    if deflated is not None:
        record += encode_element(RESTORE_DEFLATED_TAG, "OB", deflated, EXPLICIT_LE_ENC)
        record += encode_element(RESTORE_DEFLATED_LENGTH_TAG, "UL",
                                 struct.pack("<I", len(deflated)), EXPLICIT_LE_ENC)
    if added:
        record += encode_element(RESTORE_ADDED_TAG, "UL",
                                 struct.pack(f"<{len(added)}I", *added), EXPLICIT_LE_ENC)
    if preamble is not None:
        record += encode_element(RESTORE_PREAMBLE_TAG, "OB", preamble, EXPLICIT_LE_ENC)
    if not record:
        return b""
    return encode_element(RESTORE_CREATOR_TAG, "LO", RESTORE_CREATOR, EXPLICIT_LE_ENC) + record


def encrypted_attributes_element(cms_der: bytes, enc: Encoding) -> bytes:
    """(0400,0500) with one item holding (0400,0510) and (0400,0520), gdcmanon's layout."""
    head, tail = encrypted_attributes_parts(len(cms_der), enc)
    return b"".join((head, cms_der, tail))


def encrypted_attributes_parts(cms_length: int, enc: Encoding) -> tuple[bytes, bytes]:
    """:func:`encrypted_attributes_element` around a DER of ``cms_length`` bytes: what comes
    before it and after it (an envelope encrypted as it is written goes in between)."""
    frame = _ENCRYPTED_FRAMES.get((enc.little, enc.implicit))
    if frame is None:
        frame = _ENCRYPTED_FRAMES[enc.little, enc.implicit] = _encrypted_frame(enc)
    head, length, tail, padded_tail = frame
    if cms_length % 2:  # gdcmanon pads an odd DER with one NUL; readers ignore it
        return head + length(cms_length + 1), padded_tail
    return head + length(cms_length), tail


def _encrypted_frame(enc: Encoding) -> tuple[bytes, Callable[[int], bytes], bytes, bytes]:
    """The fixed bytes of (0400,0500) in ``enc``: up to the (0400,0520) length, that
    length's packer, what follows the DER (and with the NUL of an odd DER first)."""
    head = (
        element_header(ENCRYPTED_ATTRIBUTES, "SQ", UNDEFINED, enc)
        + item_header(UNDEFINED, enc)
        + encode_element(ENCRYPTED_CONTENT_TS, "UI", EXPLICIT_LE.encode(), enc)
        + element_header(ENCRYPTED_CONTENT, "OB", 0, enc)[:-4]  # its length comes last
    )
    tail = item_end(enc) + sequence_end(enc)
    return head, struct.Struct(enc.endian + "I").pack, tail, b"\0" + tail


#: _encrypted_frame by (little, implicit)
_ENCRYPTED_FRAMES: dict[tuple[bool, bool], tuple[bytes, Callable[[int], bytes], bytes, bytes]] = {}


# --------------------------------------------------------------------------- inverse (E.1.2)


class Payload(NamedTuple):
    """A decrypted payload: the originals to restore and anonpipe's restore record."""

    plaintext: bytes
    #: the Modified Attributes item's elements (offsets into ``plaintext``)
    restored: list[Element]
    #: restore record values by tag (RESTORE_*), padding as stored
    records: dict[int, bytes]

    @property
    def added_tags(self) -> tuple[int, ...]:
        added = self.records.get(RESTORE_ADDED_TAG, b"")
        return struct.unpack(f"<{len(added) // 4}I", added[:len(added) // 4 * 4])

    def deflated_stream(self) -> bytes | None:
        stream = self.records.get(RESTORE_DEFLATED_TAG)
        if stream is not None and RESTORE_DEFLATED_LENGTH_TAG in self.records:
            length = int.from_bytes(self.records[RESTORE_DEFLATED_LENGTH_TAG], "little")
            stream = stream[:length]
        return stream

    def meta(self, transfer_syntax: str) -> bytes | None:
        """The original file meta, checked (None: the record holds none)."""
        meta = self.records.get(RESTORE_META_TAG)
        return checked_meta(meta, transfer_syntax) if meta else None

    def preamble(self) -> bytes | None:
        """The original 128-byte preamble (None: it was zeros, or an older record)."""
        preamble = self.records.get(RESTORE_PREAMBLE_TAG)
        if preamble is not None and len(preamble) != 128:
            raise CryptoError("decrypted payload holds a damaged preamble record")
        return preamble


def open_payload(encrypted: Element | None, body: bytes, private_key: Any,
                 password: bytes | None) -> Payload:
    """Decrypt the Encrypted Attributes Sequence ``encrypted`` (found in ``body``) and
    check its layout: one (0400,0550) item, then at most our restore record."""
    if encrypted is None or not encrypted.items:
        raise UnsupportedFileError(
            "not de-identified: no Encrypted Attributes Sequence (0400,0500)")
    item = encrypted.items[0]
    ts_el = next((e for e in item.elements if e.tag == ENCRYPTED_CONTENT_TS), None)
    blob_el = next((e for e in item.elements if e.tag == ENCRYPTED_CONTENT), None)
    if ts_el is None or blob_el is None or blob_el.undefined or blob_el.length == 0:
        raise CryptoError("Encrypted Attributes item lacks (0400,0510) or (0400,0520)")
    ts = ts_el.value(body).rstrip(b"\0 ").decode("ascii", "replace")
    if ts != EXPLICIT_LE:
        raise CryptoError(f"unsupported payload transfer syntax {ts} (only Explicit VR LE)")
    if private_key is None and password is None:
        raise CryptoError("no private key (-k) or password (-p) given")
    return checked_payload(decrypt_envelope(blob_el.value(body), private_key, password))


def checked_payload(plaintext: bytes) -> Payload:
    """The decrypted payload, checked: one (0400,0550) item, then at most our restore
    record (CBC has no integrity: what a damaged envelope decrypts to is refused here)."""
    try:
        elements = parse_elements(plaintext, 0, None, EXPLICIT_LE_ENC)
    except DicomFormatError as exc:
        raise CryptoError(f"decrypted payload is not a DICOM data set: {exc}") from None
    if not elements or elements[0].tag != MODIFIED_ATTRIBUTES or not elements[0].items:
        raise CryptoError("decrypted payload is not one Modified Attributes Sequence (0400,0550)")
    if any(el.tag not in RESTORE_TAGS for el in elements[1:]):
        raise CryptoError("decrypted payload holds more than the Modified Attributes Sequence")
    if len(elements[0].items) != 1:
        raise CryptoError(
            f"Modified Attributes Sequence has {len(elements[0].items)} items, expected 1")
    return Payload(plaintext, elements[0].items[0].elements,
                   {el.tag: el.value(plaintext) for el in elements[1:]})


def checked_meta(meta: bytes, transfer_syntax: str) -> bytes:
    """The payload's original meta, which must be whole group 0002 for this file's syntax.

    CBC has no integrity: a damaged ciphertext block decrypts to damaged plaintext, and a
    damaged meta would make an unreadable output.  An odd-length meta comes back with the
    OB pad byte, which is dropped.
    """
    try:
        elements, end = meta_elements(meta, 0)
    except DicomFormatError:
        elements, end = [], -1
    syntax = None
    for el in elements:  # the last (0002,0010) counts, as in dicomio.split_file
        if el.tag == TRANSFER_SYNTAX_UID:
            syntax = el.value(meta).rstrip(b"\0 ").decode("ascii", "replace")
    if end == len(meta) - 1 and meta[-1:] == b"\0":
        meta = meta[:-1]
    if end != len(meta) or syntax != transfer_syntax:
        raise CryptoError("decrypted payload holds a damaged file meta record")
    return meta


# --------------------------------------------------------------------------- a large payload

#: the Modified Attributes Sequence and its item as -e writes them, undefined lengths
_PAYLOAD_HEAD = (element_header(MODIFIED_ATTRIBUTES, "SQ", UNDEFINED, EXPLICIT_LE_ENC)
                 + item_header(UNDEFINED, EXPLICIT_LE_ENC))
_FIRST_PLAINTEXT = 64 << 10
#: the plaintext around the pixel data held in memory at most (else: open it whole)
_MAX_PLAINTEXT = 64 << 20
_HEAD = struct.Struct("<HH2sHI")
_FRAGMENT = struct.Struct("<HHI")


def encrypted_content_at(head: bytes, body_start: int, enc: Encoding
                         ) -> tuple[int, int, int] | None:
    """Where the first Encrypted Attributes Sequence laid out as -e writes it
    (:func:`encrypted_attributes_parts`, payload in Explicit VR Little Endian) starts in
    ``head`` (a file's first bytes), and the offset and length of its (0400,0520) value;
    None when there is none in ``head``.  Found by its bytes, not parsed: the caller checks
    that it is a top-level element (``tasks.pixeltail``, ``without``)."""
    start = head.find(element_header(ENCRYPTED_ATTRIBUTES, "SQ", UNDEFINED, enc)
                      + item_header(UNDEFINED, enc), body_start)
    if start < 0:
        return None
    syntax = encode_element(ENCRYPTED_CONTENT_TS, "UI", EXPLICIT_LE.encode(), enc)
    content = element_header(ENCRYPTED_CONTENT, "OB", 0, enc)[:-4]
    at = start + len(element_header(ENCRYPTED_ATTRIBUTES, "SQ", UNDEFINED, enc)) + 8
    if head[at:at + len(syntax)] != syntax:
        return None
    at += len(syntax)
    if head[at:at + len(content)] != content or at + len(content) + 4 > len(head):
        return None
    (length,) = struct.unpack_from("<I", head, at + len(content))
    return start, at + len(content) + 4, length


class PayloadPixels(NamedTuple):
    """The original Pixel Data in a payload opened in pieces: its element header
    (Explicit VR Little Endian) and the plaintext range of its value, left encrypted."""

    header: bytes
    start: int
    end: int

    @property
    def length(self) -> int:
        """The value's length as its header says it (UNDEFINED when encapsulated)."""
        return int(_HEAD.unpack_from(self.header)[4])


def open_payload_in_pieces(head: bytes, size: int, read: ReadBytes, private_key: Any,
                           password: bytes | None
                           ) -> tuple[Payload, PayloadPixels, CbcContent] | None:
    """:func:`open_payload` of a large (0400,0520) value of ``size`` bytes (``head`` its
    first bytes, ``read`` any of them) whose Modified Attributes item holds the original
    Pixel Data: decrypted up to that element and from its end on, the element standing
    there with an empty value (the checks of :func:`checked_payload` run on that).  The
    value stays encrypted: ``content`` decrypts it by range.  None when the payload is not
    that plain case: open it whole."""
    if private_key is None and password is None:
        raise CryptoError("no private key (-k) or password (-p) given")
    content = open_envelope_in_pieces(head, size, read, private_key, password)
    if content is None:
        return None
    found = _pixels_in(content)
    if found is None:
        return None
    plaintext, pixels = found
    payload = checked_payload(plaintext)
    at = pixels.start - len(pixels.header)
    if not any(el.tag == PIXEL_DATA and el.start == at for el in payload.restored):
        return None
    return payload, pixels, content


def _pixels_in(content: CbcContent) -> tuple[bytes, PayloadPixels] | None:
    """The plaintext with the Pixel Data value of the Modified Attributes item cut out
    (its header says length 0), and where that value is; None when there is none."""
    buf, want, total = b"", _FIRST_PLAINTEXT, content.length
    while True:
        buf += b"".join(content.plaintext(len(buf), min(want, total)))
        if not buf.startswith(_PAYLOAD_HEAD):
            return None
        try:
            elements, _, at_pixels = walk(buf[len(_PAYLOAD_HEAD):], EXPLICIT_LE_ENC, True,
                                          False)
        except DicomFormatError:  # cut short by the read, maybe: read on
            at_pixels = False
        at = len(_PAYLOAD_HEAD) + (elements[-1].end if at_pixels and elements else 0)
        if at_pixels and at + _HEAD.size <= len(buf):
            break
        if len(buf) >= total or want >= _MAX_PLAINTEXT:
            return None
        want *= 2
    group, element, vr, _, length = _HEAD.unpack_from(buf, at)
    if (group << 16 | element) != PIXEL_DATA or vr not in (b"OB", b"OW"):
        return None
    start = at + _HEAD.size
    end = start + length if length != UNDEFINED else _fragments_end(content, start)
    if end is None or end > total or total - end > _MAX_PLAINTEXT:
        return None
    header = buf[at:start]
    tail = b"".join(content.plaintext(end, total))
    return buf[:at] + header[:-4] + bytes(4) + tail, PayloadPixels(header, start, end)


def _fragments_end(content: CbcContent, pos: int) -> int | None:
    """Where encapsulated pixel data starting at ``pos`` ends: its item headers alone are
    decrypted, never the fragments (PS3.5 A.4)."""
    while pos + _FRAGMENT.size <= content.length:
        group, element, length = _FRAGMENT.unpack(
            b"".join(content.plaintext(pos, pos + _FRAGMENT.size)))
        tag = group << 16 | element
        if tag == SEQ_END:
            return pos + _FRAGMENT.size
        if tag != ITEM or length == UNDEFINED:
            return None
        pos += _FRAGMENT.size + length
    return None
