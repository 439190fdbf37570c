"""Hostile inputs at the engine level: only AnonpipeError subclasses may leave per-file work.

The CLI twins of these cases are in tests/pipeline/test_hostile_cli.py; the fuzz targets in
tests/fuzz/.  Each crash the fuzzers found has a regression test here with its minimal input.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tasks import dicomio
from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify, DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.errors import AnonpipeError, CryptoError, DicomFormatError
from tasks.reidentify import Reidentify, ReidentifySettings, reidentify_bytes
from tests.conftest import SECRET, Pki
from tests.fuzz.hostile import (
    BAD_INPUTS,
    DEFLATED_LE,
    TRUNCATED_SEEDS,
    TRUNCATION_STEP,
    Bad,
    dataset,
    dicom,
    explicit,
    file_meta,
    modified_attributes,
    nested_un,
    nested_undefined,
    patient,
    payload_of,
    seed,
    with_payload,
)

#: gdcmanon keeps private blocks: the profile where a PHI-hiding UN sequence matters
GDCMANON_IRREVERSIBLE = DeidentifySettings(secret=SECRET, profile="gdcmanon",
                                           allow_burned_in=True)


@pytest.fixture(scope="module")
def settings(encryptor: EnvelopeEncryptor) -> DeidentifySettings:
    return DeidentifySettings(secret=SECRET, encryptor=encryptor, allow_burned_in=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- bad data


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_bad_input_is_refused_with_its_reason(bad: Bad, settings: DeidentifySettings) -> None:
    with pytest.raises(bad.error, match=bad.match):
        deidentify_bytes(bad.build(), settings)
    with pytest.raises(bad.error, match=bad.match):
        deidentify_bytes(bad.build(), GDCMANON_IRREVERSIBLE)


def _element_ends(data: bytes) -> set[int]:
    """File offsets where a top-level element ends: cutting there leaves a valid file."""
    df = read_dicom(data)
    base = len(df.raw_prefix) + len(df.meta_bytes)
    return {base + el.end for el in df.elements}


@pytest.mark.parametrize("name", TRUNCATED_SEEDS)
def test_truncated_every_97_bytes_is_refused_never_zero_filled(
        name: str, settings: DeidentifySettings, reid: ReidentifySettings) -> None:
    """gdcmanon aborts (134) or zero-fills (exit 0) on most of these cuts.

    The only cuts that may succeed are those landing exactly where a top-level element ends:
    without a total length in DICOM such a file is a complete, shorter data set (a truncated
    value, pixel data included, is always refused).  Their outputs are then checked to hold
    exactly the elements the cut kept, and nothing more.
    """
    data = seed(name)
    boundaries = _element_ends(data)
    accepted = []
    for cut in range(0, len(data), TRUNCATION_STEP):
        try:
            out = deidentify_bytes(data[:cut], settings)
        except DicomFormatError:
            continue
        assert cut in boundaries, f"cut at {cut} accepted inside an element"
        accepted.append(cut)
        kept = [el.tag for el in read_dicom(data[:cut]).elements]
        assert dicomio.PIXEL_DATA not in kept
        assert reidentify_bytes(out, reid) == data[:cut]
    assert len(accepted) <= 3, accepted  # CT_small: 2328, 3686, 6208 (see the docstring)


def test_truncated_pixel_data_is_refused_not_zero_filled(settings: DeidentifySettings) -> None:
    data = seed("CT_small.dcm")
    for cut in (20000, 39000):  # gdcmanon: exit 0, zero-filled
        with pytest.raises(DicomFormatError, match=r"\(7FE0,0010\) declares 32768 bytes"):
            deidentify_bytes(data[:cut], settings)
    with pytest.raises(DicomFormatError, match=r"\(FFFC,FFFC\) declares"):  # its padding
        deidentify_bytes(data[:-1], settings)


ODD_CHARSETS = ["chrArab.dcm", "chrFren.dcm", "chrFrenMulti.dcm", "chrGerm.dcm", "chrGreek.dcm",
                "chrH31.dcm", "chrH32.dcm", "chrHbrw.dcm", "chrI2.dcm", "chrJapMulti.dcm",
                "chrJapMultiExplicitIR6.dcm", "chrKoreanMulti.dcm", "chrRuss.dcm", "chrX1.dcm",
                "chrX2.dcm"]


@pytest.mark.parametrize("name", ODD_CHARSETS)
def test_odd_character_sets_are_handled_byte_exactly(
        name: str, settings: DeidentifySettings, reid: ReidentifySettings) -> None:
    """ISO 2022 escapes, multi-byte sets, UTF-8: the engine never decodes names to edit them."""
    path = Path(pydicom.__file__).parent / "data" / "charset_files" / name
    data = path.read_bytes()
    name_value = read_dicom(data).top_value(0x00100010)
    out = deidentify_bytes(data, settings)
    assert name_value and name_value not in out
    assert reidentify_bytes(out, reid) == data


@pytest.mark.parametrize("charset", [b"ISO_IR 999", b"\xff\xfe\x00\x01", b"ISO 2022 IR 87\\\\",
                                     b"ISO_IR 192"])
def test_unknown_or_broken_character_set_is_not_a_crash(
        charset: bytes, settings: DeidentifySettings, reid: ReidentifySettings) -> None:
    """A value that is not valid in its declared set (here Latin-1 bytes under UTF-8)."""
    data = (file_meta() + explicit(0x00080005, "CS", charset)
            + dataset(patient(b"M\xfcller^J\xf6rg")))
    out = deidentify_bytes(data, settings)
    assert b"M\xfcller" not in out
    assert reidentify_bytes(out, reid) == data


def test_file_without_meta_or_sop_instance_uid_round_trips(
        settings: DeidentifySettings, reid: ReidentifySettings) -> None:
    """gdcmanon refuses both ("Could not Write"); we process them."""
    no_meta = explicit(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.2") + patient()
    no_sop = file_meta() + explicit(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.2") + patient()
    for data in (no_meta, no_sop):
        out = deidentify_bytes(data, settings)
        assert b"Hostile^Patient" not in out
        assert reidentify_bytes(out, reid) == data


def test_many_items_are_linear_not_a_hang(settings: DeidentifySettings) -> None:
    """200 000 empty items in one sequence: parsed in well under a second, not quadratic."""
    items = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" * 200_000
    data = dicom(explicit(0x00081140, "SQ", items) + patient())
    out = deidentify_bytes(data, settings)
    assert len(out) > len(items)


# --------------------------------------------------------------------------- files


def _no_output(dst: Path) -> None:
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if p.name.startswith("." + dst.name)]


@pytest.mark.timeout(30)
def test_fifo_is_refused_without_opening_it(settings: DeidentifySettings, tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: that would hang a worker."""
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    dst = tmp_path / "out" / "pipe.dcm"
    result: list[BaseException | None] = []

    def call() -> None:
        try:
            Deidentify(settings)(fifo, dst)
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            result.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so the thread can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert isinstance(result[0], DicomFormatError) and "a FIFO" in str(result[0])
    assert not dst.parent.exists() or not any(dst.parent.iterdir())


