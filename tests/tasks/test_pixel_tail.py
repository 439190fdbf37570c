"""Large files are de-identified with their pixel data left in the file (tasks.pixeltail):
the same bytes as reading them whole, a round trip byte for byte, and a worker's memory that
does not grow with the file."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

import tasks.deidentify as deid
import tasks.reidentify as reid
from tasks import fileio, pixeltail
from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.dicomio import read_dicom
from tasks.errors import AnonpipeError, DicomFormatError
from tasks.fileio import FileRange, write_atomic
from tasks.pixeltail import SPLIT_FROM, SplitFile, WholeFile, split_pixel_tail
from tasks.reidentify import Reidentify, ReidentifySettings
from tasks.tags import PIXEL_DATA
from tests.builders import PEAK_PROBE
from tests.conftest import PYDICOM_FILES, REPO, SECRET, Pki, pydicom_file

TEST_FILES = sorted(PYDICOM_FILES.glob("*.dcm"))
#: split as they should: native pixel data (explicit, implicit, odd sizes), encapsulated
#: fragments (JPEG 2000, RLE, JPEG-LS, a fragment holding a delimiter's bytes), with a
#: trailing padding (FFFC,FFFC) after the pixel data (CT_small, MR_small_RLE) or without;
#: not split: big endian, deflated, no pixel data
SPLITS = ("CT_small.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm", "rtdose.dcm",
          "SC_rgb_small_odd.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "JPEGLSNearLossless_16.dcm",
          "JPEG2000-embedded-sequence-delimiter.dcm")
WHOLE = ("MR_small_bigendian.dcm", "image_dfl.dcm", "rtplan.dcm")


def _run(src: Path, dst: Path, settings: DeidentifySettings, split: bool,
         monkeypatch: pytest.MonkeyPatch) -> bytes | str:
    """The output bytes, or the error a user would see."""
    monkeypatch.setattr(deid, "SPLIT_FROM", 0 if split else 1 << 62)
    try:
        Deidentify(settings)(src, dst)
    except AnonpipeError as exc:
        return f"{type(exc).__name__}: {exc}"
    return dst.read_bytes()


@pytest.mark.parametrize("name", SPLITS + WHOLE)
def test_which_files_split(name: str) -> None:
    path = pydicom_file(name)
    fd = os.open(path, os.O_RDONLY)
    try:
        split = split_pixel_tail(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    assert isinstance(split, SplitFile) == (name in SPLITS)
    if isinstance(split, WholeFile):  # small files: the first read took them whole
        assert split.data == path.read_bytes()
    if isinstance(split, SplitFile):
        data = path.read_bytes()
        whole = read_dicom(data)
        pixels = whole.top(PIXEL_DATA)
        assert pixels is not None
        body_start = len(data) - len(whole.body)
        assert (split.pixels.offset, split.pixels.length) == (body_start + pixels.start,
                                                              pixels.end - pixels.start)
        stand_in = split.df.top(PIXEL_DATA)
        assert stand_in is not None and (stand_in.start, stand_in.length) == (split.at, 0)
        assert [el.tag for el in split.df.elements] == [el.tag for el in whole.elements]


def test_every_test_file_gives_the_same_bytes_or_error_split_or_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DeidentifySettings(secret=SECRET, allow_burned_in=True)
    compared = 0
    for path in TEST_FILES:
        whole = _run(path, tmp_path / "whole.dcm", settings, False, monkeypatch)
        split = _run(path, tmp_path / "split.dcm", settings, True, monkeypatch)
        assert split == whole, path.name
        compared += isinstance(whole, bytes)
    assert compared >= 60  # most of pydicom's files de-identify (the rest: refused alike)


def test_generated_large_slices_split_without_trailing_padding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """anonpipe-sample's 512x512 slices end with CT_small's Data Set Trailing Padding
    (FFFC,FFFC); with it and without it they split, and the output is the one the file
    read whole gives."""
    archive = tmp_path / "in"
    subprocess.run([sys.executable, "-m", "pipeline.sample", str(archive), "--seed", "3",
                    "--patients", "1", "--studies", "1", "--series", "1", "--instances", "3",
                    "--kind", "large-ct"], check=True, cwd=REPO, capture_output=True)
    settings = DeidentifySettings(secret=SECRET, allow_burned_in=True)
    for path in sorted(archive.rglob("*.dcm")):
        stripped = tmp_path / f"stripped-{path.name}"
        ds = pydicom.dcmread(path)
        del ds[0xFFFCFFFC]
        ds.save_as(stripped)
        for candidate, splits in ((path, True), (stripped, True)):
            assert candidate.stat().st_size > 500_000
            fd = os.open(candidate, os.O_RDONLY)
            try:
                assert isinstance(split_pixel_tail(fd, os.fstat(fd).st_size), SplitFile) == splits
            finally:
                os.close(fd)
            assert (_run(candidate, tmp_path / "s.dcm", settings, True, monkeypatch)
                    == _run(candidate, tmp_path / "w.dcm", settings, False, monkeypatch))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "rtdose.dcm",
                                  "JPEG2000.dcm", "MR_small_implicit.dcm"])
def test_split_round_trip_is_byte_for_byte(name: str, pki: Pki, encryptor: EnvelopeEncryptor,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """-e and -d both split: the original comes back; -d split or whole, the same bytes."""
    settings = DeidentifySettings(secret=SECRET, allow_burned_in=True, encryptor=encryptor)
    src = pydicom_file(name)
    out = _run(src, tmp_path / "out.dcm", settings, True, monkeypatch)
    assert isinstance(out, bytes)
    back = ReidentifySettings(key_pem=pki.key.read_bytes())
    for split in (True, False):
        monkeypatch.setattr(reid, "SPLIT_FROM", 0 if split else 1 << 62)
        Reidentify(back)(tmp_path / "out.dcm", tmp_path / "back.dcm")
        assert (tmp_path / "back.dcm").read_bytes() == src.read_bytes(), split


@pytest.mark.gdcm
def test_gdcmanon_output_reidentifies_the_same_split_or_whole(
        require_tool, pki: Pki, tmp_path: Path,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    gdcmanon = require_tool("gdcmanon")
    src = pydicom_file("CT_small.dcm")
    subprocess.run([gdcmanon, "-c", str(pki.cert), "-e", str(src), str(tmp_path / "g.dcm")],
                   check=True, capture_output=True)
    back = ReidentifySettings(key_pem=pki.key.read_bytes())
    restored = []
    for split in (True, False):
        monkeypatch.setattr(reid, "SPLIT_FROM", 0 if split else 1 << 62)
        Reidentify(back)(tmp_path / "g.dcm", tmp_path / f"back-{split}.dcm")
        restored.append((tmp_path / f"back-{split}.dcm").read_bytes())
    assert restored[0] == restored[1]
    assert pydicom.dcmread(tmp_path / "back-True.dcm").PatientName == \
        pydicom.dcmread(src).PatientName


@pytest.mark.parametrize("copiers", [["copy_file_range", "sendfile"], ["sendfile"], []])
def test_a_file_range_is_written_by_every_way_to_copy(copiers: list[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's copy, sendfile, or read and write (what is left when a file system
    refuses the first two)."""
    monkeypatch.setattr(fileio, "_RANGE_COPIERS", list(copiers))
    monkeypatch.setattr(fileio, "COPY_BLOCK", 4096)  # several blocks for the last way
    source = tmp_path / "source"
    payload = os.urandom(50_000)
    source.write_bytes(payload)
    fd = os.open(source, os.O_RDONLY)
    try:
        written = write_atomic(tmp_path / "out", [b"head", FileRange(fd, 1000, 40_000),
                                                  memoryview(b"tail")])
    finally:
        os.close(fd)
    assert written == 4 + 40_000 + 4
    assert (tmp_path / "out").read_bytes() == b"head" + payload[1000:41_000] + b"tail"


