"""Overlay planes in unused Pixel Data bits (tasks.overlay) on generated files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify, DeidentifySettings, deidentify_bytes
from tasks.errors import UnsupportedFileError
from tasks.overlay import clear_unused_bits
from tasks.reidentify import ReidentifySettings, reidentify_bytes
from tests.builders import file_bytes, small_ct
from tests.conftest import SECRET

OVERLAY_BIT = 15  # the plane, above Bits Stored 12 / High Bit 11


@pytest.fixture(scope="module")
def settings(encryptor: EnvelopeEncryptor) -> DeidentifySettings:
    return DeidentifySettings(secret=SECRET, encryptor=encryptor)


def image(rows: int = 16, columns: int = 16) -> np.ndarray:
    """12-bit pixels with a "text" bitmap in bit 15, and junk in bits 12-14 too."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 1 << 12, size=(rows, columns), dtype=np.uint16)
    text = np.zeros((rows, columns), dtype=np.uint16)
    text[2:5, 1:columns - 1] = 1  # a bar of "text"
    pixels |= text << OVERLAY_BIT
    pixels[0, 0] |= 1 << 13
    return pixels


def make(syntax: str = ExplicitVRLittleEndian, rows: int = 16, with_data: bool = False,
         encapsulated: bool = False) -> bytes:
    ds = small_ct(JPEGBaseline8Bit if encapsulated else syntax, sop_instance_uid="1.2.3.4.9",
                  patient_name="Doe^John", patient_id="PID-1")
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.add_new(0x60000010, "US", rows)  # Overlay Rows
    ds.add_new(0x60000011, "US", rows)  # Overlay Columns
    ds.add_new(0x60000022, "LO", "OVERLAY DESCRIPTION")
    ds.add_new(0x60000040, "CS", "G")  # Overlay Type
    ds.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    if with_data:
        ds.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
        ds.add_new(0x60000102, "US", 0)  # Overlay Bit Position
        ds.add_new(0x60003000, "OW", np.packbits(np.ones(rows * rows, dtype=np.uint8)).tobytes())
    else:  # the retired layout: the plane in the pixel words
        ds.add_new(0x60000100, "US", 16)
        ds.add_new(0x60000102, "US", OVERLAY_BIT)
    pixels = image(rows, rows)
    if encapsulated:
        ds.PixelData = encapsulate([b"\xff\xd8fake jpeg\xff\xd9"])
    else:
        ds.PixelData = (pixels.astype(">u2") if syntax == ExplicitVRBigEndian
                        else pixels).tobytes()
    return file_bytes(ds)


def pixels_of(data: bytes) -> np.ndarray:
    ds = pydicom.dcmread(io.BytesIO(data))
    return np.asarray(ds.pixel_array, dtype=np.uint16)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian])
def test_plane_bits_are_cleared_and_restored(syntax: str, settings: DeidentifySettings,
                                             reid: ReidentifySettings) -> None:
    data = make(syntax)
    before = pydicom.dcmread(io.BytesIO(data))
    raw = np.frombuffer(before.PixelData, dtype=">u2" if syntax == ExplicitVRBigEndian
                        else "<u2")
    assert (raw >> 12).any()  # the plane is there to begin with
    out = deidentify_bytes(data, settings)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert not any(el.tag >> 16 == 0x6000 for el in ds)  # basic removes the plane
    cleared = np.frombuffer(ds.PixelData, dtype=raw.dtype)
    assert not (cleared >> 12).any()  # nothing left above the stored bits
    assert np.array_equal(cleared, raw & 0x0FFF)  # the image itself unchanged
    assert reidentify_bytes(out, reid) == data


def test_irreversible_clears_too() -> None:
    out = deidentify_bytes(make(), DeidentifySettings(secret=SECRET))
    ds = pydicom.dcmread(io.BytesIO(out))
    assert not (np.frombuffer(ds.PixelData, dtype="<u2") >> 12).any()


@pytest.mark.parametrize("profile,options", [("gdcmanon", ()), ("basic", ("clean_graphics",))])
def test_kept_plane_keeps_its_bits(profile: str, options: tuple[str, ...],
                                   settings: DeidentifySettings) -> None:
    """A profile that keeps the overlay (gdcmanon's, or Clean Graphics) keeps its bitmap."""
    data = make()
    out = deidentify_bytes(data, DeidentifySettings(
        secret=SECRET, profile=profile, options=options, encryptor=settings.encryptor))
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.PixelData == pydicom.dcmread(io.BytesIO(data)).PixelData


def test_overlay_with_its_own_data_leaves_the_pixels(settings: DeidentifySettings) -> None:
    data = make(with_data=True)
    out = deidentify_bytes(data, settings)
    assert pydicom.dcmread(io.BytesIO(out)).PixelData == \
        pydicom.dcmread(io.BytesIO(data)).PixelData


def test_compressed_pixel_data_is_refused_with_its_reason(settings: DeidentifySettings) -> None:
    with pytest.raises(UnsupportedFileError, match="compressed pixel data"):
        deidentify_bytes(make(encapsulated=True), settings)


def test_large_file_is_read_whole_and_cleared(settings: DeidentifySettings,
                                              reid: ReidentifySettings, tmp_path: Path) -> None:
    """Past the size where the pixel data stays in the file (tasks.pixeltail), the engine
    reads it whole when the pixel words change."""
    data = make(rows=512)  # 512 KB of pixel data
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    src.write_bytes(data)
    Deidentify(settings)(src, dst)
    out = dst.read_bytes()
    assert not (np.frombuffer(pydicom.dcmread(io.BytesIO(out)).PixelData, "<u2") >> 12).any()
    assert reidentify_bytes(out, reid) == data


def test_clear_unused_bits_keeps_a_trailing_byte() -> None:
    assert clear_unused_bits(b"\xff\xff\xff", 2, 0x0FFF, True) == b"\xff\x0f\xff"
    assert clear_unused_bits(b"\xff\xff", 2, 0x0FFF, False) == b"\x0f\xff"


def test_explain_names_the_plane_and_the_preamble() -> None:
    from tasks.explain import explain_bytes

    text = explain_bytes(make(), DeidentifySettings(secret=SECRET))
    assert "overlay planes 6000 lie in unused Pixel Data bits" in text
    assert "file meta: rebuilt" in text and "preamble holds data" not in text
    kept = explain_bytes(make(), DeidentifySettings(secret=SECRET, profile="gdcmanon"))
    assert "overlay planes" not in kept