def test_character_device_is_refused(settings: DeidentifySettings, tmp_path: Path) -> None:
    with pytest.raises(DicomFormatError, match="not a regular file .a character device"):
        Deidentify(settings)(Path("/dev/zero"), tmp_path / "zero.dcm")
    _no_output(tmp_path / "zero.dcm")


def test_directory_in_place_of_a_file(settings: DeidentifySettings, tmp_path: Path) -> None:
    folder = tmp_path / "study.dcm"
    folder.mkdir()
    with pytest.raises(DicomFormatError, match="is a directory"):
        Deidentify(settings)(folder, tmp_path / "out.dcm")
    _no_output(tmp_path / "out.dcm")


def test_dangling_symlink(settings: DeidentifySettings, reid: ReidentifySettings,
                          tmp_path: Path) -> None:
    link = tmp_path / "gone.dcm"
    link.symlink_to(tmp_path / "deleted.dcm")
    for operation in (Deidentify(settings), Reidentify(reid)):
        with pytest.raises(DicomFormatError, match="dangling symbolic link"):
            operation(link, tmp_path / "out.dcm")
    _no_output(tmp_path / "out.dcm")


_UNREADABLE_PROBE = """
import sys
from pathlib import Path
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.errors import DicomFormatError
try:
    Deidentify(DeidentifySettings(secret=b"s" * 32))(Path(sys.argv[1]), Path(sys.argv[2]))
except DicomFormatError as exc:
    print(exc)
"""


