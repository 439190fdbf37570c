"""Large files whose pixels are cleaned are never read whole (``deidentify_split``): the
same output as the in-memory path, restored byte for byte, no drawn word left, and an input
that changes under the run refused with one line and no output left behind.  The files are
small; ``stream_pixels_from`` (the documented threshold) is set to stream them or not."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from tasks import crypto
from tasks.crypto import EnvelopeEncryptor, decrypt_envelope, load_private_key
from tasks.deidentify import (
    STREAM_PIXELS_FROM,
    Deidentify,
    DeidentifySettings,
    deidentify_split,
)
from tasks.engine import opened_input
from tasks.errors import DicomFormatError
from tasks.fileio import Stream, write_atomic
from tasks.pixeltail import SPLIT_FROM
from tasks.reidentify import Reidentify, ReidentifySettings
from tests import pixel_images
from tests.conftest import REPO, SECRET, Pki

ENCRYPTED_CONTENT = 0x04000520


def _cine(path: Path, implicit: bool = False, planar: bool = False, frames: int = 4) -> Path:
    """A four-frame 320x240 RGB cine with the drawn words (0.9 MB)."""
    pixel_images.us_cine(path, frames, rows=240, columns=320)
    if implicit or planar:
        ds = pydicom.dcmread(path)
        if planar:
            frames = ds.pixel_array.transpose(0, 3, 1, 2)  # R, G, B planes per frame
            ds.PlanarConfiguration = 1
            ds.PixelData = frames.tobytes()
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def cines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cines")
    return {"explicit": _cine(folder / "explicit.dcm"),
            "implicit": _cine(folder / "implicit.dcm", implicit=True),
            "planar": _cine(folder / "planar.dcm", planar=True),
            "short": _cine(folder / "short.dcm", frames=2),  # read by OCR: two frames
            "jpeg": pixel_images.us_cine(folder / "jpeg.dcm", 4, JPEGBaseline8Bit, 240, 320),
            "rle": pixel_images.us_rgb(folder / "rle.dcm", RLELossless)}


def _streamed(settings: DeidentifySettings) -> DeidentifySettings:
    return settings._replace(stream_pixels_from=0)


def _whole(settings: DeidentifySettings) -> DeidentifySettings:
    return settings._replace(stream_pixels_from=1 << 62)


def _split(src: Path, settings: DeidentifySettings) -> list[object] | None:
    with opened_input(src) as (fd, size):
        pieces = deidentify_split(fd, size, settings)
        return pieces if isinstance(pieces, list) else None


def test_the_threshold_is_the_pixel_tail_s() -> None:
    assert DeidentifySettings(secret=SECRET).stream_pixels_from == STREAM_PIXELS_FROM
    assert STREAM_PIXELS_FROM == SPLIT_FROM


@pytest.mark.parametrize("kind", ["explicit", "implicit", "planar", "jpeg", "rle"])
def test_streamed_output_is_the_in_memory_output(kind: str, cines: dict[str, Path],
                                                 pki: Pki, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = cines[kind]
    # a certificate and a password recipient
    settings = DeidentifySettings(secret=SECRET, encryptor=EnvelopeEncryptor(
        (crypto.load_certificate(pki.cert),), password=b"stream test", pbkdf2_iterations=1000))
    assert _split(src, _whole(settings)) is None  # below the threshold: read whole
    pieces = _split(src, _streamed(settings))
    assert pieces is not None and sum(isinstance(p, Stream) for p in pieces) == 2

    # the content keys, IVs and key-wrap pads drawn from one seeded source for both runs
    # (the RSA recipient's padding is random inside OpenSSL: compared through decryption)
    outputs = {}
    for name, chosen in (("whole", _whole(settings)), ("streamed", _streamed(settings))):
        seeded = random.Random(17)
        monkeypatch.setattr(crypto.os, "urandom", seeded.randbytes)
        written = Deidentify(chosen)(src, tmp_path / f"{name}.dcm")
        monkeypatch.undo()
        outputs[name] = (tmp_path / f"{name}.dcm").read_bytes()
        assert getattr(written, "pixels", None) == "ocr"  # cleaned, and counted as such
    whole, streamed = outputs["whole"], outputs["streamed"]
    key = load_private_key(pki.key)
    blobs = [pydicom.dcmread(tmp_path / f"{name}.dcm")[0x04000500][0][ENCRYPTED_CONTENT].value
             for name in ("whole", "streamed")]
    assert decrypt_envelope(blobs[0], key) == decrypt_envelope(blobs[1], key)
    at = whole.index(blobs[0])
    assert streamed.index(blobs[1]) == at and len(blobs[0]) == len(blobs[1])
    assert whole[:at] == streamed[:at]
    assert whole[at + len(blobs[0]):] == streamed[at + len(blobs[1]):]
    assert decrypt_envelope(blobs[1], None, b"stream test") == decrypt_envelope(blobs[0], key)
    # with the password recipient alone every byte is drawn from the seeded source
    alone = DeidentifySettings(secret=SECRET, encryptor=EnvelopeEncryptor(
        (), password=b"stream test", pbkdf2_iterations=1000))
    made = []
    for chosen in (_whole(alone), _streamed(alone)):
        monkeypatch.setattr(crypto.os, "urandom", random.Random(5).randbytes)
        Deidentify(chosen)(src, tmp_path / "alone.dcm")
        monkeypatch.undo()
        made.append((tmp_path / "alone.dcm").read_bytes())
    assert made[0] == made[1]
    # irreversible: no payload, the cleaned pixels streamed all the same
    irreversible = DeidentifySettings(secret=SECRET)
    Deidentify(_whole(irreversible))(src, tmp_path / "a.dcm")
    Deidentify(_streamed(irreversible))(src, tmp_path / "b.dcm")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()


@pytest.mark.gdcm
def test_streamed_output_reads_no_word_and_both_d_restore_it(  # type: ignore[no-untyped-def]
        require_tool, cines: dict[str, Path], pki: Pki, encryptor: EnvelopeEncryptor,
        reid: ReidentifySettings, tmp_path: Path) -> None:
    gdcmanon = require_tool("gdcmanon")
    src = cines["short"]
    assert all(word in pixel_images.ocr_text(src) for word in pixel_images.WORDS)
    out = tmp_path / "out.dcm"
    written = Deidentify(_streamed(DeidentifySettings(secret=SECRET, encryptor=encryptor)))(
        src, out)
    assert getattr(written, "pixels", None) == "ocr"
    after = pixel_images.ocr_text(out)
    assert not [word for word in pixel_images.WORDS if word in after], after
    assert pydicom.dcmread(out).BurnedInAnnotation == "NO"

    back = tmp_path / "back.dcm"
    Reidentify(reid)(out, back)
    assert back.read_bytes() == src.read_bytes()

    # gdcmanon -d puts every original element back (it leaves the elements -e added,
    # (0012,0064) and (0028,0301), and writes its own file meta, as for any -e output)
    restored = tmp_path / "gdcm.dcm"
    subprocess.run([gdcmanon, "-k", str(pki.key), "-d", str(out), str(restored)],
                   check=True, capture_output=True)
    original, theirs = pydicom.dcmread(src), pydicom.dcmread(restored)
    assert theirs.PixelData == original.PixelData
    for el in original:
        assert theirs[el.tag].value == el.value, el.tag
    assert set(theirs.keys()) - set(original.keys()) == {0x00120064, 0x00280301}


@pytest.mark.parametrize("change", ["truncated", "rewritten"])
def test_an_input_changed_during_the_run_is_refused_with_one_line(
        change: str, cines: dict[str, Path], encryptor: EnvelopeEncryptor,
        tmp_path: Path) -> None:
    src = tmp_path / "in.dcm"
    src.write_bytes(cines["explicit"].read_bytes())
    folder = tmp_path / "out"
    folder.mkdir()
    settings = _streamed(DeidentifySettings(secret=SECRET, encryptor=encryptor))
    with opened_input(src) as (fd, size):
        pieces = deidentify_split(fd, size, settings)  # header parsed, OCR sample read
        assert isinstance(pieces, list)
        data = bytearray(src.read_bytes())
        if change == "truncated":
            os.truncate(src, size - 300_000)
        else:  # the same size, the text drawn elsewhere: what OCR read is not what is there
            data[-200_000:] = bytes(200_000)
            src.write_bytes(bytes(data))
        with pytest.raises(DicomFormatError) as caught:
            write_atomic(folder / "out.dcm", pieces)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and "changed" in message
    assert not list(folder.iterdir())  # nothing written, no temp file


_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import Deidentify, DeidentifySettings

warm, big, out, cert, threshold = sys.argv[1:6]
op = Deidentify(DeidentifySettings(
    secret=b"s" * 32, encryptor=EnvelopeEncryptor((load_certificate(Path(cert)),)),
    stream_pixels_from=int(threshold)))

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

op(Path(warm), Path(out) / "warm.dcm")  # imports, OCR and caches: the baseline
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak (VmHWM) starts again from the current resident size
base = status("VmRSS")
op(Path(big), Path(out) / "big.dcm")
print(json.dumps({"base_kb": base, "peak_kb": status("VmHWM")}))
"""


