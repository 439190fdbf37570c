"""The File Meta Information and preamble of a de-identified file (PS3.15 E.1.1, PS3.10 7.1).

The original meta may name the systems that sent and received the file ((0002,0016) to
(0002,0018)), the implementation that wrote it ((0002,0012)/(0002,0013)) and carry
private information ((0002,0100)/(0002,0102)); the 128-byte preamble is free for any
application (a TIFF header, text).  E.1.1 asks for both to be replaced, so the meta is
rebuilt from values known to be safe - the version, the SOP Class and the new SOP Instance
UID of the data set, the transfer syntax, and anonpipe's own implementation identifiers -
and the preamble is written as zeros.  The originals travel in the encrypted payload's
restore record (tasks.payload), so re-identification by anonpipe restores them byte for
byte.  Built from bytes: it is a handful of elements per file.
"""

from __future__ import annotations

import re
import struct

from tasks.dicomio import EXPLICIT_LE_ENC
from tasks.edit import encode_element
from tasks.tags import (
    FILE_META_VERSION,
    IMPLEMENTATION_CLASS,
    IMPLEMENTATION_VERSION,
    MEDIA_SOP_CLASS_UID,
    MEDIA_SOP_INSTANCE_UID,
    TRANSFER_SYNTAX_UID,
)

#: PS3.10 7.1 Implementation Class UID of anonpipe: a UUID-derived UID (PS3.5 B.2),
#: ``2.25.`` and the integer of uuid5(NAMESPACE_URL, "anonpipe:implementation-class")
IMPLEMENTATION_CLASS_UID = b"2.25.267730145263015617374534399116721534223"
PREAMBLE_LENGTH = 128
ZERO_PREAMBLE = bytes(PREAMBLE_LENGTH)
#: what a user is told of a preamble that held data (pass 1 counts them, -W shows it)
PREAMBLE_NOTE = ("data in the 128-byte preamble (a TIFF view, say) is written as zeros "
                 "(PS3.15 E.1.1)")
_UID = re.compile(rb"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


#: (0002,0013) Implementation Version Name (SH, 16 characters at most): the package version,
#: written out rather than read from the package metadata at import (that costs a worker
#: ~50 ms); tests/tasks/test_filemeta.py checks that the two agree
IMPLEMENTATION_VERSION_NAME = b"ANONPIPE 0.1.0"
#: the elements every rebuilt meta ends with (PS3.10 Table 7.1-1 order: after (0002,0010))
_TAIL = (encode_element(IMPLEMENTATION_CLASS, "UI", IMPLEMENTATION_CLASS_UID, EXPLICIT_LE_ENC)
         + encode_element(IMPLEMENTATION_VERSION, "SH", IMPLEMENTATION_VERSION_NAME,
                          EXPLICIT_LE_ENC))
_VERSION = encode_element(FILE_META_VERSION, "OB", b"\x00\x01", EXPLICIT_LE_ENC)


def is_uid(value: bytes) -> bool:
    """A UID as PS3.5 9.1 writes it (its padding stripped): digits and dots, 64 at most."""
    return len(value) <= 64 and _UID.match(value) is not None


def rebuilt_meta(sop_class: bytes | None, sop_instance: bytes | None,
                 transfer_syntax: str) -> bytes:
    """Group 0002 for a de-identified file: (0002,0000), (0002,0001), (0002,0002) and
    (0002,0003) when given as valid UIDs, (0002,0010), (0002,0012), (0002,0013).

    A value that is not a UID is left out rather than copied: the meta holds nothing that
    is not known to be safe.  ``transfer_syntax`` is the one the file was read with.
    """
    head = _HEADS.get(sop_class)
    if head is None:  # a run holds a few SOP Classes: their elements are made once
        if len(_HEADS) >= _MAX_CACHED:
            _HEADS.clear()
        head = _HEADS[sop_class] = _VERSION + (
            b"" if sop_class is None else _uid_element(MEDIA_SOP_CLASS_UID, sop_class))
    instance = b"" if sop_instance is None else _uid_element(MEDIA_SOP_INSTANCE_UID,
                                                             sop_instance)
    tail = _TAILS.get(transfer_syntax)
    if tail is None:
        if len(_TAILS) >= _MAX_CACHED:
            _TAILS.clear()
        tail = _TAILS[transfer_syntax] = encode_element(
            TRANSFER_SYNTAX_UID, "UI", transfer_syntax.encode("ascii"), EXPLICIT_LE_ENC) + _TAIL
    return b"".join((_GROUP_LENGTH.pack(0x0002, 0x0000, b"UL", 4,
                                        len(head) + len(instance) + len(tail)),
                     head, instance, tail))


#: (0002,0000) UL, explicit VR little endian, then its value
_GROUP_LENGTH = struct.Struct("<HH2sHI")
#: (0002,0001) and (0002,0002) by the SOP Class UID given, (0002,0010) onwards by syntax
_HEADS: dict[bytes | None, bytes] = {}
_TAILS: dict[str, bytes] = {}
_MAX_CACHED = 256


def _uid_element(tag: int, value: bytes) -> bytes:
    """The UI element (explicit VR little endian, NUL-padded), or b"" when ``value`` (its
    padding stripped) is not a UID."""
    value = value.rstrip(b"\0 ")
    return encode_element(tag, "UI", value, EXPLICIT_LE_ENC) if is_uid(value) else b""


def preamble_data(raw_prefix: bytes) -> bytes | None:
    """The 128-byte preamble of a file whose prefix is ``raw_prefix`` when it holds
    anything but zeros (a TIFF header, text), else None."""
    if len(raw_prefix) < PREAMBLE_LENGTH + 4:
        return None
    preamble = raw_prefix[:PREAMBLE_LENGTH]
    return preamble if preamble != ZERO_PREAMBLE else None


def zeroed_prefix(raw_prefix: bytes) -> bytes:
    """``raw_prefix`` with its preamble (if any) as zeros: files without one keep none."""
    if len(raw_prefix) < PREAMBLE_LENGTH + 4 or raw_prefix[:PREAMBLE_LENGTH] == ZERO_PREAMBLE:
        return raw_prefix
    return ZERO_PREAMBLE + raw_prefix[PREAMBLE_LENGTH:]
