"""Deterministic synthetic DICOM archives of fake patients, for tests, demos and benchmarks.

``anonpipe-sample OUT --patients N --studies N --series N --instances N --seed S`` writes
``OUT/P0001/ST01/SE01/IM0001.dcm`` ... from pydicom's bundled CT_small / MR_small, with
realistic fake PHI at every level (nested sequences and a private block included), so the
de-identifier has something to find.  The bytes are a pure function of the arguments: every
value comes from ``random.Random`` streams keyed by the seed, never from the clock.

Speed: a file is the template's elements, overlaid with the series' values, with a few
instance elements spliced in.  Explicit VR Little Endian elements are self-delimiting, so
pydicom encodes the template once and each series' values once; per instance only ~12
small elements are encoded (by :func:`encode_element`, a few lines of struct packing) and
joined between those byte runs.  :func:`reference_bytes` is the plain ``dcmwrite`` of the same
dataset, and the tests check that both agree byte for byte.
"""

from __future__ import annotations

import argparse
import enum
import functools
import math
import random
import struct
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import TypeAlias

from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRLittleEndian

from tasks.errors import OutputError, UsageError
from tasks.vr import LONG_VRS

PROG = "anonpipe-sample"
IMPLEMENTATION_VERSION_NAME = "ANONPIPE_SAMPLE"
# uuid5(NAMESPACE_URL, "urn:anonpipe:sample") as a 2.25 UID: stable, ours, no registered root needed.
IMPLEMENTATION_CLASS_UID = "2.25.32100540424985006821774096702478491679"
PRIVATE_CREATOR = "ANONPIPE SAMPLE"
PRIVATE_GROUP = 0x0009
# Detached Study Management (retired, still what modalities put in Referenced Study items).
STUDY_REFERENCE_CLASS_UID = "1.2.840.10008.3.1.2.3.1"
_PREFIX = b"\x00" * 128 + b"DICM"  # zero preamble: the templates carry a TIFF header there


class Kind(str, enum.Enum):
    """What the archive is for: realistic small files, or big CT slices for benchmarks."""

    SMALL = "small"
    LARGE_CT = "large-ct"


# --- fake-value tables (invented; any match with a real person is coincidence) -------------

