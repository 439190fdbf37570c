"""User CPU per file of each step a worker runs, on a generated archive (where the time goes).

    .venv/bin/python benchmarks/components.py [ARCHIVE] [--files N]

ARCHIVE defaults to ``build/bench/archive-small2k`` (``make bench`` makes it).  Each step runs
over the first N files (default 1000) after one warm-up call; the files are read into memory
first, except for the steps that read them (``read_header``, ``scan_file``), whose page-cache
reads are then part of the figure.  What it shows: the pass-1 header scan, the parse alone
(header only, and whole file), and the pass-2 de-identification in memory (AES-256, RSA-2048
envelope to ``build/bench/cert.pem``, basic profile), i.e. the worker's share of the
per-file cost that ``benchmarks/README.md`` decomposes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import DeidentifySettings, deidentify_parts
from tasks.dicomio import read_dicom, read_header
from tasks.inventory import scan_file

T = TypeVar("T")


def per_file_ms(step: Callable[[T], object], inputs: list[T]) -> float:
    step(inputs[0])
    started = time.process_time()
    for item in inputs:
        step(item)
    return (time.process_time() - started) * 1000 / len(inputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", nargs="?", type=Path,
                        default=ROOT / "build" / "bench" / "archive-small2k")
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    paths = sorted(p for p in args.archive.rglob("*") if p.is_file())[:args.files]
    if not paths:
        print(f"no files under {args.archive} (run make bench first)", file=sys.stderr)
        return 2
    datas = [p.read_bytes() for p in paths]
    cert = ROOT / "build" / "bench" / "cert.pem"
    settings = DeidentifySettings(secret=b"s" * 32, profile="basic", encryptor=EnvelopeEncryptor(
        certificates=(load_certificate(cert),)))
    steps: list[tuple[str, float]] = [
        ("pass 1: scan_file (read header, parse, row)", per_file_ms(scan_file, paths)),
        ("  of it: read_header (read + parse to pixels)",
         per_file_ms(lambda p: read_header(p, private_runs=True), paths)),
        ("parse only, header (in memory)",
         per_file_ms(lambda d: read_dicom(d, stop_at_pixels=True, private_runs=True), datas)),
        ("parse only, whole file (in memory)",
         per_file_ms(lambda d: read_dicom(d, private_runs=True), datas)),
        ("pass 2: deidentify_parts (in memory, encrypted)",
         per_file_ms(lambda d: deidentify_parts(d, settings), datas)),
    ]
    print(f"{len(paths)} files of {args.archive}, user CPU per file:")
    for name, ms in steps:
        print(f"  {name:50} {ms:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
