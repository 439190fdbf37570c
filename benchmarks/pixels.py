"""The pixel path (Clean Pixel Data): files/s and CPU ms per frame on drawn-text images.

    .venv/bin/python benchmarks/pixels.py [--reps N] [--memory FRAMES] [--paths FRAMES...]

``make bench`` calls :func:`bench` and prints its line.  The images are the test suite's
(``tests/pixel_images.py``: ultrasound RGB native, RLE and JPEG Baseline, ultrasound cines
native and JPEG Baseline, mid-grey text, 12- and 16-bit secondary captures, dark text on a
light panel, a two-frame XA), de-identified in memory with the basic profile, an RSA-2048
envelope and ``--pixels clean``; then the same kinds of file with no text (``NO_TEXT``: what
a candidate file with nothing to blank costs).  CPU is user+system of this process and of
its children (Tesseract runs as one), per frame of the files.

``--memory FRAMES`` instead makes a FRAMES-frame 640x480 RGB ultrasound cine, native and
JPEG Baseline, and prints the peak memory (maximum resident set) of one worker process
cleaning each, over that of the same process cleaning a two-frame cine.

``--paths FRAMES...`` cleans native 640x480 RGB cines of those lengths both ways, read whole
and streamed (``DeidentifySettings.stream_pixels_from``), and prints each way's peak memory
and wall and CPU time in one worker process: the figures ``STREAM_PIXELS_FROM`` is chosen by.
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


def bench(work: Path, reps: int = 2, kinds: dict[str, Any] | None = None) -> dict[str, Any]:
    """Clean every drawn-text image (or ``kinds``) ``reps`` times; the figures as a dict."""
    cert = _certificate(work)
    settings = DeidentifySettings(secret=b"b" * 32, encryptor=EnvelopeEncryptor(
        certificates=(load_certificate(cert),)))
    with tempfile.TemporaryDirectory(dir=work) as folder:
        data = [make(Path(folder) / f"{kind}.dcm").read_bytes()
                for kind, make in sorted((kinds or pixel_images.ALL).items())]
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


def _certificate(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    cert = work / "pixels-cert.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "365", "-subj", "/CN=bench", "-keyout", str(work / "pixels-key.pem"),
                        "-out", str(cert)], check=True, capture_output=True)
    return cert


def line(figures: dict[str, Any], what: str = "pixels clean") -> str:
    return (f"{what}: {figures['files']} files, {figures['frames']} frames: "
            f"{figures['files_per_second']} files/s, {figures['cpu_ms_per_frame']} CPU ms per "
            f"frame (Tesseract included), {figures['wall_ms_per_frame']} wall ms per frame")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--memory", type=int, metavar="FRAMES")
    parser.add_argument("--paths", type=int, nargs="+", metavar="FRAMES")
    args = parser.parse_args(argv)
    if args.paths:
        for frames, way, figures in paths(args.work, args.paths):
            print(f"pixels clean {way}: {frames}-frame 640x480 RGB cine "
                  f"({frames * 0.9216:.1f} MB of pixels): peak {figures[0]} MB, "
                  f"{figures[1]} wall ms, {figures[2]} CPU ms (Tesseract not counted)")
        return 0
    if args.memory:
        for kind, grown in memory(args.work, args.memory).items():
            print(f"pixels clean memory: {args.memory}-frame 640x480 RGB cine, {kind}: "
                  f"peak {grown} MB over a two-frame cine's")
        return 0
    print(line(bench(args.work, args.reps)))
    print(line(bench(args.work, args.reps, pixel_images.NO_TEXT), "pixels clean, no text"))
    print(f"JPEG Baseline blanked in the code stream: {jpeg_blank_ms(args.work)} CPU ms per "
          "640x480 frame (4:2:0, a box at the top and one at the bottom)")
    return 0


def jpeg_blank_ms(work: Path, frames: int = 20) -> float:
    """CPU ms to blank two text bands in one frame of a JPEG Baseline cine (no decoding)."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEGBaseline8Bit

    from tasks.pixels.jpegblocks import align, blank

    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as folder:
        src = pixel_images.us_cine(Path(folder) / "cine.dcm", frames, JPEGBaseline8Bit)
        df = read_dicom(src.read_bytes())
    el = df.top(0x7FE00010)
    assert el is not None
    codes = list(generate_frames(df.body[el.value_start:el.end], number_of_frames=frames))
    boxes = [align(box, (16, 16), 640, 480) for box in ((0, 0, 300, 40), (0, 440, 300, 40))]
    blank(codes[0], boxes)  # warm-up: the Huffman tables
    cpu = time.process_time()
    for code in codes:
        blank(code, boxes)
    return round(1000 * (time.process_time() - cpu) / frames, 1)


_PROBE = """
import sys
from pathlib import Path
from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import Deidentify, DeidentifySettings
import time
settings = DeidentifySettings(secret=b"m" * 32, encryptor=EnvelopeEncryptor(
    certificates=(load_certificate(Path(sys.argv[1])),)))
if len(sys.argv) > 4:
    settings = DeidentifySettings(secret=settings.secret, encryptor=settings.encryptor,
                                  stream_pixels_from=int(sys.argv[4]))
wall, cpu = time.perf_counter(), time.process_time()
Deidentify(settings)(Path(sys.argv[2]), Path(sys.argv[3]))
print(round(1000 * (time.perf_counter() - wall)), round(1000 * (time.process_time() - cpu)))
# VmHWM, not ru_maxrss: that counts the forking parent's pages from before the exec
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def memory(work: Path, frames: int) -> dict[str, int]:
    """Peak memory growth (MB) of a worker cleaning a long cine, native and JPEG Baseline."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

    cert = _certificate(work)
    grown = {}
    with tempfile.TemporaryDirectory(dir=work) as folder:
        for kind, syntax in (("native", ExplicitVRLittleEndian),
                             ("JPEG Baseline", JPEGBaseline8Bit)):
            peaks = []
            for count in (2, frames):
                src = pixel_images.us_cine(Path(folder) / f"cine-{count}.dcm", count, syntax)
                out = Path(folder) / f"out-{count}.dcm"
                done = subprocess.run([sys.executable, "-c", _PROBE, str(cert), str(src),
                                       str(out)], capture_output=True, text=True, check=True,
                                      cwd=ROOT)
                peaks.append(int(done.stdout.split()[-1]))
                src.unlink()
                out.unlink()
            grown[kind] = (peaks[1] - peaks[0]) // 1024
    return grown


def paths(work: Path, lengths: list[int]) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(frames, way, (peak MB, wall ms, CPU ms)) of native cines cleaned read whole and
    streamed, each in a fresh worker process."""
    cert = _certificate(work)
    out = []
    with tempfile.TemporaryDirectory(dir=work) as folder:
        for frames in lengths:
            src = pixel_images.us_cine(Path(folder) / f"cine-{frames}.dcm", frames)
            dst = Path(folder) / "out.dcm"
            for way, threshold in (("read whole", 1 << 62), ("streamed", 0)):
                done = subprocess.run([sys.executable, "-c", _PROBE, str(cert), str(src),
                                       str(dst), str(threshold)], capture_output=True,
                                      text=True, check=True, cwd=ROOT)
                wall, cpu, peak = map(int, done.stdout.split())
                out.append((frames, way, (peak // 1024, wall, cpu)))
                dst.unlink()
            src.unlink()
    return out


if __name__ == "__main__":
    sys.exit(main())