# fmt: off
FAMILY_NAMES = (
    "Abernathy", "Bellweather", "Castellano", "Drummond", "Ekwueme", "Fairbanks", "Gallagher",
    "Halvorsen", "Ishikawa", "Jankowski", "Kowalczyk", "Lindqvist", "Marchetti", "Nakamura",
    "Okonkwo", "Pemberton", "Quintero", "Rasmussen", "Sandoval", "Thibodeaux", "Underwood",
    "Valdivia", "Whitcombe", "Xiong", "Yarborough", "Zielinski", "Ashworth", "Brannigan",
    "Cormier", "Delacroix", "Esposito", "Fitzgerald", "Grimaldi", "Hargreaves", "Iverson",
    "Jablonski", "Kettering", "Lockhart", "Montague", "Novak", "Oyelaran", "Prescott", "Quigley",
    "Rutherford", "Stavros", "Tremblay", "Ulbrich", "Vasquez", "Winslow", "Yoder",
)
GIVEN_NAMES = (  # (name, PatientSex)
    ("Amelia", "F"), ("Beatrix", "F"), ("Clara", "F"), ("Daphne", "F"), ("Elena", "F"),
    ("Fiona", "F"), ("Greta", "F"), ("Hazel", "F"), ("Ingrid", "F"), ("Josephine", "F"),
    ("Katarina", "F"),
    ("Lucia", "F"), ("Marguerite", "F"), ("Nadia", "F"), ("Ophelia", "F"), ("Priya", "F"),
    ("Rosalind", "F"), ("Sabine", "F"), ("Tamsin", "F"), ("Ursula", "F"), ("Vivienne", "F"),
    ("Wilhelmina", "F"), ("Yasmin", "F"), ("Zelda", "F"), ("Adaeze", "F"), ("Ambrose", "M"),
    ("Bartholomew", "M"), ("Cornelius", "M"), ("Desmond", "M"), ("Ezekiel", "M"), ("Fitzroy", "M"),
    ("Gideon", "M"), ("Horatio", "M"), ("Ignatius", "M"), ("Jasper", "M"), ("Kenji", "M"),
    ("Leopold", "M"), ("Montgomery", "M"), ("Nikolai", "M"), ("Octavius", "M"), ("Percival", "M"),
    ("Quentin", "M"), ("Rupert", "M"), ("Sebastian", "M"), ("Thaddeus", "M"), ("Ulysses", "M"),
    ("Valentin", "M"), ("Winston", "M"), ("Xavier", "M"), ("Emeka", "M"),
)
STREETS = (
    "Maple Avenue", "Juniper Lane", "Harbor View Road", "Old Mill Street", "Chestnut Court",
    "Willow Bend Drive", "Larkspur Way", "Quarry Hill Road", "Beacon Terrace", "Foxglove Path",
)
CITIES = (  # (city, state, ZIP prefix)
    ("Springfield", "IL", "627"), ("Shelbyville", "KY", "400"), ("Riverton", "WY", "825"),
    ("Fairview", "OR", "970"), ("Millbrook", "NY", "125"), ("Cedar Falls", "IA", "506"),
    ("Oakdale", "CA", "953"), ("Brookhaven", "GA", "303"),
)
AREA_CODES = ("217", "502", "307", "503", "845", "319", "209", "404")
INSTITUTIONS = (
    "Riverside General Hospital", "St. Bartholomew Medical Center", "Lakeshore Imaging Clinic",
    "Northgate University Hospital", "Pinecrest Regional Medical Center",
)
ETHNIC_GROUPS = (
    "Hispanic", "Not Hispanic", "Asian", "African American", "White", "Declined",
)
OCCUPATIONS = (
    "Teacher", "Electrician", "Accountant", "Nurse", "Carpenter", "Librarian", "Chef",
    "Software Dev", "Farmer", "Retired", "Pharmacist", "Bus Driver",
)
HISTORIES = (
    "Appendectomy {year}; seasonal allergies.", "Type 2 diabetes since {year}, on metformin.",
    "Smoker, 20 pack-years; quit {year}.", "Fractured left radius {year}; no other surgery.",
    "Hypertension diagnosed {year}; family history of stroke.", "No significant history.",
)
STUDY_DESCRIPTIONS = (
    "ONCOLOGY STAGING", "TRAUMA WORKUP", "FOLLOW-UP IMAGING", "PRE-OPERATIVE PLANNING",
    "HEADACHE EVALUATION", "ABDOMINAL PAIN", "CHRONIC COUGH",
)
REASONS = (
    "Rule out metastatic disease", "Fall from ladder, assess injuries", "Persistent headache",
    "Interval follow-up of known lesion", "Right lower quadrant pain", "Pre-surgical assessment",
)
SERIES_CHOICES = {  # modality -> (SeriesDescription, ProtocolName)
    "CT": (
        ("AX 5MM SOFT TISSUE", "CT CHEST ROUTINE"), ("AX 1.25MM LUNG", "CT CHEST HR"),
        ("AX 5MM ABD PELVIS", "CT ABD PELVIS W"), ("HEAD AXIAL 5MM", "CT HEAD WO"),
    ),
    "MR": (
        ("AX T1 SE", "MR BRAIN ROUTINE"), ("SAG T2 FSE", "MR SPINE LUMBAR"),
        ("COR STIR", "MR KNEE"), ("AX FLAIR", "MR BRAIN ROUTINE"),
    ),
}
STATIONS = {"CT": ("CTSCAN01", "CTSCAN02", "CT-ER-1"), "MR": ("MRI-ROOM-2", "MR1-3T", "MRNORTH")}
# fmt: on

_HU_INTERCEPT = 1024  # CT_small's RescaleIntercept is -1024: stored = HU + 1024


# --- deterministic value sources -------------------------------------------------------------


def _rng(seed: int, *key: object) -> random.Random:
    """A stream for one item: seeded by (seed, key) so an item never depends on its siblings.

    String seeds are hashed with SHA-512 by ``random`` (version 2), independent of
    PYTHONHASHSEED and platform.
    """
    return random.Random("anonpipe-sample/" + "/".join(map(str, (seed, *key))))


def _uid(rng: random.Random) -> str:
    """A 2.25 UID from 128 seeded bits (PS3.5 B.2), like highdicom/pydicom's uuid UIDs."""
    return f"2.25.{rng.getrandbits(128)}"


@dataclass(frozen=True, slots=True)
class _Distinct:
    """A seeded affine permutation of range(modulus): distinct values for distinct indexes.

    Random choices would collide (500 birth dates in 75 years share days); tests need each
    patient's name, ID and birth date, and each study's accession number, to be unique.
    """

    modulus: int
    a: int
    b: int

    @classmethod
    def draw(cls, rng: random.Random, modulus: int) -> _Distinct:
        while math.gcd(a := rng.randrange(1, modulus), modulus) != 1:
            pass
        return cls(modulus, a, rng.randrange(modulus))

    def __call__(self, index: int) -> int:
        return (self.a * index + self.b) % self.modulus