@pytest.mark.parametrize("nameless", [True, False], ids=["O_TMPFILE", "named-temp"])
def test_an_input_shorter_than_its_range_is_an_error_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nameless: bool) -> None:
    """The input's fault (it shrank under us) is said as such, not as an output error."""
    if not nameless:  # the path taken where O_TMPFILE is refused (NFS, FUSE ...)
        monkeypatch.setattr(fileio, "_ANONYMOUS", [0])
    source = tmp_path / "source"
    source.write_bytes(b"x" * 1000)
    fd = os.open(source, os.O_RDONLY)
    try:
        with pytest.raises(DicomFormatError, match="the file shrank while it was read"):
            write_atomic(tmp_path / "out", [b"head", FileRange(fd, 500, 800)])
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


_MEMORY_PROBE = """
import json, sys
from pathlib import Path
import tasks.deidentify, tasks.dumb, tasks.reidentify
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.dumb import DumbEdit, DumbSettings, parse_dumb_ops
from tasks.reidentify import Reidentify, ReidentifySettings

warm, out, big, how, key = sys.argv[1:6]
if how == "whole":
    tasks.deidentify.SPLIT_FROM = tasks.reidentify.SPLIT_FROM = tasks.dumb.SPLIT_FROM = 1 << 62
if key == "-":
    op = Deidentify(DeidentifySettings(secret=b"s" * 32))
elif key == "dumb":
    op = DumbEdit(DumbSettings(parse_dumb_ops([], [], ["10,10"], ["10,20=X"])))
else:
    op = Reidentify(ReidentifySettings(key_pem=Path(key).read_bytes()))

""" + PEAK_PROBE


