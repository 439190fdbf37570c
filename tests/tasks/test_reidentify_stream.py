"""-d of a large file whose payload holds its original pixel data (a cine whose pixels
were cleaned) never reads it whole (``reidentify_streamed``): the envelope's key comes from
its head and last blocks, the pixel data is decrypted into the output as it is written.
The output is the in-memory -d's, which is the input; a wrong key, a damaged padding or a
truncated file give one line and leave nothing.  ``stream_payload_from`` (the documented
threshold) is set to stream the small test files or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit

from tasks import crypto
from tasks.crypto import Cipher, EnvelopeEncryptor, decrypt_envelope, open_envelope_in_pieces
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.engine import opened_input
from tasks.errors import AnonpipeError, DicomFormatError
from tasks.fileio import Stream, write_atomic
from tasks.pixeltail import SPLIT_FROM
from tasks.reidentify import (
    STREAM_PAYLOAD_FROM,
    Reidentify,
    ReidentifySettings,
    reidentify_streamed,
)
from tests import pixel_images
from tests.builders import PEAK_PROBE
from tests.conftest import REPO, SECRET, Pki

PASSWORD = b"stream -d test"


def _encryptor(pki: Pki, recipient: str) -> EnvelopeEncryptor:
    if recipient == "certificate":
        return EnvelopeEncryptor((crypto.load_certificate(pki.cert),))
    return EnvelopeEncryptor((), password=PASSWORD, pbkdf2_iterations=1000)


def _settings(pki: Pki, recipient: str) -> ReidentifySettings:
    if recipient == "certificate":
        return ReidentifySettings(key_pem=pki.key.read_bytes(), stream_payload_from=0)
    return ReidentifySettings(password=PASSWORD, stream_payload_from=0)


def _whole(settings: ReidentifySettings) -> ReidentifySettings:
    return ReidentifySettings(settings.key_pem, settings.key_password, settings.password,
                              stream_payload_from=1 << 62)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four-frame 320x240 RGB cines with the drawn words: native, JPEG Baseline, implicit."""
    folder = tmp_path_factory.mktemp("inputs")
    implicit = pixel_images.us_cine(folder / "implicit.dcm", 4, rows=240, columns=320)
    ds = pydicom.dcmread(implicit)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(implicit, enforce_file_format=True)
    return {"native": pixel_images.us_cine(folder / "native.dcm", 4, rows=240, columns=320),
            "jpeg": pixel_images.us_cine(folder / "jpeg.dcm", 4, JPEGBaseline8Bit, 240, 320),
            "implicit": implicit}


