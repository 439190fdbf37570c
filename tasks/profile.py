"""De-identification profiles: which attribute gets which PS3.15 action.

Rules as data: a profile is a table from tag to action code (PS3.15 Table E.1-1a codes).
The ``gdcmanon`` profile is the 2008 48-attribute list gdcmanon hard-codes
(gdcmanon-reference.md §2.1), with our deliberate differences: UIDs are always replaced
(never emptied) and the identifiers gdcmanon sends down its broken "dummy" path get
consistent pseudonyms instead of an empty value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Action(str, enum.Enum):
    """PS3.15 Table E.1-1a action codes."""

    D = "D"  # replace with a non-zero-length dummy value consistent with the VR
    Z = "Z"  # replace with a zero-length value (a sequence becomes empty)
    X = "X"  # remove
    K = "K"  # keep
    C = "C"  # clean
    U = "U"  # replace UID with a consistent non-identifying one


@dataclass(frozen=True, slots=True)
class Profile:
    """A named action table applied at every depth of the data set."""

    name: str
    actions: dict[int, Action]
    method: str  # (0012,0063) De-identification Method
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def action(self, tag: int) -> Action | None:
        return self.actions.get(tag)


def _t(group: int, element: int) -> int:
    return (group << 16) | element


#: PS3.15-2008 Table E.1-1, as gdcmanon 3.0.21 hard-codes it.  (tag, keyword, action)
GDCMANON_ROWS: tuple[tuple[int, str, Action], ...] = (
    (_t(0x0008, 0x0014), "InstanceCreatorUID", Action.U),
    (_t(0x0008, 0x0018), "SOPInstanceUID", Action.U),
    (_t(0x0008, 0x0050), "AccessionNumber", Action.Z),
    (_t(0x0008, 0x0080), "InstitutionName", Action.Z),
    (_t(0x0008, 0x0081), "InstitutionAddress", Action.Z),
    (_t(0x0008, 0x0090), "ReferringPhysicianName", Action.Z),
    (_t(0x0008, 0x0092), "ReferringPhysicianAddress", Action.Z),
    (_t(0x0008, 0x0094), "ReferringPhysicianTelephoneNumbers", Action.Z),
    (_t(0x0008, 0x1010), "StationName", Action.Z),
    (_t(0x0008, 0x1030), "StudyDescription", Action.Z),
    (_t(0x0008, 0x103E), "SeriesDescription", Action.Z),
    (_t(0x0008, 0x1040), "InstitutionalDepartmentName", Action.Z),
    (_t(0x0008, 0x1048), "PhysiciansOfRecord", Action.Z),
    (_t(0x0008, 0x1050), "PerformingPhysicianName", Action.Z),
    (_t(0x0008, 0x1060), "NameOfPhysiciansReadingStudy", Action.Z),
    (_t(0x0008, 0x1070), "OperatorsName", Action.Z),
    (_t(0x0008, 0x1080), "AdmittingDiagnosesDescription", Action.Z),
    (_t(0x0008, 0x1155), "ReferencedSOPInstanceUID", Action.U),
    (_t(0x0008, 0x2111), "DerivationDescription", Action.Z),
    (_t(0x0010, 0x0010), "PatientName", Action.D),
    (_t(0x0010, 0x0020), "PatientID", Action.D),
    (_t(0x0010, 0x0030), "PatientBirthDate", Action.Z),
    (_t(0x0010, 0x0032), "PatientBirthTime", Action.Z),
    (_t(0x0010, 0x0040), "PatientSex", Action.Z),
    (_t(0x0010, 0x1000), "OtherPatientIDs", Action.Z),
    (_t(0x0010, 0x1001), "OtherPatientNames", Action.Z),
    (_t(0x0010, 0x1010), "PatientAge", Action.Z),
    (_t(0x0010, 0x1020), "PatientSize", Action.Z),
    (_t(0x0010, 0x1030), "PatientWeight", Action.Z),
    (_t(0x0010, 0x1090), "MedicalRecordLocator", Action.Z),
    (_t(0x0010, 0x2160), "EthnicGroup", Action.Z),
    (_t(0x0010, 0x2180), "Occupation", Action.Z),
    (_t(0x0010, 0x21B0), "AdditionalPatientHistory", Action.Z),
    (_t(0x0010, 0x4000), "PatientComments", Action.Z),
    (_t(0x0018, 0x1000), "DeviceSerialNumber", Action.Z),
    (_t(0x0018, 0x1030), "ProtocolName", Action.Z),
    (_t(0x0020, 0x000D), "StudyInstanceUID", Action.U),
    (_t(0x0020, 0x000E), "SeriesInstanceUID", Action.U),
    (_t(0x0020, 0x0010), "StudyID", Action.D),
    (_t(0x0020, 0x0052), "FrameOfReferenceUID", Action.U),
    (_t(0x0020, 0x0200), "SynchronizationFrameOfReferenceUID", Action.U),
    (_t(0x0020, 0x4000), "ImageComments", Action.Z),
    (_t(0x0040, 0x0275), "RequestAttributesSequence", Action.Z),
    (_t(0x0040, 0xA124), "UID", Action.U),
    (_t(0x0040, 0xA730), "ContentSequence", Action.Z),
    (_t(0x0088, 0x0140), "StorageMediaFileSetUID", Action.U),
    (_t(0x3006, 0x0024), "ReferencedFrameOfReferenceUID", Action.U),
    (_t(0x3006, 0x00C2), "RelatedFrameOfReferenceUID", Action.U),
)

GDCMANON = Profile(
    name="gdcmanon",
    actions={tag: action for tag, _, action in GDCMANON_ROWS},
    method="BASIC APPLICATION LEVEL CONFIDENTIALITY PROFILE",
    description="gdcmanon 3.0.21's PS3.15-2008 48-attribute list, UIDs replaced, "
    "pseudonyms instead of empty Type 1 identifiers",
)

PROFILES: dict[str, Profile] = {GDCMANON.name: GDCMANON}
DEFAULT_PROFILE = GDCMANON.name


def get_profile(name: str) -> Profile:
    from tasks.errors import ProfileError

    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(
            f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None
