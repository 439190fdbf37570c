"""Scan-only driver for the memory test: ``python -m tests.pipeline.memscan ROOT WORKERS``.

Prints one JSON line: files found, seconds, and this process's peak RSS (the driver's; dask
workers are child processes and not counted; :func:`peak_rss_mb`).  :func:`write_tiny_tree`
builds the input.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from pipeline.job import Mode, TreeJob
from pipeline.runner import run_tree
from tasks.deidentify import Deidentify, DeidentifySettings

PLACEHOLDER = "2.25." + "9" * 30


def tiny_dicom() -> bytes:
    """A ~400-byte DICOM file whose SOP Instance UID is a fixed-width placeholder."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = PLACEHOLDER
    ds.PatientName = "TINY^PATIENT"
    ds.PatientID = "TINY-0001"
    ds.StudyInstanceUID = "2.25.1111"
    ds.SeriesInstanceUID = "2.25.1111.1"
    ds.Modality = "OT"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = PLACEHOLDER
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_tiny_tree(root: Path, files: int, per_folder: int = 1000) -> None:
    """``files`` tiny DICOM files, each with its own SOP Instance UID (same length)."""
    template = tiny_dicom()
    marker = PLACEHOLDER.encode()
    for index in range(files):
        folder = root / f"D{index // per_folder:04d}"
        if index % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        uid = f"2.25.{index:030d}".encode()
        (folder / f"F{index:07d}.dcm").write_bytes(template.replace(marker, uid))


def main(argv: list[str]) -> int:
    root, workers = Path(argv[0]), int(argv[1])
    secret = b"memory-test-secret-0123456789abc"
    job = TreeJob(mode=Mode.DEIDENTIFY, input=root, output=root.parent / "never-written",
                  operation=Deidentify(DeidentifySettings(secret=secret)), recursive=True,
                  workers=workers, scan_only=True, verbosity=0,
                  store=root.parent / "mem.store.sqlite")
    started = time.perf_counter()
    run_tree(job)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": round(seconds, 2), "rss_mb": round(peak_rss_mb(), 1)}))
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident size since its ``exec``: ``VmHWM``, not ``ru_maxrss``,
    which also counts the pages of the process that forked it (a test session of a few
    hundred MB) from before the exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