def test_unreadable_file(tmp_path: Path) -> None:
    """Run in a child without root's DAC capabilities, so chmod 000 binds even in CI."""
    import subprocess
    import sys

    src = tmp_path / "locked.dcm"
    src.write_bytes(seed("CT_small.dcm"))
    src.chmod(0)
    drop = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
            if os.geteuid() == 0 else [])
    try:
        proc = subprocess.run([*drop, sys.executable, "-c", _UNREADABLE_PROBE, str(src),
                               str(tmp_path / "out.dcm")], capture_output=True, text=True,
                              timeout=60, check=False)
    finally:
        src.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert proc.returncode == 0, proc.stderr
    assert "permission denied" in proc.stdout
    _no_output(tmp_path / "out.dcm")


def test_empty_file(settings: DeidentifySettings, tmp_path: Path) -> None:
    src = tmp_path / "empty.dcm"
    src.touch()
    with pytest.raises(DicomFormatError, match="empty file"):
        Deidentify(settings)(src, tmp_path / "out.dcm")
    _no_output(tmp_path / "out.dcm")


def test_inputs_are_never_modified(settings: DeidentifySettings, reid: ReidentifySettings,
                                   tmp_path: Path) -> None:
    """Good and bad inputs alike keep their bytes and their mtime."""
    sources = []
    for index, bad in enumerate(BAD_INPUTS[:6]):
        sources.append(tmp_path / f"bad{index}.dcm")
        sources[-1].write_bytes(bad.build())
    good = tmp_path / "good.dcm"
    good.write_bytes(seed("CT_small.dcm"))
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in [*sources, good]}
    for src in sources:
        with pytest.raises(AnonpipeError):
            Deidentify(settings)(src, tmp_path / "out" / src.name)
    Deidentify(settings)(good, tmp_path / "out" / "good.dcm")
    Reidentify(reid)(tmp_path / "out" / "good.dcm", tmp_path / "back.dcm")
    assert {p: (sha256(p), p.stat().st_mtime_ns) for p in before} == before
    assert (tmp_path / "back.dcm").read_bytes() == good.read_bytes()


# --------------------------------------------------------------------------- re-identification


@pytest.fixture(scope="module")
def deidentified(settings: DeidentifySettings) -> bytes:
    return deidentify_bytes(seed("CT_small.dcm"), settings)


SOP = explicit(0x00080018, "UI", b"1.2.3.4.5")
TAMPERED = [
    ("no-sop-instance-uid", modified_attributes(patient()), "(0008,0018)"),
    ("two-items", modified_attributes(SOP, SOP), "has 2 items, expected 1"),
    ("no-items", modified_attributes(), "not one Modified Attributes Sequence"),
    ("wrong-outer-tag", modified_attributes(SOP, outer=0x04000551),
     "not one Modified Attributes Sequence"),
    ("extra-top-level-element", modified_attributes(SOP) + patient(),
     "more than the Modified Attributes Sequence"),
    ("restores-file-meta", modified_attributes(explicit(0x00020010, "UI", b"1.2") + SOP),
     "file meta"),
    ("not-a-data-set", b"\x00\x01 garbage, not a data set", "not a DICOM data set"),
    ("nested-10000-items", modified_attributes(SOP + nested_undefined(10_000)),
     "nested deeper than"),
]


@pytest.mark.parametrize("plaintext,match", [(p, m) for _, p, m in TAMPERED],
                         ids=[i for i, _, _ in TAMPERED])
