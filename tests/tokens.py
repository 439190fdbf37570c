"""A token corpus: every attribute of PS3.15 Table E.1-1 holding a unique searchable token.

Each exact-tag row appears twice, at top level and inside an item of a sequence the table
does not name (so the item is walked, not removed), each copy with its own token; sequence
rows get one item whose Text Value (and, for code sequences, Code Value) carries the token.
Private blocks (plain, nested in a private sequence, and one safe-private attribute),
an overlay plane (60xx) and a curve (50xx) carry tokens too.  Built in code from nothing
(no patient data): a CT Image instance without pixel data, Explicit VR Little Endian.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import struct
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from tasks import _profile_table as table
from tasks.dicomio import read_dicom

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
#: a sequence Table E.1-1 does not list: its items are walked with every row applying
CONTAINER = 0x00400260  # Performed Protocol Code Sequence
TEXT_VALUE = 0x0040A160
CODE_VALUE = 0x00080100
#: VRs whose value is a binary number: no searchable token (checked by absence instead)
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "AT"})


@dataclass
class Corpus:
    data: bytes
    tokens: dict[bytes, str] = field(default_factory=dict)  # token -> what carries it
    numeric: list[tuple[int, int]] = field(default_factory=list)  # (parent or 0, tag)


def _token_value(vr: str, i: int, nested: bool) -> tuple[object, bytes | None]:
    """A value for ``vr`` and the bytes to search for (None: not searchable)."""
    n = i + (5000 if nested else 0)
    text = f"{'NST' if nested else 'TOK'}{i:04d}"
    if vr in ("PN",):
        return f"{text}^X", text.encode()
    if vr in ("LO", "SH", "CS", "AE", "UC", "ST", "LT", "UT"):
        return text, text.encode()
    if vr == "UI":
        value = f"1.2.3.{998 if nested else 999}{i:04d}"
        return value, value.encode()
    if vr == "DA":
        value = (dt.date(1850 if nested else 1800, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d")
        return value, value.encode()
    if vr == "DT":
        value = f"17{n % 100:02d}0101120000.{n:06d}"
        return value, value.encode()
    if vr == "TM":
        value = f"{(n // 60) % 24:02d}{n % 60:02d}59.{n:04d}"
        return value, value.encode()
    if vr == "DS":
        value = f"{6 if nested else 7}{i:05d}.5"
        return value, value.encode()
    if vr == "IS":
        value = f"{5 if nested else 8}{i:05d}"
        return value, value.encode()
    if vr == "AS":
        value = f"{(n % 900) + 100:03d}W"
        return value, value.encode()
    if vr == "UR":
        value = f"http://{text.lower()}.invalid/"
        return value, value.encode()
    if vr in ("OB", "UN", "OW"):
        return text.encode() + b"\0", text.encode()
    if vr in NUMERIC_VRS:
        return 1, None
    raise AssertionError(f"no token for VR {vr}")


def _add_row(ds: Dataset, corpus: Corpus, i: int, tag: int, keyword: str, vr: str,
             nested: bool, parent: int) -> None:
    if vr == "SQ":
        value, token = _token_value("UT", i, nested)
        item = Dataset()
        item.add_new(TEXT_VALUE, "UT", value)
        if keyword.endswith("CodeSequence"):
            item.add_new(CODE_VALUE, "SH", value)
            item.add_new(0x00080102, "SH", "99TOK")
            item.add_new(0x00080104, "LO", "token code")
        ds.add_new(tag, "SQ", Sequence([item]))
    else:
        value, token = _token_value(vr, i, nested)
        ds.add_new(tag, vr, value)
    if token is None:
        corpus.numeric.append((parent, tag))
    else:
        corpus.tokens[token] = f"{'nested ' if nested else ''}{keyword} ({tag:08X})"


def build_corpus() -> Corpus:
    corpus = Corpus(b"")
    ds = Dataset()
    inner = Dataset()
    sop_uid = ""
    for i, (_text, tag, keyword, _name, vr, *_rest) in enumerate(table.ROWS):
        if tag is None or tag >> 16 in (0x0000, 0x0002):
            continue  # patterns below; (0002,0003) lives in the meta; no command set in files
        _add_row(ds, corpus, i, tag, keyword, vr, False, 0)
        _add_row(inner, corpus, i, tag, keyword, vr, True, CONTAINER)
        if tag == 0x00080018:
            sop_uid = str(ds[tag].value)
    ds.SOPClassUID = CT_IMAGE
    ds.Modality = "CT"
    ds.add_new(CONTAINER, "SQ", Sequence([inner]))
    _private(ds, corpus)
    _repeating_groups(ds, corpus)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    corpus.data = buffer.getvalue()
    return corpus


def _private(ds: Dataset, corpus: Corpus) -> None:
    ds.add_new(0x00090010, "LO", "TOKEN CORPUS")
    ds.add_new(0x00091001, "LO", "PRV0001")
    item = Dataset()
    item.add_new(0x00100010, "PN", "PRV0002^X")
    item.add_new(0x00110010, "LO", "TOKEN CORPUS")
    item.add_new(0x00111001, "LO", "PRV0003")
    ds.add_new(0x00091002, "SQ", Sequence([item]))
    # a Table E.3.10-1 safe private attribute: removed too unless --retain-safe-private
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "DS", "4000001.5")
    for token, where in ((b"PRV0001", "private LO"), (b"PRV0002", "PN in a private SQ"),
                         (b"PRV0003", "private LO in a private SQ"),
                         (b"4000001.5", "safe private DS")):
        corpus.tokens[token] = where


def _repeating_groups(ds: Dataset, corpus: Corpus) -> None:
    ds.add_new(0x60000010, "US", 1)  # Overlay Rows
    ds.add_new(0x60000011, "US", 16)  # Overlay Columns
    ds.add_new(0x60000022, "LO", "OVL0001")  # Overlay Description
    ds.add_new(0x60000040, "CS", "G")  # Overlay Type
    ds.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    ds.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(0x60000102, "US", 0)  # Overlay Bit Position
    ds.add_new(0x60001500, "LO", "OVL0002")  # Overlay Label
    ds.add_new(0x60003000, "OW", b"OVL0003\0")  # Overlay Data
    ds.add_new(0x60004000, "LT", "OVL0004")  # Overlay Comments
    ds.add_new(0x50002500, "LO", "CRV0001")  # Curve Label
    ds.add_new(0x50003000, "OB", b"CRV0002\0")  # Curve Data
    for n in range(1, 5):
        corpus.tokens[f"OVL{n:04d}".encode()] = "overlay plane 6000"
    for n in range(1, 3):
        corpus.tokens[f"CRV{n:04d}".encode()] = "curve 5000"


def without_encrypted_attributes(data: bytes) -> bytes:
    """The file bytes with the (0400,0500) element cut out (the encrypted originals)."""
    df = read_dicom(data)
    el = df.top(0x04000500)
    prefix = df.raw_prefix + df.meta_bytes
    if el is None:
        return prefix + df.body
    return prefix + df.body[:el.start] + df.body[el.end:]


#: a UID made under the default root (2.25, a 128-bit number from the HMAC): its 39 random
#: digits hold an 8-digit date token about once in 100 runs, and none of it is original
_DERIVED_UID = re.compile(rb"2\.25\.[0-9]+")


def surviving(data: bytes, corpus: Corpus) -> dict[bytes, str]:
    """The tokens found anywhere in ``data`` outside (0400,0500) and outside the UIDs
    derived under the 2.25 root (the corpus's own UIDs are under 1.2.3)."""
    clear = _DERIVED_UID.sub(b"", without_encrypted_attributes(data))
    return {token: where for token, where in corpus.tokens.items() if token in clear}


def uint16(value: int) -> bytes:
    return struct.pack("<H", value)
