"""Clean Pixel Data (tasks.pixels): images with names, IDs and dates drawn into their
pixels are accepted by the default run, the output reads none of the drawn words, only the
blanked boxes change, and re-identification (ours and gdcmanon's) restores the input."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.uid import JPEGBaseline8Bit

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify, DeidentifySettings, deidentify_bytes, deidentify_parts
from tasks.dicomio import DicomFile, read_dicom
from tasks.errors import DicomFormatError, ProfileError, UnsupportedFileError
from tasks.pixels import clean as pixel_clean
from tasks.pixels import codecs, ocr
from tasks.pixels.clean import BurnedInTextError, PixelResult, sample
from tasks.pixels.rules import load_rules, matching_rules
from tasks.reidentify import Reidentify, ReidentifySettings
from tasks.tags import PIXEL_DATA
from tests import pixel_images
from tests.conftest import PYDICOM_FILES, REPO, SECRET, Pki, pydicom_file

EXAMPLE_RULES = REPO / "configs" / "pixels" / "example.yaml"
KINDS = sorted(pixel_images.ALL)


_text = pixel_images.ocr_text


def _site_profile(tmp_path: Path) -> Path:
    profile = tmp_path / "site.yaml"
    profile.write_text(f"name: site\nextends: basic\npixel_rules: [default, {EXAMPLE_RULES}]\n")
    return profile


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pixel-images")
    return {kind: make(folder / f"{kind}.dcm") for kind, make in pixel_images.ALL.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_cleaned_output_reads_no_drawn_word_and_restores(kind: str, images: dict[str, Path],
                                                         encryptor: EnvelopeEncryptor,
                                                         reid: ReidentifySettings,
                                                         tmp_path: Path) -> None:
    src = images[kind]
    before = _text(src)
    assert all(word in before for word in pixel_images.WORDS), before  # OCR reads the input
    settings = DeidentifySettings(secret=SECRET, encryptor=encryptor,
                                  profile=str(_site_profile(tmp_path)))
    out = tmp_path / "out.dcm"
    cleaned: list[PixelResult] = []  # the default policy: clean
    out.write_bytes(b"".join(deidentify_parts(src.read_bytes(), settings, cleaned=cleaned)))
    after = _text(out)
    assert not [word for word in pixel_images.WORDS if word in after], after

    ds_in, ds_out = pydicom.dcmread(src), pydicom.dcmread(out)
    assert ds_out.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in ds_out.DeidentificationMethodCodeSequence]
    assert "113101" in codes
    assert "Clean Pixel Data" in str(ds_out[0x00120063].value)

    # only the blanked boxes differ (JPEG Baseline is re-encoded: nearly, and said so)
    [result] = cleaned
    assert result.rule_boxes or result.ocr_boxes
    boxed = np.zeros((int(ds_in.Rows), int(ds_in.Columns)), dtype=bool)
    # JPEG: decoders' chroma upsampling reaches one pixel past a blanked block
    fringe = 1 if kind.startswith("us_jpeg") else 0
    for x, y, w, h in result.rule_boxes + result.ocr_boxes:
        boxed[max(y - fringe, 0):y + h + fringe, max(x - fringe, 0):x + w + fringe] = True
    a, b = ds_in.pixel_array.astype(np.int64), ds_out.pixel_array.astype(np.int64)
    changed = a != b
    while changed.ndim > 2:  # frames, samples
        changed = changed.any(axis=0 if changed.shape[0] != boxed.shape[0] else -1)
    assert changed.any() and not (changed & ~boxed).any()
    if kind.startswith("us_jpeg"):  # blanked in the code stream: not re-encoded
        assert not result.lossy and "LossyImageCompressionMethod" not in ds_out
        assert all(x % 16 == 0 and y % 8 == 0 for x, y, _, _ in result.ocr_boxes)
    if kind.startswith("us_rgb"):
        assert "example-us-640x480-banner" in result.rules

    back = tmp_path / "back.dcm"
    Reidentify(reid)(out, back)
    assert back.read_bytes() == src.read_bytes()


@pytest.mark.gdcm
def test_gdcmanon_restores_the_original_pixel_data(require_tool, images: dict[str, Path],  # type: ignore[no-untyped-def]
                                                   pki: Pki, encryptor: EnvelopeEncryptor,
                                                   tmp_path: Path) -> None:
    gdcmanon = require_tool("gdcmanon")
    src = images["us_multiframe"]
    out = tmp_path / "out.dcm"
    Deidentify(DeidentifySettings(secret=SECRET, encryptor=encryptor))(src, out)
    assert pydicom.dcmread(out).PixelData != pydicom.dcmread(src).PixelData
    back = tmp_path / "back.dcm"
    subprocess.run([gdcmanon, "-k", str(pki.key), "-d", str(out), str(back)], check=True,
                   capture_output=True)
    assert pydicom.dcmread(back).PixelData == pydicom.dcmread(src).PixelData


def test_jpeg_that_cannot_be_blanked_block_by_block_is_reencoded_and_says_so(
        tmp_path: Path) -> None:
    src = pixel_images.us_rgb(tmp_path / "progressive.dcm", JPEGBaseline8Bit, progressive=True)
    cleaned: list[PixelResult] = []
    out = tmp_path / "out.dcm"
    out.write_bytes(b"".join(deidentify_parts(src.read_bytes(), DeidentifySettings(
        secret=SECRET), cleaned=cleaned)))
    [result] = cleaned
    assert result.lossy and result.reencoded == "not baseline (progressive, extended, " \
        "lossless or arithmetic)"
    ds = pydicom.dcmread(out)
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(ds.LossyImageCompressionRatio) > 1
    assert not [word for word in pixel_images.WORDS if word in _text(out)]
    # every pixel may change a little, the image stays the same image
    boxed = np.zeros((480, 640), dtype=bool)
    for x, y, w, h in result.ocr_boxes:
        boxed[y:y + h, x:x + w] = True
    diff = np.abs(pydicom.dcmread(src).pixel_array.astype(int) - ds.pixel_array.astype(int))
    assert diff[~boxed].mean() < 2.0


def test_refuse_and_keep_policies(images: dict[str, Path]) -> None:
    data = images["xa_burned_in"].read_bytes()
    with pytest.raises(UnsupportedFileError, match="Burned In Annotation .* YES"):
        deidentify_bytes(data, DeidentifySettings(secret=SECRET, pixels="refuse"))
    for settings in (DeidentifySettings(secret=SECRET, pixels="keep"),
                     DeidentifySettings(secret=SECRET, allow_burned_in=True)):
        out = read_dicom(deidentify_bytes(data, settings))
        original = read_dicom(data)
        assert out.top_value(PIXEL_DATA) == original.top_value(PIXEL_DATA)
        assert out.top_text(0x00280301) == "YES"


def test_text_left_after_cleaning_refuses(images: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification: with no round of blanking allowed, the text is still there."""
    monkeypatch.setattr(pixel_clean, "ROUNDS", 0)
    with pytest.raises(BurnedInTextError, match=r"word\(s\) still read after cleaning"):
        deidentify_bytes(images["sc_12bit"].read_bytes(), DeidentifySettings(secret=SECRET))