def _grown_mb(warm: Path, out: Path, big: Path, how: str, key: str) -> float:
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(warm), str(out), str(big), how, key],
        check=True, capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    figures = json.loads(probe.stdout)
    return (figures["peak_kb"] - figures["base_kb"]) / 1024


def test_memory_does_not_grow_with_the_pixel_data(pki: Pki, encryptor: EnvelopeEncryptor,
                                                  tmp_path: Path) -> None:
    """A 96 MB multi-frame file: a worker's peak memory stays within a few MB of what a
    40 KB file needs, for -e, -d and dumb mode; read whole (split turned off) it grows by
    more than the file (so the probe does see memory grow)."""
    big = tmp_path / "big.dcm"
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))  # its trailing padding stays
    frame = ds.PixelData
    frames = (96 << 20) // len(frame)
    ds.NumberOfFrames = frames
    ds.PixelData = frame * frames
    ds.save_as(big)
    del ds, frame
    small = pydicom_file("CT_small.dcm")
    reversible = DeidentifySettings(secret=SECRET, encryptor=encryptor)
    Deidentify(reversible)(small, tmp_path / "small-e.dcm")
    Deidentify(reversible)(big, tmp_path / "big-e.dcm")
    grown = {}
    for how in ("split", "whole"):
        out = tmp_path / f"e-{how}"
        out.mkdir()
        grown[f"-e {how}"] = _grown_mb(small, out, big, how, "-")
        assert int(pydicom.dcmread(out / "big.dcm").NumberOfFrames) == frames
        out = tmp_path / f"d-{how}"
        out.mkdir()
        grown[f"-d {how}"] = _grown_mb(tmp_path / "small-e.dcm", out, tmp_path / "big-e.dcm",
                                       how, str(pki.key))
        assert filecmp.cmp(out / "big.dcm", big, shallow=False)
        out = tmp_path / f"dumb-{how}"
        out.mkdir()
        grown[f"dumb {how}"] = _grown_mb(small, out, big, how, "dumb")
        edited = pydicom.dcmread(out / "big.dcm", stop_before_pixels=True)
        assert "PatientName" not in edited and edited.PatientID == "X"
    print(f"\n96 MB file, peak memory growth in MB: {grown}")  # with -s
    assert max(grown[f"{op} split"] for op in ("-e", "-d", "dumb")) < 8, grown
    assert min(grown[f"{op} whole"] for op in ("-e", "-d", "dumb")) > 96, grown
    assert filecmp.cmp(tmp_path / "dumb-split" / "big.dcm", tmp_path / "dumb-whole" / "big.dcm",
                       shallow=False)