def test_tampered_payload_is_refused_and_nothing_written(
        plaintext: bytes, match: str, deidentified: bytes, encryptor: EnvelopeEncryptor,
        reid: ReidentifySettings, tmp_path: Path) -> None:
    src = tmp_path / "tampered.dcm"
    src.write_bytes(with_payload(deidentified, plaintext, encryptor))
    with pytest.raises(CryptoError, match=match.replace("(", r"\(").replace(")", r"\)")):
        Reidentify(reid)(src, tmp_path / "out.dcm")
    _no_output(tmp_path / "out.dcm")


def test_corrupt_cms_is_refused(deidentified: bytes, encryptor: EnvelopeEncryptor,
                                reid: ReidentifySettings, pki: Pki) -> None:
    good = payload_of(deidentified, reid.private_key())
    cms = encryptor.encrypt(good)
    for damaged in (cms[:40], b"\x30\x80" + cms[2:], cms[:-40] + bytes(40), b"\0" * 64):
        with pytest.raises(CryptoError):
            reidentify_bytes(with_payload(deidentified, None, encryptor, cms=damaged), reid)
    other = ReidentifySettings(key_pem=pki.key2.read_bytes())
    with pytest.raises(CryptoError, match="wrong key"):
        reidentify_bytes(deidentified, other)


# --------------------------------------------------------------------------- regressions
# Crashes and silent failures the fuzz targets found, each with its minimal input.


def test_regression_undecodable_media_storage_class() -> None:
    """UnicodeDecodeError in check_deidentifiable: (0002,0002) holding 0xFF 0xFE."""
    data = bytes.fromhex(
        "4449434d0200020055490200fffe0200100055491400312e322e3834302e31303030382e312e32"
        "2e310010001000504e0400415e4220")
    out = deidentify_bytes(data, GDCMANON_IRREVERSIBLE)
    assert read_dicom(out).top_value(0x00100010) != b"A^B "


def test_regression_encapsulated_value_in_implicit_sequence(settings: DeidentifySettings) -> None:
    """ValueError from transcode: undefined-length pixel data inside an item of an implicit
    file, next to a listed attribute, so the whole sequence goes into the payload."""
    data = bytes.fromhex(
        "4449434d0200100055491200312e322e3834302e31303030382e312e320008004011ffffffff"
        "feff00e0ffffffff08005511020000003100e07f1000fffffffffeff00e002000000000"
        "0feffdde000000000feff0de000000000feffdde000000000")
    with pytest.raises(DicomFormatError, match=r"encapsulated .* \(7FE0,0010\)"):
        deidentify_bytes(data, settings)


def test_regression_damaged_meta_record_in_payload(
        deidentified: bytes, encryptor: EnvelopeEncryptor, reid: ReidentifySettings) -> None:
    """CBC has no integrity: a damaged block once restored an unreadable file meta (exit 0,
    output not DICOM).  Payload: (0400,0550) with (0008,0018), then a cut meta record."""
    plaintext = bytes.fromhex(
        "0004500553510000fffffffffeff00e0ffffffff0800180055490400312e3200feff0de000000000"
        "feffdde000000000010410004c4f1000414e4f4e5049504520524553544f5245010401104f420000"
        "0c0000000200100055491400312e3200")
    with pytest.raises(CryptoError, match="damaged file meta record"):
        reidentify_bytes(with_payload(deidentified, plaintext, encryptor), reid)


def test_regression_payload_element_that_implicit_vr_cannot_carry(
        settings: DeidentifySettings, encryptor: EnvelopeEncryptor,
        reid: ReidentifySettings) -> None:
    """A payload (0008,1140) sent as OB: in an implicit file the dictionary says SQ, so the
    restored file did not parse (exit 0, unreadable output)."""
    host = deidentify_bytes(seed("MR_small_implicit.dcm"), settings)
    plaintext = bytes.fromhex(
        "0004500553510000fffffffffeff00e0ffffffff0800180055490400312e3200080040114f420000"
        "0400000001020304feff0de000000000feffdde000000000")
    with pytest.raises(CryptoError, match=r"\(0008,1140\) does not fit"):
        reidentify_bytes(with_payload(host, plaintext, encryptor), reid)