@dataclass(frozen=True, slots=True)
class _Permutations:
    """The archive-wide distinct-value permutations, all drawn from ``Random(seed)``."""

    name: _Distinct
    patient_id: _Distinct
    birth_day: _Distinct
    accession: _Distinct
    study_id: _Distinct

    @classmethod
    def draw(cls, seed: int) -> _Permutations:
        rng = random.Random(seed)
        return cls(
            name=_Distinct.draw(rng, len(FAMILY_NAMES) * len(GIVEN_NAMES)),
            patient_id=_Distinct.draw(rng, 10**7),
            birth_day=_Distinct.draw(rng, 365 * 75),
            accession=_Distinct.draw(rng, 10**8),
            study_id=_Distinct.draw(rng, 10**6),
        )


def _person(rng: random.Random, prefix: str = "") -> str:
    """A random PN (staff: may repeat, unlike patients)."""
    family = rng.choice(FAMILY_NAMES)
    given, _ = rng.choice(GIVEN_NAMES)
    return f"{family}^{given}" + (f"^^{prefix}" if prefix else "")


def _da(day: date) -> str:
    return day.strftime("%Y%m%d")


def _tm(moment: datetime) -> str:
    return moment.strftime("%H%M%S")


# --- the fake entities -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Patient:
    """One fake patient: identity values that must not leak, spread over many attributes."""

    label: str
    family: str
    given: str
    sex: str
    patient_id: str
    birth_date: date
    address: str
    phone: str
    other_id: str
    other_issuer: str
    ethnic_group: str
    occupation: str
    history: str
    weight_kg: float
    height_m: float
    middle: str = ""  # only past the name table's size, to keep names distinct

    @property
    def name(self) -> str:
        """Patient's Name as PN: Family^Given[^Middle]."""
        return f"{self.family}^{self.given}" + (f"^{self.middle}" if self.middle else "")


@dataclass(frozen=True, slots=True)
class Study:
    """One study: its UID, accession and request details (some nested two levels deep)."""

    label: str
    uid: str
    start: datetime
    accession: str
    study_id: str
    referring: str
    reading: str
    description: str
    institution: str
    institution_address: str
    requested_procedure_id: str
    sps_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Series:
    """One series: UIDs and staff; its instances' UIDs are drawn here so they can cross-refer."""

    label: str
    number: int
    modality: str
    uid: str
    frame_of_reference_uid: str
    start: datetime
    description: str
    protocol: str
    operator: str
    performer: str
    station: str
    device_serial: str
    instance_uids: tuple[str, ...]


