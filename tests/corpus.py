"""A privacy corpus: a unique marker in every place where exports hide identifiers.

Every attribute of PS3.15 Table E.1-1 at top level and nested 1 to 5 deep (inside a
sequence the table does not name, so the items are walked), in Explicit VR Little Endian,
Implicit VR Little Endian, Explicit VR Big Endian and Deflated files, in four character sets
(ISO_IR 100, ISO_IR 192, ISO 2022 IR 87, ISO_IR 144: text markers carry a non-ASCII tail);
and past the table: file meta and preamble, UIDs and names and dates the table does not
list, free text, coded entries of a local scheme, the texts the options clean, a private
slot whose VR is not the safe list's, an overlay drawn into unused Pixel Data bits, and the
folder and file names.  Built in code from nothing (no patient data).

A marker is found in an output by :func:`surviving`: in the bytes outside (0400,0500) (the
encrypted originals) and outside UIDs derived under 2.25 (the corpus's own UIDs are under
1.2.3), and in the overlay bit planes of the Pixel Data.  :meth:`Marker.kept_by` says when a
profile or option keeps the place on purpose (Retain UIDs keeps UIDs...).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tasks import _profile_table as table
from tasks.dicomio import read_dicom
from tasks.profile import Action, get_profile

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
#: a sequence Table E.1-1 does not list: its items are walked with every row applying
CONTAINER = 0x00400260  # Performed Protocol Code Sequence
TEXT_VALUE = 0x0040A160
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "AT", "AS", "OF", "OD", "OL"})
FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
OVERLAY_BIT = 12

#: leak classes of the corpus (the README's table lists them)
TABLE = "E.1-1 attribute"
META = "file meta information"
PREAMBLE = "preamble"
UNLISTED_UID = "UID the table does not list"
UNLISTED_PN_DA = "name or date the table does not list"
FREE_TEXT = "free text the table does not list"
CODED = "coded entry of a local scheme"
OPTION_TEXT = "text an option cleans"
PRIVATE_VR = "private slot with another VR than the safe list's"
OVERLAY_BITS = "overlay in unused Pixel Data bits"
PATH = "folder or file name"

#: (transfer syntax, Specific Character Set, non-ASCII tail of text markers, deepest level)
VARIANTS = (
    ("explicit", ExplicitVRLittleEndian, "ISO_IR 100", "Müller", 5),
    ("implicit", ImplicitVRLittleEndian, "ISO_IR 192", "Jörg山田", 2),
    ("bigendian", ExplicitVRBigEndian, ["ISO 2022 IR 6", "ISO 2022 IR 87"], "山田", 2),
    ("deflated", DeflatedExplicitVRLittleEndian, "ISO_IR 144", "Жуков", 2),
)


@dataclass(frozen=True)
class Marker:
    """One marker: where it sits and which class of leak it stands for."""

    text: bytes
    place: str
    kind: str
    tag: int | None = None  # the attribute whose action decides (E.1-1 rows, unlisted)
    vr: str = ""

    def kept_by(self, profile: str, options: tuple[str, ...]) -> bool:
        """Whether ``profile`` with ``options`` keeps this place on purpose."""
        if self.kind == PATH:
            return False
        compiled = get_profile(profile, options)
        if self.kind in (TABLE, CODED) and self.tag is not None:
            action = compiled.actions.get(self.tag)
            # clean (C) keeps a time: the date options shift dates, not times of day
            return action is Action.K or (action is Action.C and self.vr == "TM")
        if self.kind == UNLISTED_UID:
            return "retain_uids" in options
        if self.kind == UNLISTED_PN_DA and self.vr in ("DA", "DT"):  # the run's date policy
            return "retain_long_full_dates" in options
        if self.kind == FREE_TEXT:  # PS3.15 keeps what the table does not list: basic does
            return profile == "basic"
        if self.kind == OVERLAY_BITS:  # Clean Graphics keeps the planes (bitmaps)
            return "clean_graphics" in options
        if self.kind == OPTION_TEXT and self.tag is not None:
            return compiled.actions.get(self.tag) is Action.K or (
                self.tag >> 16 in (0x6000, 0x5000) and self.tag & 0xFFFF == 0x3000
                and "clean_graphics" in options)  # the overlay and curve data themselves
        return False


@dataclass
class PrivacyCorpus:
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes
    markers: dict[bytes, Marker] = field(default_factory=dict)
    counter: int = 0

    def write(self, root: Path) -> None:
        for rel, data in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    # ----------------------------------------------------------------- marker makers

    def text(self, place: str, kind: str, tag: int | None = None, width: int = 5) -> str:
        self.counter += 1
        value = f"QM{self.counter:0{width}d}"
        self.markers[value.encode()] = Marker(value.encode(), place, kind, tag)
        return value

    def add(self, value: str | bytes, place: str, kind: str, tag: int | None = None,
            vr: str = "") -> None:
        raw = value.encode() if isinstance(value, str) else value
        assert raw not in self.markers, raw
        self.markers[raw] = Marker(raw, place, kind, tag, vr)

    def value(self, vr: str, place: str, kind: str, tag: int | None, tail: str) -> object:
        """A marker-carrying value of ``vr`` (None for VRs that hold no searchable text)."""
        self.counter += 1
        n = self.counter
        if vr in NUMERIC_VRS:
            return None
        if vr in ("PN", "LO", "SH", "CS", "AE", "UC", "ST", "LT", "UT", "UR"):
            text = f"QM{n:05d}"
            if vr == "UR":  # a host name: lower case
                self.add(text.lower(), place, kind, tag)
                return f"http://{text.lower()}.invalid/"
            self.add(text, place, kind, tag)
            if vr == "PN":
                return f"{text}^{tail}" if tail else f"{text}^X"
            if vr in ("LO", "UC", "ST", "LT", "UT") and tail:
                return f"{text} {tail}"
            return text
        if vr == "UI":
            value = f"1.2.3.77{n:06d}"
        elif vr == "DA":
            value = (dt.date(1700, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d")
        elif vr == "DT":
            value = (dt.date(1700, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d") + "101010"
        elif vr == "TM":
            value = f"{(n // 60) % 24:02d}{n % 60:02d}59.{n:06d}"
        elif vr == "DS":
            value = f"7{n:07d}.5"
        elif vr == "IS":
            value = f"8{n:07d}"
        elif vr in ("OB", "UN", "OW"):
            text = f"QM{n:05d}"
            self.add(text, place, kind, tag)
            return text.encode() + b"\0"
        else:
            raise AssertionError(f"no marker for VR {vr}")
        self.add(value, place, kind, tag, vr)
        return value


# --------------------------------------------------------------------------- datasets


def _code_item(corpus: PrivacyCorpus, place: str, tail: str, scheme: str = "99LOCAL",
               tag: int | None = None) -> Dataset:
    """A code of a local scheme whose value and meaning carry markers (PS3.16 8.2);
    ``tag``: the sequence row that holds it (kept on purpose when that row is kept)."""
    item = Dataset()
    item.CodeValue = corpus.text(f"{place} CodeValue", CODED, tag)
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = f"{corpus.text(f'{place} CodeMeaning', CODED, tag)} {tail}".strip()
    return item


def _table_rows(corpus: PrivacyCorpus, ds: Dataset, label: str, depth: int, tail: str) -> None:
    where = f"{label}, depth {depth}"
    for _text, tag, keyword, _name, vr, *_rest in table.ROWS:
        if tag is None or tag >> 16 in (0x0000, 0x0002):
            continue  # patterns (60xx...) below; (0002,0003) lives in the meta
        place = f"{keyword} ({tag:08X}), {where}"
        if vr == "SQ":
            item = Dataset()
            item.add_new(TEXT_VALUE, "UT", corpus.value("UT", place, TABLE, tag, tail))
            if keyword.endswith("CodeSequence"):
                code = _code_item(corpus, place, tail, tag=tag)
                for el in code:
                    item.add(el)
            ds.add_new(tag, "SQ", Sequence([item]))
            continue
        value = corpus.value(vr, place, TABLE, tag, tail)
        if value is None:
            ds.add_new(tag, vr, 1 if vr != "AS" else "001D")
        else:
            ds.add_new(tag, vr, value)


def _levels(ds: Dataset, deepest: int) -> list[Dataset]:
    """``ds`` and the items 1..``deepest`` levels down a chain of CONTAINER sequences."""
    levels = [ds]
    for _ in range(deepest):
        inner = Dataset()
        levels[-1].add_new(CONTAINER, "SQ", Sequence([inner]))
        levels.append(inner)
    return levels


def _file_meta(ds: Dataset, sop_class: str, ts: str) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _identity(corpus: PrivacyCorpus, ds: Dataset, sop_class: str, charset: object,
              label: str) -> None:
    """What every file needs: character set, SOP class and the UIDs pass 1 reads."""
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    for keyword, tag in (("SOPInstanceUID", 0x00080018), ("StudyInstanceUID", 0x0020000D),
                         ("SeriesInstanceUID", 0x0020000E)):
        if keyword not in ds:
            corpus.counter += 1
            value = f"1.2.3.77{corpus.counter:06d}"
            corpus.add(value, f"{keyword} of {label}", TABLE, tag)
            setattr(ds, keyword, value)
    if "PatientName" not in ds:  # a two-letter given name: searched in paths too
        ds.PatientName = f"{corpus.text(f'PatientName of {label}', TABLE, 0x00100010)}^LI"
    if "PatientID" not in ds:
        ds.PatientID = corpus.text(f"PatientID of {label}", TABLE, 0x00100020)
    if "Modality" not in ds:
        ds.Modality = "OT"


def _save(ds: Dataset, ts: str, preamble: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    if preamble is not None:
        ds.preamble = preamble
    ds.save_as(buffer, enforce_file_format=True, little_endian=ts != ExplicitVRBigEndian,
               implicit_vr=ts == ImplicitVRLittleEndian)
    return buffer.getvalue()


def _path(corpus: PrivacyCorpus, label: str) -> str:
    folder = corpus.text(f"folder name of {label}", PATH)
    sub = corpus.text(f"sub-folder name of {label}", PATH)
    name = corpus.text(f"file name of {label}", PATH)
    return f"{folder}^PATIENT/{sub}_ACC/{name}.dcm"


def _table_file(corpus: PrivacyCorpus, label: str, ts: str, charset: object, tail: str,
                deepest: int) -> None:
    ds = Dataset()
    for depth, holder in enumerate(_levels(ds, deepest)):
        _table_rows(corpus, holder, label, depth, tail)
    _identity(corpus, ds, CT_IMAGE, charset, label)
    _file_meta(ds, CT_IMAGE, ts)
    corpus.files[_path(corpus, label)] = _save(ds, ts)


def _meta_file(corpus: PrivacyCorpus) -> None:
    label = "meta and preamble"
    ds = Dataset()
    _identity(corpus, ds, CT_IMAGE, "ISO_IR 100", label)
    _file_meta(ds, CT_IMAGE, ExplicitVRLittleEndian)
    meta = ds.file_meta
    meta.ImplementationClassUID = "1.2.3.4"
    meta.ImplementationVersionName = corpus.text("(0002,0013) ImplementationVersionName", META)
    meta.SourceApplicationEntityTitle = corpus.text("(0002,0016) SourceAETitle", META)
    meta.SendingApplicationEntityTitle = corpus.text("(0002,0017) SendingAETitle", META)
    meta.ReceivingApplicationEntityTitle = corpus.text("(0002,0018) ReceivingAETitle", META)
    corpus.counter += 1
    creator = f"1.2.3.77{corpus.counter:06d}"
    corpus.add(creator, "(0002,0100) PrivateInformationCreatorUID", META)
    meta.PrivateInformationCreatorUID = creator
    meta.PrivateInformation = corpus.text("(0002,0102) PrivateInformation", META).encode()
    preamble = corpus.text("text in the 128-byte preamble", PREAMBLE).encode()
    corpus.files[_path(corpus, label)] = _save(
        ds, ExplicitVRLittleEndian, preamble.ljust(128, b"\0"))


#: attributes past the table: (tag, class); their VR from the data dictionary
UNLISTED = (
    (0x00081167, UNLISTED_UID), (0x00200242, UNLISTED_UID), (0x00209312, UNLISTED_UID),
    (0x00209313, UNLISTED_UID), (0x0018991E, UNLISTED_UID), (0x00083012, UNLISTED_UID),
    (0x00280304, UNLISTED_UID),
    (0x00142006, UNLISTED_PN_DA), (0x00140104, UNLISTED_PN_DA), (0x00140102, UNLISTED_PN_DA),
    (0x00100033, UNLISTED_PN_DA), (0x00100034, UNLISTED_PN_DA),
    (0x00400400, FREE_TEXT), (0x00420010, FREE_TEXT), (TEXT_VALUE, FREE_TEXT),
    (0x00700081, FREE_TEXT),  # Content Description (LO)
)


def _unlisted_file(corpus: PrivacyCorpus) -> None:
    label = "past the table"
    ds = Dataset()
    for depth, holder in enumerate(_levels(ds, 2)):
        for tag, kind in UNLISTED:
            vr = dictionary_VR(tag)
            place = f"({tag >> 16:04X},{tag & 0xFFFF:04X}), depth {depth}"
            if kind == UNLISTED_PN_DA and tag in (0x00100033, 0x00100034):
                place += " (a date in another calendar)"
            holder.add_new(tag, vr, corpus.value(vr, place, kind, tag, "Straße"))
        holder.add_new(0x00090010, "LO", "CORPUS PRIVATE")
        holder.add_new(0x00091010, "UI", corpus.value("UI", f"private UI, depth {depth}",
                                                      UNLISTED_UID, None, ""))
    _identity(corpus, ds, CT_IMAGE, "ISO_IR 100", label)
    _file_meta(ds, CT_IMAGE, ExplicitVRLittleEndian)
    corpus.files[_path(corpus, label)] = _save(ds, ExplicitVRLittleEndian)


#: sequences whose code items must not keep a local scheme's value or meaning (issue list)
CODED_SEQUENCES = (
    (0x0040A730, 0x0040A168),  # Content Sequence > Concept Code Sequence (an SR CODE item)
    (0x00700001, 0x0040A043),  # Graphic Annotation Sequence > Concept Name Code Sequence
    (0x0040A073, 0x0040A088),  # Verifying Observer > ... Identification Code Sequence
    (0x00081072, 0x00401101),  # Operator Identification > Person Identification Code
    (0x0040B020, 0x0040A043),  # Waveform Annotation Sequence > Concept Name Code Sequence
    (0x00340001, 0x0040A043),  # Flow Identifier Sequence > Concept Name Code Sequence
)


def _coded_file(corpus: PrivacyCorpus) -> None:
    label = "coded entries"
    ds = Dataset()
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_standard_code("126000", "DCM", "Imaging Report")])
    for outer, inner in CODED_SEQUENCES:
        item = Dataset()
        if outer == 0x0040A730:
            item.RelationshipType = "CONTAINS"
            item.ValueType = "CODE"
            item.ConceptNameCodeSequence = Sequence([_standard_code("121071", "DCM",
                                                                    "Finding")])
        codes = [_code_item(corpus, f"({outer:08X}) > ({inner:08X})", "Straße"),
                 _code_item(corpus, f"({outer:08X}) > ({inner:08X}), scheme L", "", "L")]
        item.add_new(inner, "SQ", Sequence(codes))
        ds.add_new(outer, "SQ", Sequence([item]))
    finding = Dataset()  # a standard code: safe, and no audit alarm on "FINDING"
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "CODE"
    finding.ConceptNameCodeSequence = Sequence([_standard_code("121071", "DCM", "Finding")])
    finding.ConceptCodeSequence = Sequence([_standard_code("F-01000", "SRT", "FINDING")])
    ds.ContentSequence.append(finding)
    _identity(corpus, ds, COMPREHENSIVE_SR, "ISO_IR 100", label)
    ds.Modality = "SR"
    _file_meta(ds, COMPREHENSIVE_SR, ExplicitVRLittleEndian)
    corpus.files[_path(corpus, label)] = _save(ds, ExplicitVRLittleEndian)


def _standard_code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _option_texts_file(corpus: PrivacyCorpus) -> None:
    """Overlay and curve texts (Clean Graphics), and a safe-list slot holding an LT."""
    label = "option texts"
    ds = Dataset()
    ds.add_new(0x60000010, "US", 1)  # Overlay Rows
    ds.add_new(0x60000011, "US", 16)  # Overlay Columns
    ds.add_new(0x60000040, "CS", "G")  # Overlay Type
    ds.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    ds.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(0x60000102, "US", 0)  # Overlay Bit Position
    for tag, vr, what in ((0x60000022, "LO", "Overlay Description"),
                          (0x60001500, "LO", "Overlay Label"),
                          (0x60004000, "LT", "Overlay Comments"),
                          (0x60003000, "OW", "Overlay Data"),
                          (0x50002500, "LO", "Curve Label"),
                          (0x50000022, "LO", "Curve Description"),
                          (0x50003000, "OB", "Curve Data")):
        ds.add_new(tag, vr, corpus.value(vr, f"{what} ({tag:08X})", OPTION_TEXT, tag, ""))
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "LT", f"{corpus.text('LT in the DS slot (7053,xx00)', PRIVATE_VR)}"
                                 " DOE^JANE 19700101")
    _identity(corpus, ds, CT_IMAGE, "ISO_IR 100", label)
    _file_meta(ds, CT_IMAGE, ExplicitVRLittleEndian)
    corpus.files[_path(corpus, label)] = _save(ds, ExplicitVRLittleEndian)


def _overlay_bits_file(corpus: PrivacyCorpus) -> None:
    """An overlay drawn into bit 12 of 16-bit pixels stored in 12 bits (PS3.5 8.1.2)."""
    label = "overlay in pixel bits"
    marker = corpus.text("overlay plane in bit 12 of Pixel Data", OVERLAY_BITS).encode()
    ds = Dataset()
    rows = cols = 16
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16)
    ds.add_new(0x60000102, "US", OVERLAY_BIT)
    ds.PixelData = draw_plane(marker, rows * cols)
    _identity(corpus, ds, CT_IMAGE, "ISO_IR 100", label)
    _file_meta(ds, CT_IMAGE, ExplicitVRLittleEndian)
    corpus.files[_path(corpus, label)] = _save(ds, ExplicitVRLittleEndian)


def draw_plane(text: bytes, pixels: int) -> bytes:
    """16-bit pixels (values 0..4095) whose bit 12 spells ``text``, MSB first."""
    bits = [(byte >> (7 - k)) & 1 for byte in text for k in range(8)]
    words = bytearray()
    for i in range(pixels):
        value = (i * 37) % 4096 | ((bits[i] if i < len(bits) else 0) << OVERLAY_BIT)
        words += value.to_bytes(2, "little")
    return bytes(words)


def read_plane(pixel_data: bytes, bit: int = OVERLAY_BIT) -> bytes:
    """The bit plane ``bit`` of 16-bit little-endian pixels, packed MSB first."""
    bits = [(int.from_bytes(pixel_data[i:i + 2], "little") >> bit) & 1
            for i in range(0, len(pixel_data) - 1, 2)]
    return bytes(sum(bits[j + k] << (7 - k) for k in range(8))
                 for j in range(0, len(bits) - 7, 8))


def build_privacy_corpus() -> PrivacyCorpus:
    corpus = PrivacyCorpus()
    for label, ts, charset, tail, deepest in VARIANTS:
        _table_file(corpus, f"E.1-1 rows, {label}, {charset}", ts, charset, tail, deepest)
    _meta_file(corpus)
    _unlisted_file(corpus)
    _coded_file(corpus)
    _option_texts_file(corpus)
    _overlay_bits_file(corpus)
    return corpus


# --------------------------------------------------------------------------- search

#: a UID made under the default root (2.25, 39 digits from the HMAC) holds none of the
#: corpus's markers, but its digits could spell a date marker by chance
_DERIVED_UID = re.compile(rb"2\.25\.[0-9]+")


def clear_bytes(data: bytes) -> bytes:
    """The file bytes outside (0400,0500) and derived UIDs, inflated when deflated, and the
    overlay planes of its Pixel Data (where a drawn marker would show)."""
    try:
        df = read_dicom(data)
    except Exception:  # noqa: BLE001 - a damaged output is searched as it is
        return data
    el = df.top(0x04000500)
    body = df.body if el is None else df.body[:el.start] + df.body[el.end:]
    plane = b""
    pixels = df.top(0x7FE00010)
    if pixels is not None and pixels.items is None and not pixels.undefined:
        plane = read_plane(pixels.value(df.body))
    return _DERIVED_UID.sub(b"", df.raw_prefix + df.meta_bytes + body) + b"\n" + plane


def surviving(data: bytes, markers: dict[bytes, Marker]) -> Iterator[Marker]:
    clear = clear_bytes(data)
    for text, marker in markers.items():
        if text in clear:
            yield marker