def test_memory_does_not_grow_with_the_cine(cines: dict[str, Path], pki: Pki,
                                            tmp_path: Path) -> None:
    """A 100-frame cine (23 MB of pixels) cleaned reversibly: streamed, a worker's peak
    stays within a few MB of what the two-frame cine needed; read whole it grows by more
    than the pixel data (so the probe does see memory grow)."""
    big = pixel_images.us_cine(tmp_path / "big.dcm", 100, rows=240, columns=320)
    grown = {}
    for how, threshold in (("streamed", 0), ("whole", 1 << 62)):
        out = tmp_path / how
        out.mkdir()
        probe = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, str(cines["short"]), str(big), str(out),
             str(pki.cert), str(threshold)],
            check=True, capture_output=True, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        figures = json.loads(probe.stdout)
        grown[how] = (figures["peak_kb"] - figures["base_kb"]) / 1024
        assert pydicom.dcmread(out / "big.dcm").BurnedInAnnotation == "NO"
    print(f"\n100-frame cine, peak memory growth in MB: {grown}")  # with -s
    assert grown["streamed"] < 8 and grown["whole"] > 23, grown
    assert (tmp_path / "streamed" / "big.dcm").stat().st_size == (
        tmp_path / "whole" / "big.dcm").stat().st_size