def make_patient(seed: int, perms: _Permutations, index: int, label: str) -> Patient:
    """Patient ``index`` (0-based): distinct name/ID/birth date, the rest from its own stream."""
    rng = _rng(seed, label)
    combos = len(FAMILY_NAMES) * len(GIVEN_NAMES)
    k = perms.name(index % combos)
    family = FAMILY_NAMES[k % len(FAMILY_NAMES)]
    given, sex = GIVEN_NAMES[k // len(FAMILY_NAMES)]
    middle = chr(ord("A") + (index // combos - 1) % 26) if index >= combos else ""
    city, state, zip_prefix = rng.choice(CITIES)
    return Patient(
        label=label,
        family=family,
        given=given,
        sex=sex,
        patient_id=f"MR{perms.patient_id(index):07d}",
        birth_date=date(1930, 1, 1) + timedelta(days=perms.birth_day(index)),
        address=f"{rng.randint(1, 9899)} {rng.choice(STREETS)}, {city}, {state} "
        f"{zip_prefix}{rng.randint(0, 99):02d}",
        phone=f"+1 {rng.choice(AREA_CODES)} 555 01{rng.randint(0, 99):02d}",
        other_id=f"HIE-{rng.randint(0, 10**9 - 1):09d}",
        other_issuer="REGIONAL HIE (FAKE)",
        ethnic_group=rng.choice(ETHNIC_GROUPS),
        occupation=rng.choice(OCCUPATIONS),
        history=rng.choice(HISTORIES).format(year=rng.randint(1985, 2009)),
        weight_kg=round(rng.uniform(48.0, 115.0), 1),
        height_m=round(rng.uniform(1.50, 1.98), 2),
        middle=middle,
    )


def make_study(
    seed: int, perms: _Permutations, patient: Patient, number: int, ordinal: int, label: str
) -> Study:
    """Study ``number`` of ``patient``; ``ordinal`` counts studies archive-wide (distinctness)."""
    rng = _rng(seed, patient.label, label)
    day = date(2010, 1, 1) + timedelta(days=rng.randrange(15 * 365))
    start = datetime(
        day.year, day.month, day.day, rng.randint(7, 17), rng.randrange(60), rng.randrange(60)
    )
    city, state, zip_prefix = rng.choice(CITIES)
    return Study(
        label=label,
        uid=_uid(rng),
        start=start,
        accession=f"A{perms.accession(ordinal):08d}",
        study_id=f"S{perms.study_id(ordinal):06d}",
        referring=_person(rng, "Dr."),
        reading=_person(rng, "Dr."),
        description=rng.choice(STUDY_DESCRIPTIONS),
        institution=rng.choice(INSTITUTIONS),
        institution_address=f"{rng.randint(1, 999)} {rng.choice(STREETS)}, {city}, {state} "
        f"{zip_prefix}{rng.randint(0, 99):02d}",
        requested_procedure_id=f"RP{rng.randint(0, 10**7 - 1):07d}",
        sps_id=f"SPS{rng.randint(0, 10**7 - 1):07d}",
        reason=rng.choice(REASONS),
    )


def make_series(
    seed: int,
    patient: Patient,
    study: Study,
    number: int,
    modality: str,
    label: str,
    instances: int,
) -> Series:
    """Series ``number`` (1-based) of ``study``, with its instances' SOP Instance UIDs."""
    rng = _rng(seed, patient.label, study.label, label)
    description, protocol = rng.choice(SERIES_CHOICES[modality])
    return Series(
        label=label,
        number=number,
        modality=modality,
        uid=_uid(rng),
        frame_of_reference_uid=_uid(rng),
        start=study.start + timedelta(minutes=3 + 12 * (number - 1), seconds=rng.randrange(600)),
        description=description,
        protocol=protocol,
        operator=_person(rng),
        performer=_person(rng, "Dr."),
        station=rng.choice(STATIONS[modality]),
        device_serial=f"SN{rng.randint(0, 10**8 - 1):08d}",
        instance_uids=tuple(_uid(rng) for _ in range(instances)),
    )


# --- templates -------------------------------------------------------------------------------


def _new_buffer() -> DicomBytesIO:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    return buffer


def _encode(element: DataElement | RawDataElement, encodings: list[str]) -> bytes:
    """One element in Explicit VR LE, by pydicom's own writer (so it matches ``dcmwrite``)."""
    buffer = _new_buffer()
    write_data_element(buffer, element, encodings)
    return buffer.getvalue()


@functools.cache
def _keyword_tag(keyword: str) -> tuple[BaseTag, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return Tag(tag), dictionary_VR(tag)


def _element(keyword: str, value: object) -> DataElement:
    tag, vr = _keyword_tag(keyword)
    return DataElement(tag, vr, value)


def _dataset(values: dict[str, object]) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        ds[_keyword_tag(keyword)[0]] = _element(keyword, value)
    return ds


INSTANCE_KEYWORDS = (
    "SOPInstanceUID",
    "AcquisitionDate",
    "ContentDate",
    "AcquisitionDateTime",
    "AcquisitionTime",
    "ContentTime",
    "ReferencedImageSequence",
    "InstanceNumber",
    "ImagePositionPatient",
    "SliceLocation",
    "ImageComments",
    "PixelData",
)
_INSTANCE_TAGS = frozenset(_keyword_tag(k)[0] for k in INSTANCE_KEYWORDS)
_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_SOP_INSTANCE_UID = Tag(0x0008, 0x0018)


@dataclass(frozen=True)
class Template:
    """A bundled pydicom file, read once, with every top-level element pre-encoded."""

    modality: str
    dataset: Dataset  # never mutated after loading
    encodings: list[str]
    encoded: dict[BaseTag, bytes]
    private_block: int  # first free (0009,00xx) creator slot: CT_small's GE block holds 0x10
    dynamic: frozenset[BaseTag]  # tags written per instance, never from the template

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)


def _testdata(name: str) -> str:
    """The path of a file bundled with pydicom (never downloaded: both ship in the wheel)."""
    path = get_testdata_file(name)
    if not isinstance(path, str):
        raise FileNotFoundError(f"pydicom test file {name} not found")
    return path


@functools.cache
def load_template(modality: str, kind: Kind) -> Template:
    """CT_small or MR_small; for ``large-ct``, CT_small reshaped to 512x512."""
    ds = dcmread(_testdata("CT_small.dcm" if modality == "CT" else "MR_small.dcm"))
    if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
        raise RuntimeError(f"template for {modality} is not Explicit VR Little Endian")
    if kind is Kind.LARGE_CT:
        ds.update(_dataset(_LARGE_CT_GEOMETRY))
    encodings = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    encoded = {  # get_item: raw elements keep their exact bytes; no group lengths (PS3.5 7.2)
        tag: _encode(ds.get_item(tag), encodings)
        for tag in ds.keys()  # noqa: SIM118 - iterating a Dataset yields elements, not tags
        if tag.element != 0 or tag.group <= 6
    }
    tags = list(ds.keys())
    used = {t.element for t in tags if t.group == PRIVATE_GROUP and 0x10 <= t.element <= 0xFF}
    slot = next(e for e in range(0x10, 0x100) if e not in used)
    dynamic = _INSTANCE_TAGS if kind is Kind.LARGE_CT else _INSTANCE_TAGS - {_PIXEL_DATA}
    return Template(modality, ds, encodings, encoded, slot, dynamic)


_LARGE_CT_GEOMETRY: dict[str, object] = {
    "Rows": 512,
    "Columns": 512,
    "PixelSpacing": ["0.703125", "0.703125"],
    "ReconstructionDiameter": "360.0",
    "WindowCenter": "40",
    "WindowWidth": "400",
}


# --- per-level attribute sets (rules as data: one dict per level) ----------------------------


def _age(born: date, on: date) -> str:
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return f"{years:03d}Y"


def patient_values(p: Patient, study: Study) -> dict[str, object]:
    """Patient module (PatientAge is per study: the age on the study date)."""
    other = _dataset(
        {"PatientID": p.other_id, "IssuerOfPatientID": p.other_issuer, "TypeOfPatientID": "TEXT"}
    )
    return {
        "PatientName": p.name,
        "PatientID": p.patient_id,
        "PatientBirthDate": _da(p.birth_date),
        "PatientSex": p.sex,
        "PatientAge": _age(p.birth_date, study.start.date()),
        "PatientSize": f"{p.height_m:.2f}",
        "PatientWeight": f"{p.weight_kg:.1f}",
        "PatientAddress": p.address,
        "PatientTelephoneNumbers": p.phone,
        "OtherPatientIDsSequence": DicomSequence([other]),
        "EthnicGroup": p.ethnic_group,
        "Occupation": p.occupation,
        "AdditionalPatientHistory": p.history,
        "PatientComments": f"{p.given} {p.family} prefers morning appointments; call {p.phone}.",
    }


def study_values(s: Study) -> dict[str, object]:
    """General Study plus a Request Attributes item that nests a Referenced Study item."""
    referenced = _dataset(
        {"ReferencedSOPClassUID": STUDY_REFERENCE_CLASS_UID, "ReferencedSOPInstanceUID": s.uid}
    )
    request = _dataset(
        {
            "AccessionNumber": s.accession,
            "ReferencedStudySequence": DicomSequence([referenced]),
            "StudyInstanceUID": s.uid,
            "RequestedProcedureDescription": s.description,
            "ScheduledProcedureStepID": s.sps_id,
            "RequestedProcedureID": s.requested_procedure_id,
            "ReasonForTheRequestedProcedure": s.reason,
        }
    )
    return {
        "StudyInstanceUID": s.uid,
        "StudyDate": _da(s.start),
        "StudyTime": _tm(s.start),
        "AccessionNumber": s.accession,
        "StudyID": s.study_id,
        "ReferringPhysicianName": s.referring,
        "NameOfPhysiciansReadingStudy": s.reading,
        "StudyDescription": s.description,
        "InstitutionName": s.institution,
        "InstitutionAddress": s.institution_address,
        "RequestAttributesSequence": DicomSequence([request]),
    }


def series_values(s: Series) -> dict[str, object]:
    """General Series / Equipment / Frame of Reference values shared by the series' files."""
    return {
        "SeriesInstanceUID": s.uid,
        "SeriesNumber": str(s.number),
        "FrameOfReferenceUID": s.frame_of_reference_uid,
        "SeriesDate": _da(s.start),
        "SeriesTime": _tm(s.start),
        "SeriesDescription": s.description,
        "ProtocolName": s.protocol,
        "OperatorsName": s.operator,
        "PerformingPhysicianName": s.performer,
        "StationName": s.station,
        "DeviceSerialNumber": s.device_serial,
    }


def private_elements(p: Patient, slot: int) -> Dataset:
    """Our private block: PHI in a private LO and in a private SQ's nested PatientName.

    The item is its own dataset, so it carries its own creator (at the first slot).
    """
    base = slot << 8
    item = Dataset()
    item.add_new(Tag(PRIVATE_GROUP, 0x0010), "LO", PRIVATE_CREATOR)
    item.add_new(Tag(PRIVATE_GROUP, 0x1004), "LO", f"Chart note for {p.given} {p.family}")
    item.add_new(Tag(0x0010, 0x0010), "PN", p.name)
    ds = Dataset()
    ds.add_new(Tag(PRIVATE_GROUP, slot), "LO", PRIVATE_CREATOR)
    ds.add_new(Tag(PRIVATE_GROUP, base | 0x01), "LO", p.name.replace("^", " "))
    ds.add_new(Tag(PRIVATE_GROUP, base | 0x02), "DS", f"{p.weight_kg:.1f}")
    ds.add_new(Tag(PRIVATE_GROUP, base | 0x03), "SQ", DicomSequence([item]))
    return ds


def series_overlay(template: Template, p: Patient, study: Study, series: Series) -> Dataset:
    """Every series-level value that replaces or adds to the template's elements."""
    ds = _dataset(
        {
            **patient_values(p, study),
            **study_values(study),
            **series_values(series),
            "InstanceCreationDate": _da(series.start),
            "InstanceCreationTime": _tm(series.start),
        }
    )
    ds.update(private_elements(p, template.private_block))
    return ds


# --- instances -------------------------------------------------------------------------------


# An element as plain data, cheap to build and to encode: (tag, VR, value), where value is
# text (multiple values joined by "\\"), bytes (OW), or for SQ a tuple of items, each a tuple
# of elements.  Only instance-level values use it; pydicom encodes everything else.
Element: TypeAlias = "tuple[BaseTag, str, str | bytes | tuple[tuple[Element, ...], ...]]"


def _row(keyword: str, value: str | bytes | tuple[tuple[Element, ...], ...]) -> Element:
    return (_keyword_tag(keyword)[0], _keyword_tag(keyword)[1], value)


def instance_elements(
    template: Template, patient: Patient, series: Series, index: int, pixels: bytes | None
) -> dict[BaseTag, Element]:
    """The values that change from file to file in a series (``index`` is 0-based)."""
    moment = series.start + timedelta(seconds=2 * index)
    step = float(template.dataset.get("SpacingBetweenSlices") or template.dataset.SliceThickness)
    x, y, z0 = (float(v) for v in template.dataset.ImagePositionPatient)
    z = z0 - step * index
    rows = [
        _row("SOPInstanceUID", series.instance_uids[index]),
        _row("AcquisitionDate", _da(moment)),
        _row("ContentDate", _da(moment)),
        _row("AcquisitionDateTime", moment.strftime("%Y%m%d%H%M%S")),
        _row("AcquisitionTime", _tm(moment)),
        _row("ContentTime", _tm(moment)),
        _row("InstanceNumber", str(index + 1)),
        _row("ImagePositionPatient", f"{x:.4f}\\{y:.4f}\\{z:.4f}"),
        _row("SliceLocation", f"{z:.4f}"),
        _row(
            "ImageComments",
            f"{series.description} slice {index + 1} of {len(series.instance_uids)} "
            f"for {patient.given} {patient.family}",
        ),
    ]
    if index:  # a cross-file reference: the previous slice of the same series
        previous = (
            _row("ReferencedSOPClassUID", template.sop_class_uid),
            _row("ReferencedSOPInstanceUID", series.instance_uids[index - 1]),
        )
        rows.append(_row("ReferencedImageSequence", (previous,)))
    if pixels is not None:
        rows.append((_PIXEL_DATA, "OW", pixels))
    return {row[0]: row for row in rows}


def encode_element(element: Element) -> bytes:
    """Explicit VR Little Endian (PS3.5 7.1.2), defined lengths, as pydicom writes them.

    Text is ASCII by construction (the fake tables are), so no character set is involved.
    """
    tag, vr, value = element
    if isinstance(value, tuple):
        data = b"".join(_encode_item(item) for item in value)
    else:
        data = value if isinstance(value, bytes) else value.encode("ascii")
        if len(data) % 2:
            data += b"\0" if vr in ("UI", "OB") else b" "  # PS3.5 6.2: UI pads with NUL
    if vr in LONG_VRS:
        head = struct.pack("<HH2sHI", tag.group, tag.element, vr.encode(), 0, len(data))
    else:
        head = struct.pack("<HH2sH", tag.group, tag.element, vr.encode(), len(data))
    return head + data


def _encode_item(item: tuple[Element, ...]) -> bytes:
    body = b"".join(encode_element(e) for e in sorted(item, key=lambda e: e[0]))
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def as_dataset(elements: dict[BaseTag, Element] | tuple[Element, ...]) -> Dataset:
    """The same elements as a pydicom Dataset (for :func:`reference_bytes`)."""
    ds = Dataset()
    for tag, vr, value in elements.values() if isinstance(elements, dict) else elements:
        if isinstance(value, tuple):
            ds.add_new(tag, vr, DicomSequence([as_dataset(item) for item in value]))
        else:
            ds.add_new(tag, vr, value)
    return ds


def file_meta(template: Template, sop_instance_uid: str) -> FileMetaDataset:
    """PS3.10 file meta; the template's own writer identity is replaced by ours."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(template.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = template.dataset.file_meta.TransferSyntaxUID
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


class SeriesEncoder:
    """A series' files as pre-encoded byte runs with slots for the instance elements."""

    def __init__(self, template: Template, overlay: Dataset) -> None:
        encoded = dict(template.encoded)
        for tag in list(overlay.keys()):
            encoded[tag] = _encode(overlay[tag], template.encodings)
        self._parts: list[bytes | BaseTag] = []
        run: list[bytes] = []
        for tag in sorted(encoded.keys() | template.dynamic):
            if tag in template.dynamic:
                self._parts += [b"".join(run), tag]
                run = []
            else:
                run.append(encoded[tag])
        self._parts.append(b"".join(run))
        meta = list(file_meta(template, "0").values())
        self._meta_head = b"".join(_encode(e, []) for e in meta if e.tag.element < 3)
        self._meta_tail = b"".join(_encode(e, []) for e in meta if e.tag.element > 3)

    def _meta(self, sop_instance_uid: str) -> bytes:
        """Group 2 with its group length (PS3.10 7.1): the only meta value that varies is 0003."""
        uid = encode_element(_row("MediaStorageSOPInstanceUID", sop_instance_uid))
        body = self._meta_head + uid + self._meta_tail
        return struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body)) + body

    def encode(self, instance: dict[BaseTag, Element]) -> bytes:
        """The whole Part 10 file for one instance."""
        out = [_PREFIX, self._meta(str(instance[_SOP_INSTANCE_UID][2]))]
        for part in self._parts:
            if isinstance(part, bytes):
                out.append(part)
            elif part in instance:
                out.append(encode_element(instance[part]))
        return b"".join(out)


def reference_bytes(
    template: Template, overlay: Dataset, instance: dict[BaseTag, Element]
) -> bytes:
    """The slow, obviously right encoding (``dcmwrite``) that :class:`SeriesEncoder` must equal."""
    ds = deepcopy(template.dataset)
    for tag in template.dynamic & set(ds.keys()):
        del ds[tag]
    ds.update(overlay)
    ds.update(as_dataset(instance))
    ds.preamble = b"\x00" * 128
    ds.file_meta = file_meta(template, str(ds.SOPInstanceUID))
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


# --- large-ct pixels -------------------------------------------------------------------------


def _phantom(rows: int, cols: int, scale: float) -> array:
    """A body-like slice in stored values (air, body, lungs, spine), built by slice fills."""
    air = -1000 + _HU_INTERCEPT
    image = array("h", [air]) * (rows * cols)
    shapes = (  # centre x, centre y, semi-axis x, semi-axis y (fractions), HU
        (0.50, 0.53, 0.40 * scale, 0.30 * scale, 40),
        (0.33, 0.49, 0.10 * scale, 0.16 * scale, -850),
        (0.67, 0.49, 0.10 * scale, 0.16 * scale, -850),
        (0.50, 0.73, 0.05, 0.05, 800),
    )
    for fx, fy, ax, ay, hu in shapes:
        cx, cy, a, b = fx * cols, fy * rows, ax * cols, ay * rows
        fill = array("h", [hu + _HU_INTERCEPT])
        for row in range(max(0, int(cy - b)), min(rows, int(cy + b) + 1)):
            dy = (row + 0.5 - cy) / b
            if abs(dy) >= 1:
                continue
            half = a * math.sqrt(1 - dy * dy)
            x0, x1 = max(0, round(cx - half)), min(cols, round(cx + half))
            image[row * cols + x0 : row * cols + x1] = fill * (x1 - x0)
    if sys.byteorder == "big":
        image.byteswap()
    return image


def _noise_block(rng: random.Random, size: int = 4096) -> bytes:
    """4 KB of little-endian words with 0..31 in the low byte: XOR adds noise, never a carry."""
    return bytes(b for _ in range(size // 2) for b in (rng.getrandbits(5), 0))


def ct_pixels(rows: int, cols: int, index: int, count: int, noise: bytes) -> bytes:
    """Slice ``index`` of ``count``: the phantom swells then shrinks, noise rolls per slice."""
    scale = 0.75 + 0.25 * math.sin(math.pi * (index + 0.5) / count)
    base = _phantom(rows, cols, scale).tobytes()
    shift = (index * 194) % len(noise)  # even: keeps noise in the low byte
    tiled = (noise[shift:] + noise[:shift]) * (len(base) // len(noise) + 1)
    mixed = int.from_bytes(base, "little") ^ int.from_bytes(tiled[: len(base)], "little")
    return mixed.to_bytes(len(base), "little")


# --- the archive -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """The archive's size, checked once here (the boundary); code past it trusts it."""

    patients: int
    studies: int
    series: int
    instances: int

    def __post_init__(self) -> None:
        for field in ("patients", "studies", "series", "instances"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{field} must be a positive integer, got {value!r}")

    def widths(self) -> tuple[int, int, int, int]:
        """Zero-padding widths: P0001/ST01/SE01/IM0001, wider only when a count needs it."""
        return tuple(  # type: ignore[return-value]
            max(minimum, len(str(count)))
            for minimum, count in zip(
                (4, 2, 2, 4), (self.patients, self.studies, self.series, self.instances)
            )
        )


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory")
    if out.is_dir() and not force and any(out.iterdir()):
        raise OutputError(f"output directory {out} is not empty (use --force to write into it)")


def _series_files(
    out: Path, shape: Shape, seed: int, kind: Kind
) -> Iterator[tuple[Path, SeriesEncoder, Template, Patient, Series]]:
    """Walk patients/studies/series in a fixed order, yielding each series ready to encode."""
    perms = _Permutations.draw(seed)
    wp, wst, wse, _ = shape.widths()
    for p in range(shape.patients):
        patient = make_patient(seed, perms, p, f"P{p + 1:0{wp}d}")
        for s in range(shape.studies):
            study = make_study(
                seed, perms, patient, s + 1, p * shape.studies + s, f"ST{s + 1:0{wst}d}"
            )
            for e in range(shape.series):
                modality = "CT" if kind is Kind.LARGE_CT or e % 2 == 0 else "MR"
                template = load_template(modality, kind)
                series = make_series(
                    seed, patient, study, e + 1, modality, f"SE{e + 1:0{wse}d}", shape.instances
                )
                overlay = series_overlay(template, patient, study, series)
                folder = out / patient.label / study.label / series.label
                yield folder, SeriesEncoder(template, overlay), template, patient, series


def generate_archive(
    out: Path,
    patients: int = 2,
    studies: int = 1,
    series: int = 2,
    instances: int = 3,
    seed: int = 0,
    kind: Kind | str = "small",
    *,
    force: bool = False,
) -> list[Path]:
    """Write the archive under ``out`` and return the file paths, sorted.

    Refuses a non-empty ``out`` unless ``force`` (then same-named files are overwritten and
    nothing else is removed).
    """
    shape = Shape(patients, studies, series, instances)
    try:
        kind = Kind(kind)
    except ValueError:
        raise UsageError(f"kind must be one of {[k.value for k in Kind]}, got {kind!r}") from None
    out = Path(out)
    _check_output(out, force)
    width = shape.widths()[3]
    written: list[Path] = []
    for folder, encoder, template, patient, ser in _series_files(out, shape, seed, kind):
        folder.mkdir(parents=True, exist_ok=True)
        large = kind is Kind.LARGE_CT
        noise = _noise_block(_rng(seed, ser.uid, "noise")) if large else b""
        rows, cols = int(template.dataset.Rows), int(template.dataset.Columns)
        for index in range(shape.instances):
            pixels = ct_pixels(rows, cols, index, shape.instances, noise) if large else None
            instance = instance_elements(template, patient, ser, index, pixels)
            path = folder / f"IM{index + 1:0{width}d}.dcm"
            path.write_bytes(encoder.encode(instance))
            written.append(path)
    return sorted(written)


# --- command line ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``anonpipe-sample`` command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a deterministic synthetic DICOM archive of fake patients "
        "(OUT/P0001/ST01/SE01/IM0001.dcm) for tests, demos and benchmarks.",
    )
    parser.add_argument("out", metavar="OUT", type=Path, help="output directory (empty or new)")
    shape = parser.add_argument_group("archive shape")
    shape.add_argument("--patients", type=_positive_int, default=2, metavar="N")
    shape.add_argument(
        "--studies", type=_positive_int, default=1, metavar="N", help="studies per patient"
    )
    shape.add_argument(
        "--series",
        type=_positive_int,
        default=2,
        metavar="N",
        help="series per study (odd: CT, even: MR; all CT for large-ct)",
    )
    shape.add_argument(
        "--instances", type=_positive_int, default=3, metavar="N", help="files per series"
    )
    options = parser.add_argument_group("options")
    options.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    options.add_argument(
        "--kind",
        choices=[k.value for k in Kind],
        default=Kind.SMALL.value,
        help="small: the pydicom CT/MR templates; large-ct: 512x512 CT slices",
    )
    options.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty OUT (overwrites same-named files)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anonpipe-sample``: one summary line, 0 on success."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        paths = generate_archive(
            args.out,
            args.patients,
            args.studies,
            args.series,
            args.instances,
            args.seed,
            args.kind,
            force=args.force,
        )
    except (UsageError, OutputError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    seconds = time.perf_counter() - started
    size = sum(path.stat().st_size for path in paths)
    print(f"{PROG}: {len(paths)} files, {size} bytes, {seconds:.2f} s in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