@pytest.mark.parametrize("code", ["X", "Z", "D", "C"])
def test_a_profile_that_edits_the_pixel_data_is_obeyed(code: str, pki: Pki,
                                                       encryptor: EnvelopeEncryptor,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A site profile may act on Pixel Data itself: the split then gives way (the stand-in's
    empty value must not be what the action sees), and the output is the whole read's."""
    profile = tmp_path / "pixels.yaml"
    profile.write_text(f"name: pixels\nextends: basic\nactions:\n  PixelData: {code}\n")
    src = pydicom_file("CT_small.dcm")
    irreversible = DeidentifySettings(secret=SECRET, profile=str(profile), allow_burned_in=True)
    split = _run(src, tmp_path / "s.dcm", irreversible, True, monkeypatch)
    assert split == _run(src, tmp_path / "w.dcm", irreversible, False, monkeypatch)
    if code in ("X", "Z"):
        out = pydicom.dcmread(tmp_path / "s.dcm")
        assert "PixelData" not in out if code == "X" else not out[0x7FE00010].value
    reversible = irreversible._replace(encryptor=encryptor)
    assert isinstance(_run(src, tmp_path / "r.dcm", reversible, True, monkeypatch), bytes)
    monkeypatch.setattr(reid, "SPLIT_FROM", 0)
    Reidentify(ReidentifySettings(key_pem=pki.key.read_bytes()))(tmp_path / "r.dcm",
                                                                 tmp_path / "back.dcm")
    assert (tmp_path / "back.dcm").read_bytes() == src.read_bytes()


def _document(path: Path, megabytes: int) -> Path:
    """An Encapsulated PDF of ``megabytes``: one long element, no Pixel Data."""
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"), stop_before_pixels=True)
    for tag in [el.tag for el in ds if el.tag >> 16 in (0x0018, 0x0028, 0x0043, 0xFFFC)]:
        del ds[tag]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 " + bytes(range(256)) * (megabytes << 12)
    ds.save_as(path, enforce_file_format=True)
    return path


def _structure_set(path: Path) -> Path:
    """A 2 MB structure set: contours in sequences of undefined length, no Pixel Data."""
    ds = pydicom.dcmread(pydicom_file("rtstruct.dcm"), force=True)
    roi = ds.ROIContourSequence[0]
    contour = roi.ContourSequence[0]
    contour.ContourData = [f"{i * 0.5:.2f}" for i in range(3000)]
    roi.ContourSequence = [contour] * 100
    ds.save_as(path, enforce_file_format=True)
    return path


def _counted_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the heads the split walks from now on, in order (the real walk),
    the next file's head read first in :data:`~tasks.pixeltail.MIN_FIRST_READ` bytes
    (whatever the files split before in this process needed)."""
    monkeypatch.setattr(pixeltail, "_first_read", pixeltail.MIN_FIRST_READ)
    walks: list[int] = []
    walk = pixeltail.read_to_pixels

    def counted(data: bytes, private_runs: bool = False) -> tuple[object, bool]:
        walks.append(len(data))
        return walk(data, private_runs)

    monkeypatch.setattr(pixeltail, "read_to_pixels", counted)
    return walks


def test_a_large_file_without_pixel_data_is_read_once(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No Pixel Data to leave in the file: the bytes the attempt read go to the whole path
    (not read again), and a long element is read past at once, not in doublings."""
    walks = _counted_walks(monkeypatch)
    settings = DeidentifySettings(secret=SECRET, allow_burned_in=True)
    for path, most_walks in ((_document(tmp_path / "pdf.dcm", 3), 2),
                             (_structure_set(tmp_path / "rt.dcm"), 9)):
        assert path.stat().st_size > 2 * SPLIT_FROM
        walks.clear()
        fd = os.open(path, os.O_RDONLY)
        try:
            read = split_pixel_tail(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        assert isinstance(read, WholeFile) and read.data == path.read_bytes()
        assert 1 < len(walks) <= most_walks, walks
        out = _run(path, tmp_path / "split.dcm", settings, True, monkeypatch)
        assert isinstance(out, bytes)
        assert out == _run(path, tmp_path / "whole.dcm", settings, False, monkeypatch)


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # a 40 KB LT, on purpose
def test_the_first_read_is_what_the_file_before_needed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A head is read in doublings from what the last file split needed: the second of two
    slices with a 40 KB header is read and walked once, a short header after them is too,
    and brings the first read back down; split or whole, the output is the same."""
    walks = _counted_walks(monkeypatch)
    long, short = tmp_path / "long.dcm", pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(short)
    ds.ImageComments = "x" * 40_000
    ds.save_as(long)
    assert pixeltail.MIN_FIRST_READ < 40_000
    # the first: a short read, then at once past the long element; the second: one read
    for path, walked in ((long, 2), (long, 1), (short, 1), (long, 2)):
        walks.clear()
        fd = os.open(path, os.O_RDONLY)
        try:
            assert isinstance(split_pixel_tail(fd, os.fstat(fd).st_size), SplitFile)
        finally:
            os.close(fd)
        assert len(walks) == walked, (path.name, walks)
    settings = DeidentifySettings(secret=SECRET, allow_burned_in=True)
    assert (_run(long, tmp_path / "split.dcm", settings, True, monkeypatch)
            == _run(long, tmp_path / "whole.dcm", settings, False, monkeypatch))


def test_a_file_grown_since_its_size_was_taken_is_read_again(tmp_path: Path) -> None:
    path = _document(tmp_path / "pdf.dcm", 1)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert split_pixel_tail(fd, os.fstat(fd).st_size - 100) is None
    finally:
        os.close(fd)


def test_an_empty_file_gives_the_same_error_split_or_whole(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the split fuzz target: an empty read is not a whole file to hand over."""
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    settings = DeidentifySettings(secret=SECRET)
    split = _run(empty, tmp_path / "s.dcm", settings, True, monkeypatch)
    assert split == _run(empty, tmp_path / "w.dcm", settings, False, monkeypatch)
    assert split == "DicomFormatError: empty file"