@pytest.fixture(scope="module")
def cleaned(inputs: dict[str, Path], pki: Pki, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[tuple[str, str], Path]:
    """Each input de-identified with its pixels cleaned (-e streamed), for each recipient."""
    folder = tmp_path_factory.mktemp("cleaned")
    made = {}
    for kind, src in inputs.items():
        for recipient in ("certificate", "password"):
            out = folder / f"{kind}-{recipient}.dcm"
            written = Deidentify(DeidentifySettings(
                secret=SECRET, encryptor=_encryptor(pki, recipient), stream_pixels_from=0))(
                    src, out)
            assert getattr(written, "pixels", None) == "ocr"
            made[kind, recipient] = out
    return made


def test_the_threshold_is_the_pixel_tail_s() -> None:
    assert ReidentifySettings().stream_payload_from == STREAM_PAYLOAD_FROM == SPLIT_FROM


@pytest.mark.parametrize("recipient", ["certificate", "password"])
@pytest.mark.parametrize("kind", ["native", "jpeg", "implicit"])
def test_streamed_d_is_the_in_memory_d_is_the_input(
        kind: str, recipient: str, inputs: dict[str, Path],
        cleaned: dict[tuple[str, str], Path], pki: Pki, tmp_path: Path) -> None:
    src = cleaned[kind, recipient]
    settings = _settings(pki, recipient)
    with opened_input(src) as (fd, size):
        pieces = reidentify_streamed(fd, size, settings)
        assert pieces is not None and sum(isinstance(p, Stream) for p in pieces) == 1
        stream = next(p for p in pieces if isinstance(p, Stream))
        assert stream.length >= len(pydicom.dcmread(inputs[kind]).PixelData)
        with opened_input(src) as (fd2, size2):  # below the threshold: not streamed
            assert reidentify_streamed(fd2, size2, _whole(settings)) is None
    Reidentify(settings)(src, tmp_path / "streamed.dcm")
    Reidentify(_whole(settings))(src, tmp_path / "whole.dcm")
    original = inputs[kind].read_bytes()
    assert (tmp_path / "whole.dcm").read_bytes() == original
    assert (tmp_path / "streamed.dcm").read_bytes() == original


def _refusal(src: Path, settings: ReidentifySettings, folder: Path) -> str:
    folder.mkdir()
    with pytest.raises(AnonpipeError) as caught:
        Reidentify(settings)(src, folder / "out.dcm")
    assert not list(folder.iterdir())  # no output, no temp file
    message = str(caught.value)
    assert "\n" not in message and str(src) not in message
    return message


@pytest.mark.parametrize("recipient", ["certificate", "password"])
def test_a_wrong_key_gives_the_usual_line_and_no_output(
        recipient: str, cleaned: dict[tuple[str, str], Path], pki: Pki,
        tmp_path: Path) -> None:
    src = cleaned["native", recipient]
    wrong = (ReidentifySettings(key_pem=pki.key2.read_bytes(), stream_payload_from=0)
             if recipient == "certificate"
             else ReidentifySettings(password=b"not it", stream_payload_from=0))
    streamed = _refusal(src, wrong, tmp_path / "streamed")
    assert streamed == _refusal(src, _whole(wrong), tmp_path / "whole")
    assert streamed.startswith("cannot decrypt the payload: wrong")


def test_a_damaged_padding_is_refused_before_anything_is_written(
        cleaned: dict[tuple[str, str], Path], pki: Pki, tmp_path: Path) -> None:
    """The block before the last changed: the pad byte it decrypts the last one to no
    longer checks (the key cannot be told from a wrong one), the same line as in memory,
    no output."""
    data = bytearray(cleaned["native", "password"].read_bytes())
    blob = pydicom.dcmread(cleaned["native", "password"])[0x04000500][0][0x04000520].value
    size = blob[1] & 0x7F  # the DER's length (long form), without gdcmanon's pad byte
    der_length = 2 + size + int.from_bytes(blob[2:2 + size], "big")
    data[bytes(data).index(blob) + der_length - 17] ^= 0x55  # AES: 16-byte blocks
    src = tmp_path / "damaged.dcm"
    src.write_bytes(bytes(data))
    settings = _settings(pki, "password")
    streamed = _refusal(src, settings, tmp_path / "streamed")
    assert streamed == _refusal(src, _whole(settings), tmp_path / "whole")


@pytest.mark.parametrize("cut", ["in the pixel data", "in the payload", "in the header"])
def test_a_truncated_file_gives_one_line(cut: str, cleaned: dict[tuple[str, str], Path],
                                         pki: Pki, tmp_path: Path) -> None:
    data = cleaned["native", "certificate"].read_bytes()
    blob_at = data.index(b"\x00\x04\x20\x05OB")
    size = {"in the pixel data": len(data) - 100_000, "in the payload": blob_at + 200_000,
            "in the header": blob_at + 500}[cut]
    src = tmp_path / "cut.dcm"
    src.write_bytes(data[:size])
    _refusal(src, _settings(pki, "certificate"), tmp_path / "out")


def test_a_file_cut_while_it_is_written_leaves_nothing(
        cleaned: dict[tuple[str, str], Path], pki: Pki, tmp_path: Path) -> None:
    src = tmp_path / "in.dcm"
    src.write_bytes(cleaned["native", "certificate"].read_bytes())
    folder = tmp_path / "out"
    folder.mkdir()
    with opened_input(src) as (fd, size):
        pieces = reidentify_streamed(fd, size, _settings(pki, "certificate"))
        assert pieces is not None
        os.truncate(src, size // 2)
        with pytest.raises(DicomFormatError) as caught:
            write_atomic(folder / "out.dcm", pieces)
    assert "\n" not in str(caught.value) and "changed" in str(caught.value)
    assert not list(folder.iterdir())


@pytest.mark.parametrize("cipher", list(Cipher))
def test_an_envelope_opened_in_pieces_decrypts_as_whole(cipher: Cipher) -> None:
    """Every cipher, plaintexts around block boundaries, ranges anywhere in them."""
    encryptor = EnvelopeEncryptor((), cipher=cipher, password=PASSWORD, pbkdf2_iterations=10)
    for length in (0, 1, 7, 8, 15, 16, 17, 40_000):
        plaintext = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
        der = encryptor.encrypt(plaintext)
        content = open_envelope_in_pieces(der[:300], len(der),
                                          lambda offset, count, der=der:
                                          der[offset:offset + count],
                                          None, PASSWORD)
        assert content is not None and content.length == length
        assert decrypt_envelope(der, None, PASSWORD) == plaintext
        for start, end in ((0, length), (length // 3, length - length // 5),
                           (length // 2, length // 2)):
            got = b"".join(content.plaintext(start, end, chunk=4096))
            assert got == plaintext[start:end], (length, start, end)


_MEMORY_PROBE = """
import json, sys
from pathlib import Path
from tasks.reidentify import Reidentify, ReidentifySettings

warm, big, out, key, threshold = sys.argv[1:6]
op = Reidentify(ReidentifySettings(key_pem=Path(key).read_bytes(),
                                   stream_payload_from=int(threshold)))

""" + PEAK_PROBE


def test_memory_does_not_grow_with_the_cine(cleaned: dict[tuple[str, str], Path], pki: Pki,
                                            encryptor: EnvelopeEncryptor,
                                            tmp_path: Path) -> None:
    """A 100-frame cine (23 MB of pixels) cleaned reversibly, then restored: streamed, a
    worker's peak stays within a few MB of what the four-frame cine needed; read whole it
    grows by more than the pixel data (so the probe does see memory grow)."""
    src = pixel_images.us_cine(tmp_path / "big.dcm", 100, rows=240, columns=320)
    big = tmp_path / "big-e.dcm"
    Deidentify(DeidentifySettings(secret=SECRET, encryptor=encryptor, stream_pixels_from=0))(
        src, big)
    grown = {}
    for how, threshold in (("streamed", 0), ("whole", 1 << 62)):
        out = tmp_path / how
        out.mkdir()
        probe = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, str(cleaned["native", "certificate"]),
             str(big), str(out), str(pki.key), str(threshold)],
            check=True, capture_output=True, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        figures = json.loads(probe.stdout)
        grown[how] = (figures["peak_kb"] - figures["base_kb"]) / 1024
        assert (out / "big.dcm").read_bytes() == src.read_bytes()
    print(f"\n100-frame cine -d, peak memory growth in MB: {grown}")  # with -s
    assert grown["streamed"] < 8 and grown["whole"] > 23, grown
