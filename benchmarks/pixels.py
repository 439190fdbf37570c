"""The pixel path (Clean Pixel Data): files/s and CPU ms per frame on drawn-text images.

    .venv/bin/python benchmarks/pixels.py [--reps N]

``make bench`` calls :func:`bench` and prints its line.  The images are the test suite's
(``tests/pixel_images.py``: ultrasound RGB native, RLE and JPEG Baseline, an ultrasound cine,
12- and 16-bit secondary captures, a two-frame XA), de-identified in memory with the basic
profile, an RSA-2048 envelope and ``--pixels clean``.  CPU is user+system of this process
and of its children (Tesseract runs as one), per frame of the files.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.pixels.rules import header_value
from tests import pixel_images


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench(work: Path, reps: int = 2) -> dict[str, Any]:
    """Clean every drawn-text image ``reps`` times; the figures as a dict."""
    work.mkdir(parents=True, exist_ok=True)
    cert = work / "pixels-cert.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "365", "-subj", "/CN=bench", "-keyout", str(work / "pixels-key.pem"),
                        "-out", str(cert)], check=True, capture_output=True)
    settings = DeidentifySettings(secret=b"b" * 32, encryptor=EnvelopeEncryptor(
        certificates=(load_certificate(cert),)))
    with tempfile.TemporaryDirectory(dir=work) as folder:
        data = [make(Path(folder) / f"{kind}.dcm").read_bytes()
                for kind, make in sorted(pixel_images.ALL.items())]
    frames = sum(int(header_value(read_dicom(d), 0x00280008) or 1) for d in data)
    deidentify_bytes(data[0], settings)  # warm-up: imports, Tesseract's first start
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(reps):
        for one in data:
            deidentify_bytes(one, settings)
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    return {"files": len(data) * reps, "frames": frames * reps,
            "files_per_second": round(len(data) * reps / wall, 2),
            "cpu_ms_per_frame": round(1000 * cpu / (frames * reps), 1),
            "wall_ms_per_frame": round(1000 * wall / (frames * reps), 1)}


def line(figures: dict[str, Any]) -> str:
    return (f"pixels clean: {figures['files']} files, {figures['frames']} frames: "
            f"{figures['files_per_second']} files/s, {figures['cpu_ms_per_frame']} CPU ms per "
            f"frame (Tesseract included), {figures['wall_ms_per_frame']} wall ms per frame")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    print(line(bench(args.work, args.reps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