def test_regression_un_sequence_nested_past_the_limit_is_not_left_opaque() -> None:
    """Past 64 levels the UN probe used to give up and copy the value verbatim: a Patient's
    Name hidden 65 levels down a private UN sequence went out in clear (exit 0)."""
    data = dicom(nested_un(65))
    assert b"Hidden^Patient" in data
    with pytest.raises(DicomFormatError, match="nested deeper than 64"):
        deidentify_bytes(data, GDCMANON_IRREVERSIBLE)
    shallow = deidentify_bytes(dicom(nested_un(60)), GDCMANON_IRREVERSIBLE)
    assert b"Hidden^Patient" not in shallow


def test_deflate_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deflate expands ~1000-fold: the cap keeps a small file from exhausting memory."""
    monkeypatch.setattr(dicomio, "MAX_INFLATED", 1 << 20)
    body = dataset(patient() + explicit(0x7FE00010, "OB", bytes(4 << 20)))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = file_meta(DEFLATED_LE) + compressor.compress(body) + compressor.flush()
    assert len(data) < 8192
    with pytest.raises(DicomFormatError, match="inflates to more than 1 MiB"):
        deidentify_bytes(data, GDCMANON_IRREVERSIBLE)
    monkeypatch.undo()
    assert deidentify_bytes(data, GDCMANON_IRREVERSIBLE)


def test_regression_duplicate_transfer_syntax_in_meta(settings: DeidentifySettings,
                                                      reid: ReidentifySettings) -> None:
    """The meta check above first read the first of two (0002,0010) where the parser uses
    the last, refusing to restore a file it had de-identified (fuzz: rtplan with its
    (0002,0000) tag turned into (0002,0010))."""
    data = bytearray(seed("rtplan.dcm"))
    assert data[132:136] == bytes.fromhex("02000000")
    data[132:136] = bytes.fromhex("02001000")
    out = deidentify_bytes(bytes(data), settings)
    assert reidentify_bytes(out, reid) == data


def _stale_group_length(data: bytearray) -> None:
    """(0002,0000) says 4 bytes more than the meta holds (a writer's mistake)."""
    (length,) = struct.unpack_from("<I", data, 140)
    struct.pack_into("<I", data, 140, length + 4)


def _meta_cut_short(data: bytearray) -> None:
    """A meta element's tag turned into (0000,0000): the meta ends there, its (0002,0000)
    no longer measures it, and the data set starts with the rest (the fuzz input)."""
    data[276:280] = bytes(4)


@pytest.mark.parametrize("damage", [_stale_group_length, _meta_cut_short])
def test_regression_meta_group_length_that_does_not_measure_the_meta(
        settings: DeidentifySettings, reid: ReidentifySettings,
        damage: Callable[[bytearray], None]) -> None:
    """-d re-renders the meta it reads to put back (0002,0003), which recomputes (0002,0000);
    -e decided whether to keep the original meta by rendering the original instead, where
    nothing changed, so a wrong group length came back corrected, not byte for byte
    (fuzz: CT_small with the tag of its (0002,0012) set to (0000,0000))."""
    data = bytearray(seed("CT_small.dcm"))
    assert data[132:140] == bytes.fromhex("02000000554c0400")
    damage(data)
    out = deidentify_bytes(bytes(data), settings)
    assert reidentify_bytes(out, reid) == data


def test_an_invalid_vr_is_named_by_its_tag_never_by_its_bytes() -> None:
    """A name shifted into the VR field ("SMITH^" read as VR b'H^') must not be quoted."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.PatientName = "SMITH^JOHN"
    ds.PatientID = "ID1"
    buffer = pydicom.filebase.DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buffer, ds)
    body = bytearray(buffer.getvalue())
    at = body.index(b"PN")
    body[at:at + 2] = b"H^"
    with pytest.raises(DicomFormatError) as caught:
        dicomio.read_dicom(bytes(body))
    text = str(caught.value)
    assert "invalid VR" in text and "(0010,0010)" in text and "H^" not in text
