"""``make bench-scale``: a million tiny files, anonpipe against gdcmanon, and what the
driver, the store and the audit cost at that size.

The archive (``build/bench/archive-tinyN``, N = ``--files``) is one ~1.5 KB Explicit VR
Little Endian CT header (no pixel data) written N times with its own SOP Instance UID, a
series per 100 files, a study per 1,000, a patient per 10,000: the UIDs have a fixed width,
so each file is the template with a few bytes patched (no DICOM encoder in the loop: a
million files in under two minutes on one core).

Measured, once each (an archive this size is not rerun for medians): ``gdcmanon -e``,
``anonpipe -e`` (default options) with the driver's peak RSS sampled every 0.5 s against
the files listed so far, the store's size per file, a no-op rerun (same store, every
output done), and ``anonpipe-audit``'s peak RSS.  The JSON goes to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

# beside this script (run as benchmarks/scale.py): the page cache between two commands,
# and the commit measured
import pagecache
import provenance
import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UID_ROOT = "1.2.826.0.1.3680043.9.7433."  # + fixed-width counters
PER_SERIES, PER_STUDY, PER_PATIENT = 100, 1_000, 10_000


def template() -> tuple[bytes, dict[str, int]]:
    """The file's bytes with placeholder values, and where each placeholder starts."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    marks = {"sop": "9" * 12, "series": "8" * 12, "study": "7" * 12, "patient": "6" * 8}
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = UID_ROOT + marks["sop"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
    ds.StudyTime = "101010"
    ds.AccessionNumber = "A" + marks["study"][:8]
    ds.Modality = "CT"
    ds.Manufacturer = "Acme"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "Doe^Referring"
    ds.StudyDescription = "CT chest scale benchmark"
    ds.PatientName = "Tiny^P" + marks["patient"]
    ds.PatientID = "ID" + marks["patient"]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = UID_ROOT + marks["study"]
    ds.SeriesInstanceUID = UID_ROOT + marks["series"]
    ds.StudyID = "S1"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = UID_ROOT + marks["study"] + ".1"
    ds.ImageComments = "x" * 700  # ~1.5 KB per file, as the archive the figures speak of
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    from io import BytesIO

    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    places: dict[str, list[int]] = {}
    for name, mark in marks.items():
        raw, start = mark.encode(), 0
        while (at := data.find(raw, start)) >= 0:
            places.setdefault(name, []).append(at)
            start = at + len(raw)
    return data, {f"{k}:{i}": at for k, ats in places.items() for i, at in enumerate(ats)}


def build(folder: Path, files: int) -> float:
    """Write the archive (P000001/ST0001/SE000001/IM000001.dcm ...); returns seconds."""
    started = time.perf_counter()
    data, places = template()
    buf = bytearray(data)
    widths = {"sop": 12, "series": 12, "study": 12, "patient": 8}
    folder.mkdir(parents=True)
    for i in range(files):
        numbers = {"sop": i, "series": i // PER_SERIES, "study": i // PER_STUDY,
                   "patient": i // PER_PATIENT}
        for key, at in places.items():
            name = key.split(":")[0]
            width = widths[name]
            digits = f"{numbers[name]:0{width}d}" if name == "patient" else \
                f"1{numbers[name]:0{width - 1}d}"  # a UID component has no leading zero
            buf[at:at + width] = digits.encode()
        if i % PER_SERIES == 0:
            series = folder / f"P{numbers['patient']:06d}" / f"ST{numbers['study']:06d}" / \
                f"SE{numbers['series']:08d}"
            series.mkdir(parents=True, exist_ok=True)
            prefix = str(series) + "/IM"
        fd = os.open(f"{prefix}{i % PER_SERIES:04d}.dcm",
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, buf)
        os.close(fd)
    return time.perf_counter() - started


class Watch:
    """Peak RSS of one process (and, for the driver, the RSS when the store first listed
    100k files is approximated by the peak over the first tenth of the run)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []  # (seconds, RSS MB)
        self.started = time.perf_counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                rss = self.process.memory_info().rss / 1e6
            except psutil.Error:
                return
            self.samples.append((time.perf_counter() - self.started, rss))

    def end(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        peaks = [rss for _, rss in self.samples] or [0.0]
        tenth = [rss for _, rss in self.samples[:max(len(self.samples) // 10, 1)]] or [0.0]
        return {"peak_mb": max(peaks), "peak_first_tenth_mb": max(tenth)}


def timed(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall, user+sys CPU of the process tree, peak RSS of the command's own process."""
    before = os.times()
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    watch = Watch(process.pid)
    code = process.wait()
    wall = time.perf_counter() - started
    after = os.times()
    user = after.children_user - before.children_user
    system = after.children_system - before.children_system
    return {"wall": wall, "cpu": user + system, "user": user, "system": system, "exit": code,
            **watch.end()}


def settle(reads: Path, cache: pagecache.PageCache | None) -> None:
    """Start the next command as ``make bench`` starts each (``quiesce`` in
    ``benchmarks/run.py``): dirty pages written back and, with a ``cache`` (root), the
    clean page cache dropped and the folder the command reads read back in.  Without it,
    the command that follows the deletion of the other's million outputs pays for them in
    the kernel (``benchmarks/pagecache.py`` says why)."""
    os.sync()
    if cache is not None:
        cache.reset(reads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=int(os.environ.get("SCALE_FILES",
                                                                        "1000000")))
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--outputs", type=Path, default=os.environ.get("BENCH_OUTPUTS"))
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args(argv)
    work: Path = args.work
    archive = work / f"archive-tiny{args.files}"
    result: dict[str, object] = {"files": args.files, "code": provenance.code_version(ROOT),
                                 **provenance.interpreter(), "load_start": os.getloadavg()}
    if not archive.exists():
        result["build_seconds"] = build(archive, args.files)
        print(f"built {args.files:,} files in {result['build_seconds']:.1f} s")
    if args.build_only:
        return 0
    outputs: Path = args.outputs or work
    cert, secret = work / "cert.pem", work / "secret"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "365", "-subj", "/CN=bench", "-keyout", str(work / "key.pem"), "-out",
                        str(cert)], check=True, capture_output=True)
    if not secret.exists():
        secret.write_text(os.urandom(32).hex())
        secret.chmod(0o600)
    env = {**os.environ, "ANONPIPE_STATE_DIR": str(work / "state")}
    store = work / f"store-tiny{args.files}.sqlite"
    out_g, out_a = outputs / "scale-gdcmanon", outputs / "scale-anonpipe"
    for path in (out_g, out_a):
        shutil.rmtree(path, ignore_errors=True)
    for leftover in work.glob(store.name + "*"):
        leftover.unlink()
    cache = pagecache.PageCache(()) if pagecache.available() else None
    result["caches_dropped"] = cache is not None
    if shutil.which("gdcmanon"):
        settle(archive, cache)
        result["gdcmanon"] = timed(["gdcmanon", "-c", str(cert), "-e", "-r", "--continue",
                                    str(archive), str(out_g)], env)
        print("gdcmanon -e", result["gdcmanon"])
        shutil.rmtree(out_g, ignore_errors=True)
    command = [str(BIN / "anonpipe"), "-c", str(cert), "-e", "-r", "-E", "--secret-file",
               str(secret), "--new-secret", "--store", str(store), str(archive), str(out_a)]
    settle(archive, cache)
    result["anonpipe"] = timed(command, env)
    print("anonpipe -e", result["anonpipe"])
    size = sum(p.stat().st_size for p in work.glob(store.name + "*"))
    result["store_bytes_per_file"] = size / args.files
    print(f"store: {size / args.files:.0f} bytes per file")
    settle(archive, cache)
    result["anonpipe_rerun"] = timed(command, env)
    print("anonpipe -e, rerun with nothing to do", result["anonpipe_rerun"])
    settle(out_a, cache)  # what the audit reads: the outputs (and the store)
    result["audit"] = timed([str(BIN / "anonpipe-audit"), "--store", str(store), str(out_a)],
                            env)
    print("anonpipe-audit", result["audit"])
    shutil.rmtree(out_a, ignore_errors=True)
    result["load_end"] = os.getloadavg()
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
