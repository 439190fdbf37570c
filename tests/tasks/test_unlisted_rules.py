"""The rules past PS3.15 Table E.1-1: a file built in code with a unique marker in every
place the table does not name (top level and nested, explicit, implicit and big endian),
de-identified with ``basic`` and ``strict``, without and with each Option, then restored."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.explain import explain_bytes
from tasks.inventory import replaced_tags, scan_file
from tasks.profile import OPTIONS, get_profile
from tasks.reidentify import ReidentifySettings, reidentify_bytes
from tests.builders import file_bytes, small_ct
from tests.conftest import SECRET
from tests.tokens import without_encrypted_attributes

ROOT = "1.2.826.0.1.3680043.9.7777"
WELL_KNOWN_FRAME = "1.2.840.10008.1.4.1.1"  # PS3.6 Annex A: Talairach brain atlas frame
STANDARD_MEANING = "STDMEANINGKEEP"
#: (0028,3110) > (0040,9096): two sequences no row of the table names
OUTER, INNER = 0x00283110, 0x00409096
UID_TAGS = (0x00081167, 0x00200242, 0x00209312, 0x00209313, 0x0018991E, 0x00083012,
            0x00280304)
SAFE_CREATOR = "Philips PET Private Group"  # Table E.3.10-1: (7053,xx00) and (7053,xx09) DS
UID_CREATOR = "SIEMENS Ultrasound SC2000"  # Table E.3.10-1: (0129,xx02) UI


class Markers:
    def __init__(self) -> None:
        self.places: dict[str, set[str]] = {}

    def add(self, kind: str, value: str) -> str:
        self.places.setdefault(kind, set()).add(value)
        return value

    def of(self, *kinds: str) -> set[str]:
        return set().union(*(self.places.get(k, set()) for k in kinds))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _local_code(m: Markers, n: int, kind: str = "code") -> Dataset:
    return _code(m.add(kind, f"CVMARK{n:02d}"), "99LOCAL", m.add(kind, f"CMMARK{n:02d}"))


def _level(m: Markers, depth: int) -> Dataset:
    """The unlisted places at one depth (0 = top level)."""
    ds = Dataset()
    for i, tag in enumerate(UID_TAGS):
        ds.add_new(tag, "UI", m.add("uid", f"{ROOT}.{depth + 1}{i:03d}"))
    ds.add_new(0x00142006, "PN", m.add("name", f"PNMARK{depth}A^ONE"))  # Evaluator Name
    ds.add_new(0x00140104, "PN", m.add("name", f"PNMARK{depth}B^TWO"))  # Secondary Reviewer
    ds.add_new(0x00140102, "DA", m.add("date", f"197{depth}0203"))  # Secondary Review Date
    ds.add_new(0x0008041F, "DT", m.add("date", f"198{depth}0405101500"))  # Study Update DT
    ds.add_new(0x00400400, "LT", m.add("text", f"TXTMARK{depth}A"))  # Comments on the SPS
    ds.add_new(0x00420010, "ST", m.add("text", f"TXTMARK{depth}B"))  # Document Title
    # dates in another calendar (LO): removed by basic's own rows, whatever the Options
    ds.add_new(0x00100033, "LO", m.add("altdate", f"ALTMARK{depth}C"))  # Birth Date Alt. Cal.
    ds.add_new(0x00100034, "LO", m.add("altdate", f"ALTMARK{depth}D"))  # Death Date Alt. Cal.
    ds.add_new(0x0040A160, "UT", m.add("text", f"TXTMARK{depth}E"))  # Text Value
    return ds


def build(m: Markers, syntax: str) -> bytes:
    ds = small_ct(syntax)
    ds.update(_level(m, 0))
    inner = _level(m, 2)
    outer = _level(m, 1)
    # Error Comment: a command element (pydicom writes none at the top level of a file)
    outer.add_new(0x00000902, "LO", m.add("text", "TXTMARKERRCOMMENT"))
    outer.add_new(INNER, "SQ", Sequence([inner]))
    ds.add_new(OUTER, "SQ", Sequence([outer]))
    # strict judges coded entries everywhere: a local code in an unlisted sequence
    ds.add_new(0x00082218, "SQ", Sequence([_local_code(m, 9, "text")]))
    # item 4: coded entries under sequences whose row is D (or X/D) or an Option cleans
    content = Dataset()
    content.ValueType = "CODE"
    content.add_new(0x00209312, "UI", WELL_KNOWN_FRAME)
    content.ConceptNameCodeSequence = Sequence([_local_code(m, 1)])
    content.ConceptCodeSequence = Sequence([_local_code(m, 2),
                                            _code("121071", "DCM", STANDARD_MEANING)])
    ds.ContentSequence = Sequence([content])
    for n, keyword in enumerate(("GraphicAnnotationSequence", "VerifyingObserverSequence",
                                 "OperatorIdentificationSequence",
                                 "WaveformAnnotationSequence", "FlowIdentifierSequence"), 3):
        item = Dataset()
        item.ConceptNameCodeSequence = Sequence([_local_code(m, n)])
        setattr(ds, keyword, Sequence([item]))
    ds.AdmittingDiagnosesCodeSequence = Sequence([_local_code(m, 8)])  # C: Clean Descriptors
    # item 5: overlay and curve text (Clean Graphics), safe private slots
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", m.add("graphics", "OVLMARKA"))  # Overlay Description
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60001500, "LO", m.add("graphics", "OVLMARKB"))  # Overlay Label
    ds.add_new(0x60003000, "OW", b"\x0f\xf0")
    ds.add_new(0x50000022, "LO", m.add("graphics", "CRVMARKA"))  # Curve Description
    ds.add_new(0x50002500, "LO", m.add("graphics", "CRVMARKB"))  # Curve Label
    ds.add_new(0x70530010, "LO", SAFE_CREATOR)
    ds.add_new(0x70531000, "LT", m.add("private", "PRVMARK^NAME 19600101"))  # a DS slot
    ds.add_new(0x70531009, "DS", "1.5")
    ds.add_new(0x01290010, "LO", UID_CREATOR)
    ds.add_new(0x01291002, "UI", m.add("private", f"{ROOT}.9001"))
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x00\x01\x02\x03"
    return file_bytes(ds)


SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian)
SYNTAX_IDS = ["explicit", "implicit", "big", "deflated"]
_DERIVED_UID = re.compile(rb"2\.25\.[0-9]+")


def surviving(out: bytes, markers: set[str]) -> set[str]:
    """Markers in ``out`` (inflated) outside (0400,0500) and the UIDs made under 2.25."""
    clear = _DERIVED_UID.sub(b"", without_encrypted_attributes(out))
    return {m for m in markers if m.encode() in clear}


def expected_survivors(m: Markers, profile: str, option: str | None) -> set[str]:
    """What is kept on purpose: free text the table does not list by ``basic`` (PS3.15
    E.1.1), UIDs by Retain UIDs, dates by Retain Longitudinal Full Dates."""
    kept = m.of("text") if profile == "basic" else set()
    if option == "retain_uids":
        kept |= m.of("uid")
    if option == "retain_long_full_dates":
        kept |= m.of("date")
    return kept


@pytest.mark.parametrize("syntax", SYNTAXES, ids=SYNTAX_IDS)
@pytest.mark.parametrize("profile", ["basic", "strict"])
def test_no_marker_survives_and_restore_is_byte_exact(syntax: str, profile: str,
                                                      encryptor: EnvelopeEncryptor,
                                                      reid: ReidentifySettings) -> None:
    m = Markers()
    data = build(m, syntax)
    every = m.of(*m.places)
    assert surviving(data, every) == every  # the file holds each marker before (inflated)
    for option in (None, *OPTIONS):
        settings = DeidentifySettings(secret=SECRET, encryptor=encryptor, profile=profile,
                                      options=(option,) if option else ())
        out = deidentify_bytes(data, settings)
        assert surviving(out, every) == expected_survivors(m, profile, option), option
        clear = without_encrypted_attributes(out)  # inflated
        assert STANDARD_MEANING.encode() in clear  # codes of a standard scheme are kept
        assert WELL_KNOWN_FRAME.encode() in clear  # a registered UID is not an instance UID
        assert reidentify_bytes(out, reid) == data, option


@pytest.mark.parametrize("syntax", SYNTAXES, ids=SYNTAX_IDS)
def test_safe_private_keeps_only_values_of_the_listed_vr(syntax: str) -> None:
    data = build(Markers(), syntax)
    settings = DeidentifySettings(secret=SECRET, options=("retain_safe_private",))
    df = read_dicom(deidentify_bytes(data, settings))
    tags = {el.tag for el in df.elements}
    assert 0x70531009 in tags  # the DS the list defines: kept
    assert 0x70531000 not in tags  # an LT (or non-DS text) in a DS slot: removed
    uid = df.top_value(0x01291002)
    assert uid is not None and uid.startswith(b"2.25.")  # a kept private UID is replaced


def test_explain_shows_the_rules_past_the_table() -> None:
    data = build(Markers(), ExplicitVRLittleEndian)
    text = explain_bytes(data, DeidentifySettings(secret=SECRET, profile="strict",
                                                  options=("retain_safe_private",)))
    for reason in ("a UI value not registered in PS3.6 Annex A is an instance UID",
                   "a PN value is never kept", "a DA/DT value is never kept",
                   "code of a private or local coding scheme (PS3.16 8.2): dummy",
                   "code of a standard coding scheme", "a UID registered in PS3.6 Annex A",
                   "not in Table E.1-1 and not known safe",
                   "known safe (profile strict)", "the UID names a definition",
                   "a safe private slot ('Philips PET Private Group') holding VR LT"):
        assert reason in text, reason
    assert "TXTMARK" not in text and "PNMARK" not in text  # never a value


def test_inventory_records_every_instance_uid(tmp_path: Path) -> None:
    m = Markers()
    path = tmp_path / "f.dcm"
    path.write_bytes(build(m, ImplicitVRLittleEndian))
    row = scan_file(path, replaced_tags("basic"))
    assert m.of("uid") <= set(row["replace"])
    assert f"{ROOT}.9001" in row["replace"]  # a private UI of unknown VR a slot may keep
    assert WELL_KNOWN_FRAME not in row["replace"]
    assert "1.2.840.10008.5.1.4.1.1.2" not in row["replace"]  # a SOP Class names a definition
    assert not m.of("uid") & set(scan_file(path, replaced_tags("gdcmanon"))["replace"])
    retained = scan_file(path, replaced_tags(get_profile("basic", ["retain_uids"])))
    assert not m.of("uid") & set(retained["replace"])


def test_private_block_kept_by_a_site_profile_follows_the_vr_rules(tmp_path: Path) -> None:
    """keep_private_creators keeps a block: its UIDs are replaced, names and dates too."""
    site = tmp_path / "site.yaml"
    site.write_text(f"name: site\nextends: basic\nkeep_private_creators: [{UID_CREATOR}]\n")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.1"
    ds.add_new(0x01290010, "LO", UID_CREATOR)
    ds.add_new(0x01291002, "UI", f"{ROOT}.9002")
    ds.add_new(0x01291003, "PN", "PRVNAME^MARK")
    ds.add_new(0x01291004, "DA", "19650304")
    ds.add_new(0x01291005, "LO", "KEPT TEXT")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    out = deidentify_bytes(buffer.getvalue(), DeidentifySettings(secret=SECRET,
                                                                 profile=str(site)))
    assert surviving(out, {f"{ROOT}.9002", "PRVNAME", "19650304"}) == set()
    assert b"KEPT TEXT" in out  # the profile keeps the block's text on purpose


@pytest.mark.parametrize("text, message", [
    ("unlisted: drop\n", "unlisted must be one of keep, known-safe"),
    ("known_safe: [NoSuchKeyword]\n", "unknown attribute 'NoSuchKeyword'"),
    ("table: none\nunlisted: known-safe\n", "need the ps3.15-e1-1 table"),
])
def test_unlisted_policy_is_validated(tmp_path: Path, text: str, message: str) -> None:
    from tasks.errors import ProfileError
    from tasks.profile import load_profile

    path = tmp_path / "p.yaml"
    path.write_text("name: p\n" + text)
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(str(path))