def test_pixels_that_cannot_be_reencoded_are_refused_with_the_reason() -> None:
    data = pydicom_file("JPEG-lossy.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.BurnedInAnnotation = "YES"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(UnsupportedFileError, match="cannot be re-encoded here"):
        deidentify_bytes(buffer.getvalue(), DeidentifySettings(secret=SECRET))


def test_files_without_burned_in_text_take_no_pixel_work(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A CT slice no rule names: its pixels are never decoded, and kept byte for byte."""
    def no_decoding(*_: object) -> None:
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(codecs, "decode", no_decoding)
    src = pixel_images.ct_plain(tmp_path / "ct.dcm")
    out = read_dicom(deidentify_bytes(src.read_bytes(), DeidentifySettings(secret=SECRET)))
    assert out.top_value(PIXEL_DATA) == read_dicom(src.read_bytes()).top_value(PIXEL_DATA)


def test_cine_sample_spreads_detection_and_verification() -> None:
    assert sample(4) == ([0, 1, 2, 3], [0, 1, 2, 3])
    detect, verify = sample(100)
    assert detect[0] == 0 and detect[-1] == 99 and len(detect) == pixel_clean.SAMPLE
    assert verify and not set(verify) & set(detect)


@pytest.mark.parametrize("text,message", [
    ("rules: [{name: a, match: {}, boxes: []}]", "names at least one attribute"),
    ("rules: [{name: a, match: {Rows: 1}, boxes: [[0, 0, 0, 4]]}]", "a box is"),
    ("rules: [{name: a, match: {NoSuchKeyword: 1}}]", "unknown attribute"),
    ("rules: [{name: a, match: {Rows: 1}, colour: red}]", "unknown key"),
    ("rules: 3", "a mapping with a 'rules' list"),
])
def test_rule_files_are_validated(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_rules(str(path))
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\nextends: basic\npixel_rules: [rules.yaml]\n")
    with pytest.raises(ProfileError, match=message):
        DeidentifySettings(secret=SECRET, profile=str(profile)).compiled_profile()


def test_preview_shows_before_and_after(images: dict[str, Path], tmp_path: Path) -> None:
    preview = tmp_path / "preview"
    out = deidentify_bytes(images["sc_12bit"].read_bytes(),
                           DeidentifySettings(secret=SECRET, pixels_preview=str(preview)))
    uid = read_dicom(out).top_text(0x00080018)
    png = Image.open(preview / f"{uid}.png")
    assert png.size == (512 * 2 + 8, 400)
    red = np.all(np.asarray(png.convert("RGB")) == (255, 0, 0), axis=2)
    assert red[:, :512].any() and red[:, 520:].any()  # OCR boxes outlined on both halves


def test_every_flagged_pydicom_test_file_is_cleaned_or_refused_with_a_reason() -> None:
    """Real-world variety (palette colour, YBR, odd sizes, big endian, JPEG, RLE, ...):
    each file the burned-in check flags is written or refused with one clear reason."""
    folder = PYDICOM_FILES
    settings = DeidentifySettings(secret=SECRET)
    profile = settings.compiled_profile()
    outcomes: dict[str, str] = {}
    for path in sorted(folder.glob("*.dcm")):
        data = path.read_bytes()
        try:
            df = read_dicom(data)
        except DicomFormatError:  # unreadable test files are other tests' business
            continue
        if profile.burned_in_reason(df.top_text(0x00080016), df.top_text(0x00280301)) is None:
            continue
        try:
            out = read_dicom(deidentify_bytes(data, settings))
            outcomes[path.name] = f"cleaned: (0028,0301) {out.top_text(0x00280301)}"
        except UnsupportedFileError as exc:
            outcomes[path.name] = f"refused: {exc}"
    assert len(outcomes) >= 8, outcomes
    assert all(o == "cleaned: (0028,0301) NO" or "burned-in annotation:" in o
               for o in outcomes.values()), outcomes
    assert sum(o.startswith("cleaned") for o in outcomes.values()) >= len(outcomes) // 2, outcomes


NATIVE_FILES = ["MR_small_bigendian.dcm", "SC_rgb_small_odd_big_endian.dcm", "ExplVR_BigEnd.dcm",
                "SC_rgb_small_odd.dcm", "examples_palette.dcm", "SC_rgb_rle_2frame.dcm",
                "MR_small_RLE.dcm", "JPEGLSNearLossless_16.dcm", "JPEG2000.dcm"]


@pytest.mark.parametrize("name", NATIVE_FILES)
def test_frames_decode_as_pydicom_does_and_native_ones_encode_back_unchanged(name: str) -> None:
    """Byte order (big endian, 8-bit OW pairs), odd lengths, planar and palette layouts."""
    path = pydicom_file(name)
    df = read_dicom(path.read_bytes())
    frames = codecs.decode(df, pixel_clean.transfer_syntax_of(df))
    reference = pydicom.dcmread(path).pixel_array
    assert (np.stack([frames.frame(i) for i in range(frames.count)]).reshape(reference.shape)
            == reference).all()
    if frames.transfer_syntax in codecs.NATIVE:
        el = df.top(PIXEL_DATA)
        assert el is not None
        assert frames.encode(df.enc)[PIXEL_DATA] == df.body[el.start:el.end]


@pytest.mark.parametrize("manufacturer,model,rows,columns,rule", [
    ("Philips Medical Systems", "iU22", 480, 640, "philips-iu22-us-480"),
    ("GE Healthcare", "LOGIQ9", 480, 640, "ge-logiq9-us"),
    ("SIEMENS", "ACUSON Antares", 768, 1024, "siemens-antares-us-1024x768"),
    ("Philips Medical Systems", "iU22", 512, 640, None),  # no rule for this size
    ("ACME", "iU22", 480, 640, None),
])
def test_shipped_rules_match_their_devices(manufacturer: str, model: str, rows: int,
                                           columns: int, rule: str | None) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = pixel_images.US, "1.2.3"
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "US", manufacturer, model
    ds.Rows, ds.Columns = rows, columns
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    profile = DeidentifySettings(secret=SECRET).compiled_profile()
    found = matching_rules(read_dicom(buffer.getvalue()), profile.spec.pixel_rules)
    assert [r.name for r in found] == ([rule] if rule else [])
    assert all(r.source and r.boxes for r in found)


_INTERLEAVED_RULES = """
rules:
  - {name: us-a, match: {Modality: US, Rows: 480}, boxes: [[0, 0, 8, 8]]}
  - {name: maker-a, match: {Manufacturer: "*ACME*", Rows: [480, 600]}, boxes: [[0, 0, 8, 8]]}
  - {name: us-b, match: {Modality: [CT, US], Columns: 640}, boxes: [[0, 0, 8, 8]]}
  - {name: us-c, match: {Modality: US, Rows: 512}, boxes: [[0, 0, 8, 8]]}
  - {name: maker-b, match: {Manufacturer: "*ACME*"}, boxes: [[0, 0, 8, 8]]}
  - {name: rows-a, match: {Rows: 480, Modality: US}, boxes: [[0, 0, 8, 8]]}
"""


_SIGNATURES = [("US", "ACME Corp", 480), ("US", "Other", 480), ("CT", "ACME", 512),
               ("US", "ACME", 512), ("MR", "ACME", 600), ("US", "ACME Corp", 480)]


def _us_file(modality: str, manufacturer: str, rows: int) -> DicomFile:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = pixel_images.US, "1.2.3"
    ds.Modality, ds.Manufacturer, ds.Rows, ds.Columns = modality, manufacturer, rows, 640
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return read_dicom(buffer.getvalue())


def test_rules_match_as_one_by_one_file_after_file(tmp_path: Path) -> None:
    """matching_rules, which keeps what each signature matched for the next file that has
    it, finds what asking each rule of the files in order finds, in that order: file after
    file, each signature seen twice (the second time from what was kept)."""
    (tmp_path / "one.yaml").write_text(_INTERLEAVED_RULES)
    (tmp_path / "two.yaml").write_text(_INTERLEAVED_RULES.replace("name: ", "name: 2-"))
    files = (str(tmp_path / "one.yaml"), str(tmp_path / "two.yaml"))
    for signature in _SIGNATURES * 2:
        df = _us_file(*signature)
        one_by_one = [rule.name for path in files for rule in load_rules(path)
                      if rule.matches(df)]
        assert [rule.name for rule in matching_rules(df, files)] == one_by_one, signature
        assert one_by_one  # every case matches some rule in both files
        assert len(one_by_one) % 2 == 0


def test_a_signature_differing_in_byte_order_or_vr_is_asked_again(tmp_path: Path) -> None:
    """Rows read as 480 in a little endian file reads otherwise big endian: what was
    kept for the one is not the other's answer."""
    (tmp_path / "rows.yaml").write_text(
        "rules:\n  - {name: rows-480, match: {Rows: 480}, boxes: [[0, 0, 8, 8]]}\n")
    files = (str(tmp_path / "rows.yaml"),)
    little = _us_file("US", "ACME", 480)
    assert [rule.name for rule in matching_rules(little, files)] == ["rows-480"]
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    ds.SOPClassUID, ds.SOPInstanceUID = pixel_images.US, "1.2.3"
    ds.Rows = 480 * 256 % 65536 + 480 // 256  # the bytes of 480 little endian, big endian
    buffer = io.BytesIO()
    ds.save_as(buffer, little_endian=False, implicit_vr=False)
    big = read_dicom(buffer.getvalue())
    assert big.top(0x00280010).value(big.body) == little.top(0x00280010).value(little.body)
    assert matching_rules(big, files) == []


@pytest.mark.parametrize("change", [
    {"NumberOfFrames": "-3"}, {"NumberOfFrames": "100000"}, {"Rows": 4000},
    {"BitsAllocated": 12}, {"SamplesPerPixel": 4}, {"PixelData": b""},
    {"PhotometricInterpretation": "YBR_FULL_422"}, {"BitsAllocated": 1},
])
def test_damaged_pixel_attributes_are_refused_with_a_reason(change: dict[str, object],
                                                            images: dict[str, Path]) -> None:
    ds = pydicom.dcmread(images["xa_burned_in"])
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(UnsupportedFileError, match="pixel data cannot be cleaned"):
        deidentify_bytes(buffer.getvalue(), DeidentifySettings(secret=SECRET))


def test_signature_keywords_are_pydicom_s() -> None:
    from pydicom.datadict import tag_for_keyword

    from tasks.pixels.rules import SIGNATURE_KEYWORDS

    assert all(tag_for_keyword(k) == tag for k, tag in SIGNATURE_KEYWORDS.items())


def test_overlay_bits_are_cleared_in_the_cleaned_pixels(images: dict[str, Path],
                                                        encryptor: EnvelopeEncryptor,
                                                        reid: ReidentifySettings,
                                                        tmp_path: Path) -> None:
    """An overlay plane in the unused bits of a screen capture with burned-in text: the text
    is blanked and the plane's bits cleared, in one new Pixel Data; -d restores both."""
    ds = pydicom.dcmread(images["sc_12bit"])
    words = np.frombuffer(ds.PixelData, "<u2").copy()
    words[::7] |= 1 << 12  # the overlay bitmap, in bit 12
    ds.PixelData = words.tobytes()
    ds.add_new(0x60000010, "US", int(ds.Rows))
    ds.add_new(0x60000011, "US", int(ds.Columns))
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16)
    ds.add_new(0x60000102, "US", 12)
    src = tmp_path / "overlay.dcm"
    ds.save_as(src)
    out = tmp_path / "out.dcm"
    Deidentify(DeidentifySettings(secret=SECRET, encryptor=encryptor))(src, out)
    cleaned = np.frombuffer(pydicom.dcmread(out).PixelData, "<u2")
    assert not (cleaned >> 12).any()
    assert not [word for word in pixel_images.WORDS if word in _text(out)]
    back = tmp_path / "back.dcm"
    Reidentify(reid)(out, back)
    assert back.read_bytes() == src.read_bytes()


def test_native_frames_are_blanked_in_the_one_copy_that_becomes_the_new_element(
        images: dict[str, Path]) -> None:
    """A long cine is not held twice by the pixel step: the frames are views of one copy of
    the element, and that copy (not a new one) is what encode returns."""
    data = images["us_multiframe"].read_bytes()
    df = read_dicom(data)
    frames = codecs.decode(df, pixel_clean.transfer_syntax_of(df))
    assert frames.count == 9 and frames.shape == (240, 400)
    buffer = frames._buffer
    assert buffer is not None
    view = np.frombuffer(buffer, np.uint8)
    assert all(np.shares_memory(frames.frame(i), view) for i in range(frames.count))
    frames.blank([(0, 0, 40, 20)])
    new = frames.encode(df.enc)[PIXEL_DATA]
    assert new is buffer
    assert df.top_value(PIXEL_DATA) == read_dicom(data).top_value(PIXEL_DATA)  # input as it was


def test_a_jpeg_cine_decodes_only_its_ocr_sample(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty JPEG Baseline frames: OCR decodes the sampled frames only, and every frame is
    blanked in its code stream (none re-encoded), the last one (never decoded) too."""
    src = pixel_images.us_cine(tmp_path / "cine.dcm", 20, JPEGBaseline8Bit)
    decoded: list[int] = []
    real = codecs._jpeg_frames

    def counting(*args: object, **kwargs: object) -> codecs.Frames:
        frames = real(*args, **kwargs)  # type: ignore[arg-type]
        decode_one = frames._decode_frame

        def counted(code: bytes) -> np.ndarray:
            decoded.append(frames.encoded.index(code))
            return decode_one(code)
        frames._decode_frame = counted
        return frames

    monkeypatch.setattr(codecs, "_jpeg_frames", counting)
    cleaned: list[PixelResult] = []
    out = tmp_path / "out.dcm"
    out.write_bytes(b"".join(deidentify_parts(src.read_bytes(), DeidentifySettings(
        secret=SECRET), cleaned=cleaned)))
    [result] = cleaned
    assert sorted(set(decoded)) == sorted(set(result.detect_frames + result.verify_frames))
    assert len(decoded) == len(set(decoded)) < 20  # each sampled frame once
    assert not result.lossy and result.ocr_boxes
    ds = pydicom.dcmread(out)
    assert int(ds.NumberOfFrames) == 20 and "LossyImageCompressionMethod" not in ds
    last = ds.pixel_array[-1]
    for x, y, w, h in result.ocr_boxes:
        assert last[y + 1:y + h - 1, x + 1:x + w - 1].max() <= 2  # black in the last frame too


@pytest.mark.parametrize("value", [0, 128, 255])
def test_a_flat_frame_starts_no_tesseract(value: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing can be text in a flat black, grey or white frame: no process is started."""
    def no_tesseract() -> str:
        raise AssertionError("tesseract started")

    monkeypatch.setattr(ocr, "tesseract", no_tesseract)
    assert ocr.read_words(np.full((120, 200), value, np.uint8)) == []


@pytest.mark.parametrize("background,text,speckle", [
    (230, 20, None),    # black text on a light panel
    (150, 30, None),    # dark text on a mid-grey panel
    (0, 110, 255),      # mid-grey text on black, white speckle below it
])
def test_text_on_flat_backgrounds_is_read_whichever_its_shade(background: int, text: int,
                                                              speckle: int | None) -> None:
    rng = np.random.default_rng(1)
    frame = np.full((160, 400), background, np.uint8)
    if speckle is not None:
        frame[80:] = (rng.random((80, 400)) * speckle).astype(np.uint8)
    image = Image.fromarray(frame)
    ImageDraw.Draw(image).text((10, 20), "DOE JANE 4820193", fill=text,
                               font=ImageFont.load_default(size=18))
    words = ocr.read_words(np.asarray(image))
    assert len(words) >= 3 and all(20 <= w.y + w.height // 2 <= 45 for w in words), words
