"""Small DICOM files built in code for the engine tests: one CT skeleton, each test adds
what its subject needs (markers, overlays, private blocks, unlisted attributes); and DER
TLVs for the envelope and certificate tests, built here rather than by the code under test."""

from __future__ import annotations

import io

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

#: CT Image Storage (PS3.4 B.5)
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_UID = "1.2.3.4.100"
SERIES_UID = "1.2.3.4.200"


def small_ct(syntax: str = ExplicitVRLittleEndian, *, sop_instance_uid: str = "1.2.3.4.1",
             patient_name: str = "Doe^Jane", patient_id: str = "PID-777") -> Dataset:
    """A CT Image data set with its file meta: the SOP, study and series UIDs and a patient,
    nothing else (no pixels).  The meta's SOP Instance UID is the data set's."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    return ds


def file_bytes(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file, encoded in its meta's Transfer Syntax."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


#: the end of a memory probe run as ``python -c``: the script before it sets ``op`` (a file
#: operation) and ``warm``, ``big``, ``out`` (paths); it prints the peak resident size while
#: ``op`` handles ``big`` over the size after a first file warmed imports and caches
PEAK_PROBE = """
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

op(Path(warm), Path(out) / "warm.dcm")  # imports and caches: the baseline
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak (VmHWM) starts again from the current resident size
base = status("VmRSS")
op(Path(big), Path(out) / "big.dcm")
print(json.dumps({"base_kb": base, "peak_kb": status("VmHWM")}))
"""


def der_tlv(tag: int, content: bytes) -> bytes:
    """A DER TLV measured from its content (X.690 §8.1.3, minimal length octets)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content
