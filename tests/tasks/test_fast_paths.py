"""The performance paths keep their contracts (issue 6): batch durability, single-parse
header reads, a lazy pydicom dictionary, the cached/one-shot HMAC and the reworked render."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import dicomio, fileio
from tasks.batch import run_batch
from tasks.deidentify import Deidentify, DeidentifySettings, deidentify_bytes
from tasks.dicomio import _dictionary_lookup, dictionary_vr, read_dicom, read_header
from tasks.errors import DicomFormatError, OutputError
from tasks.model import Batch, Status, WorkItem
from tests.conftest import PYDICOM_FILES, REPO, SECRET, packages_loaded_by, pydicom_file

# --------------------------------------------------------------------------- durability


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(fileio.os, "fsync", counting)
    return calls


def test_write_atomic_alone_fsyncs_each_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_fsyncs(monkeypatch)
    fileio.write_atomic(tmp_path / "a" / "b" / "x.dcm", b"data")
    assert (tmp_path / "a" / "b" / "x.dcm").read_bytes() == b"data"
    assert len(calls) == 1


def test_deferred_writes_are_synced_once_per_batch(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_fsyncs(monkeypatch)
    synced: list[int] = []
    real = fileio._syncfs()
    assert real is not None or sys.platform != "linux"

    def syncfs(fd: int) -> None:
        synced.append(fd)
        if real is not None:
            real(fd)  # type: ignore[operator]

    monkeypatch.setattr(fileio, "_SYNCFS", [syncfs])
    with fileio.deferred_durability() as durable:
        for i in range(20):
            fileio.write_atomic(tmp_path / f"s{i % 3}" / f"{i}.dcm", b"x" * i)
        assert not calls and not synced  # nothing durable yet: the caller must commit
        durable.commit()
    assert not calls and len(synced) == 1  # one file system: one syncfs
    assert sorted(p.name for p in tmp_path.rglob("*.dcm")) == sorted(f"{i}.dcm" for i in range(20))
    assert not list(tmp_path.rglob(f"*{fileio.TEMP_MARKER}*"))


def test_without_syncfs_each_file_and_folder_is_fsynced(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_fsyncs(monkeypatch)
    monkeypatch.setattr(fileio, "_SYNCFS", [None])
    with fileio.deferred_durability() as durable:
        for i in range(4):
            fileio.write_atomic(tmp_path / "d" / f"{i}.dcm", b"abc")
        durable.commit()
    assert len(calls) == 4 + 1  # four files, their folder


def test_a_failed_batch_sync_fails_the_done_rows(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio, "_SYNCFS", [broken])
    src = pydicom_file("CT_small.dcm")
    items = (WorkItem(str(src), str(tmp_path / "out" / "a.dcm"), "a.dcm", 1),
             WorkItem(str(tmp_path / "missing.dcm"), str(tmp_path / "out" / "b.dcm"), "b.dcm", 1))
    result = run_batch(Batch(1, items), Deidentify(DeidentifySettings(secret=SECRET)))
    rows = {row["source"]: row for row in result["rows"]}
    assert rows["a.dcm"]["status"] == Status.FAILED.value
    assert rows["a.dcm"]["error_kind"] == "OutputError"
    assert "durable" in str(rows["a.dcm"]["error"])
    assert rows["b.dcm"]["error_kind"] == "DicomFormatError"  # its own failure is kept


def test_deferred_durability_ends_with_its_block(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_fsyncs(monkeypatch)
    with fileio.deferred_durability():
        pass
    fileio.write_atomic(tmp_path / "after.dcm", b"z")
    assert len(calls) == 1


def test_output_folder_that_is_a_file_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "P1").write_bytes(b"a file where a folder must go")
    with pytest.raises(OutputError, match="cannot create output folder"):
        fileio.write_atomic(tmp_path / "P1" / "x.dcm", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P1"]


def test_a_writer_killed_mid_file_leaves_nothing(tmp_path: Path) -> None:
    """Nameless O_TMPFILE output: SIGKILL between the write and the link leaves no trace."""
    dst = tmp_path / "out" / "x.dcm"
    dst.parent.mkdir()
    code = ("import os, signal, sys; from tasks import fileio; "
            "folder = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY); "
            "fd, tmp = fileio._create(folder, sys.argv[2], 0o644); os.write(fd, b'partial'); "
            "print(tmp, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", code, str(dst.parent), dst.name], check=False,
                          cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == -9
    left = [p.name for p in (tmp_path / "out").iterdir()]
    if _takes_o_tmpfile(tmp_path):  # ext4, xfs, btrfs, tmpfs (this machine)
        assert done.stdout.strip() == "None" and left == []
    else:  # e.g. an older overlayfs: the named temp stays until the driver removes it
        assert left == [Path(done.stdout.strip()).name]
        assert fileio.remove_temp_files_of(dst) == 1
        assert list((tmp_path / "out").iterdir()) == []


def _takes_o_tmpfile(folder: Path) -> bool:
    try:
        os.close(os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except (OSError, AttributeError):
        return False
    return True


def test_rewriting_an_output_replaces_it_whole(tmp_path: Path) -> None:
    dst = tmp_path / "x.dcm"
    fileio.write_atomic(dst, b"first")
    before = dst.stat().st_ino
    fileio.write_atomic(dst, [b"sec", memoryview(b"ond")])
    assert dst.read_bytes() == b"second" and dst.stat().st_ino != before
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]
    assert dst.stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_without_o_tmpfile_a_named_temp_is_renamed(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that refuses O_TMPFILE (NFS, FUSE): the named temp path, once and for
    the rest of the process."""
    import errno

    real_open = os.open
    refused: list[int] = []

    def open_(path: object, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if flags & getattr(os, "O_TMPFILE", 1 << 40) == getattr(os, "O_TMPFILE", -1):
            refused.append(flags)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fileio, "_ANONYMOUS", [getattr(os, "O_TMPFILE", 0)])
    monkeypatch.setattr(fileio.os, "open", open_)
    for i in range(3):
        fileio.write_atomic(tmp_path / "d" / f"{i}.dcm", b"abc" * i)
    assert len(refused) == 1 and fileio._ANONYMOUS == [0]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["0.dcm", "1.dcm", "2.dcm"]
    assert (tmp_path / "d" / "2.dcm").read_bytes() == b"abcabc"


def test_a_refused_link_falls_back_to_a_named_temp(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """linkat through /proc refused (hidden /proc, a sandbox): the bytes are written again
    the classic way, and the nameless path is not tried again in this process."""
    real_link = os.link
    refused: list[object] = []

    def link(src: object, dst: object, **kwargs: object) -> None:
        if str(src).startswith("/proc/self/fd/"):
            refused.append(src)
            raise PermissionError(1, "Operation not permitted")
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fileio, "_ANONYMOUS", [getattr(os, "O_TMPFILE", 0)])
    monkeypatch.setattr(fileio.os, "link", link)
    fileio.write_atomic(tmp_path / "a.dcm", [b"ab", b"cd"])
    fileio.write_atomic(tmp_path / "b.dcm", b"ef")
    assert len(refused) == (1 if _takes_o_tmpfile(tmp_path) else 0)
    assert fileio._ANONYMOUS == [0]
    assert (tmp_path / "a.dcm").read_bytes() == b"abcd"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm", "b.dcm"]


def test_temp_files_of_one_output_are_removed(tmp_path: Path) -> None:
    """What the driver does for the files of a batch whose worker died (named temps)."""
    dst = tmp_path / "IM[1].dcm"
    left = [tmp_path / f".IM[1].dcm{fileio.TEMP_MARKER}{n}" for n in ("12-ab", "13-cd")]
    others = [tmp_path / f".IM2.dcm{fileio.TEMP_MARKER}12-ab", tmp_path / "IM[1].dcm"]
    for path in left + others:
        path.write_bytes(b"x")
    assert fileio.remove_temp_files_of(dst) == 2
    assert sorted(tmp_path.iterdir()) == sorted(others)
    assert fileio.remove_temp_files_of(tmp_path / "gone" / "x.dcm") == 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- header reads


def _counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real = dicomio._read_dicom

    def counting(data: bytes, stop_at_pixels: bool, private_runs: bool = False):  # type: ignore[no-untyped-def]
        sizes.append(len(data))
        return real(data, stop_at_pixels, private_runs)

    monkeypatch.setattr(dicomio, "_read_dicom", counting)
    return sizes


def test_header_read_parses_once_when_pixels_lie_beyond_the_first_chunk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = pydicom_file("CT_small.dcm")  # 39 KB: header ~7 KB, then 32 KB of pixels
    sizes = _counting_parses(monkeypatch)
    df = read_header(path)
    assert sizes == [16384] and not df.complete
    assert df.elements[-1].tag < dicomio.PIXEL_DATA
    assert [el.tag for el in df.elements] == [
        el.tag for el in read_dicom(path.read_bytes()).elements if el.tag < dicomio.PIXEL_DATA]


def test_header_longer_than_the_first_chunk_is_read_on(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = pydicom_file("CT_small.dcm")
    whole = read_dicom(path.read_bytes())
    sizes = _counting_parses(monkeypatch)
    df = read_header(path, first_chunk=1024)
    assert len(sizes) > 1 and sizes == sorted(sizes)
    assert [el.tag for el in df.elements] == [
        el.tag for el in whole.elements if el.tag < dicomio.PIXEL_DATA]


def test_small_file_read_whole_in_one_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = pydicom_file("MR_small.dcm")  # 9.8 KB: shorter than the first chunk
    sizes = _counting_parses(monkeypatch)
    read_header(path)
    assert sizes == [path.stat().st_size]


def _with_long_element(path: Path, length: int, declared: int | None = None) -> Path:
    """CT_small's header, then an Encapsulated Document (0042,0011) OB of ``length`` bytes
    (declaring ``declared`` when given: a length that lies), then its pixel data."""
    data = pydicom_file("CT_small.dcm").read_bytes()
    df = read_dicom(data)
    body_start = len(data) - len(df.body)
    at = body_start + next(el.start for el in df.elements if el.tag > 0x00420011)
    header = dicomio.element_header(0x00420011, "OB", declared or length, dicomio.EXPLICIT_LE_ENC)
    path.write_bytes(data[:at] + header + b"%PDF" * (length // 4) + data[at:])
    return path


def test_a_long_element_is_read_past_at_once(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass 1 on a file holding a 4 MB document before its pixel data: two reads and two
    walks (the first chunk, then past the document), not one per doubling."""
    path = _with_long_element(tmp_path / "doc.dcm", 4 << 20)
    whole = read_dicom(path.read_bytes())
    sizes = _counting_parses(monkeypatch)
    df = read_header(path)
    assert len(sizes) == 2 and sizes[1] > 4 << 20, sizes
    assert [el.tag for el in df.elements] == [
        el.tag for el in whole.elements if el.tag < dicomio.PIXEL_DATA]


def test_a_length_that_lies_reads_no_further_than_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3 GB length declared in a 60 KB file: no read asks for more than the file holds
    (a read of 3 GB would allocate its buffer first), and the file is refused as
    truncated."""
    path = _with_long_element(tmp_path / "lie.dcm", 20_000, declared=3 << 30)
    asked: list[int] = []
    pread = os.pread

    def recording(fd: int, size: int, offset: int) -> bytes:
        asked.append(size)
        return pread(fd, size, offset)

    monkeypatch.setattr(dicomio.os, "pread", recording)
    with pytest.raises(DicomFormatError, match="truncated"):
        read_header(path)
    assert len(asked) > 1 and max(asked) <= path.stat().st_size + 65536, asked


def test_truncated_header_still_raises(tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:3000])  # inside the header
    with pytest.raises(DicomFormatError):
        read_header(cut, first_chunk=1024)


# --------------------------------------------------------------------------- start-up


def test_dictionary_vrs_of_common_tags_match_pydicom() -> None:
    for tag, vr in dicomio._COMMON_VRS.items():
        assert _dictionary_lookup(tag) == vr == dictionary_vr(tag)


@pytest.mark.parametrize("digit", ["2", "4", "E"])
def test_dictionary_vrs_of_every_repeating_group_match_pydicom(digit: str) -> None:
    """Implicit VR elements of every repeating group PS3.6 names (curves and overlays, and
    the 0020, 0028, 1000, 1010 and 7Fxx masks) get the VR pydicom's dictionary gives
    them, not UN: the unlisted-attribute rules go by it."""
    from pydicom.datadict import dictionary_VR

    from tasks._datadict_table import REPEATERS

    assert {mask[:2] for mask in REPEATERS} >= {"00", "10", "50", "60", "7F"}
    for mask in REPEATERS:
        tag = int(mask.replace("x", digit), 16)
        expected = dictionary_VR(tag)
        expected = expected[:2] if " or " in expected else expected
        assert dictionary_vr(tag) == expected, mask


def test_group_lengths_are_ul_where_a_repeating_mask_would_match() -> None:
    """(1010,0000) fits the mask 1010xxxx, but it is group 1010's length."""
    assert dictionary_vr(0x10100000) == dictionary_vr(0x10000000) == "UL"
    assert dictionary_vr(0x10100004) == "US"


def test_explicit_vr_run_never_loads_pydicom_or_dask(tmp_path: Path) -> None:
    """The command line's imports stay light: pydicom (and numpy, PIL) only for what
    tasks.datadict does not copy (tests/tasks/test_datadict.py: not for implicit VR files,
    keywords or dumb edits either), dask only when a dask cluster starts."""
    loaded = packages_loaded_by(
        "import pipeline.cli, pipeline.options, pipeline.runner, tasks.deidentify\n"
        "from pathlib import Path\n"
        "from tasks.deidentify import DeidentifySettings, deidentify_bytes\n"
        f"deidentify_bytes(Path({str(pydicom_file('CT_small.dcm'))!r}).read_bytes(),\n"
        f"                 DeidentifySettings(secret={SECRET!r}))\n")
    assert "pipeline" in loaded
    assert not loaded & {"pydicom", "dask", "distributed", "numpy", "PIL"}


def test_implicit_vr_files_still_get_dictionary_vrs() -> None:
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=True)
    df = read_dicom(buffer.getvalue())
    vrs = {el.tag: el.vr for el in df.elements}
    assert df.enc.implicit and vrs[0x00100010] == "PN" and vrs[0x00280010] == "US"


# --------------------------------------------------------------------------- engine


def test_output_is_the_same_with_and_without_encryption_render_shortcut(encryptor, reid) -> None:  # type: ignore[no-untyped-def]
    """The body is rendered once when encrypting; group lengths still follow the edits."""
    from tasks.reidentify import reidentify_bytes

    original = pydicom_file("CT_small.dcm").read_bytes()
    settings = DeidentifySettings(secret=SECRET, encryptor=encryptor)
    out = deidentify_bytes(original, settings)
    irreversible = deidentify_bytes(original, DeidentifySettings(secret=SECRET))
    a, b = read_dicom(out), read_dicom(irreversible)
    assert a.top(0x04000500) is not None and b.top(0x04000500) is None
    assert reidentify_bytes(out, reid) == original


def test_new_uid_cache_is_per_secret_and_root() -> None:
    from tasks.uids import new_uid

    assert new_uid(b"a", "2.25", "1.2.3") == new_uid(b"a", "2.25", "1.2.3")
    assert new_uid(b"a", "2.25", "1.2.3") != new_uid(b"b", "2.25", "1.2.3")
    assert new_uid(b"a", "1.2.826.0.1.3680043.2.1143", "1.2.3").startswith(
        "1.2.826.0.1.3680043.2.1143.")


# --------------------------------------------------------------------------- private runs


def _corpus() -> list[Path]:
    return sorted(p for p in PYDICOM_FILES.glob("*.dcm") if p.stat().st_size < 3_000_000)


def _sample_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from pipeline.sample import generate_archive

    root = tmp_path_factory.mktemp("runs") / "in"
    generate_archive(root, patients=1, studies=1, series=2, instances=2, seed=3)
    return sorted(root.rglob("*.dcm"))


@pytest.fixture(scope="module")
def run_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _corpus() + _sample_files(tmp_path_factory)


def test_private_runs_give_the_same_outputs(run_corpus: list[Path], encryptor, reid,  # type: ignore[no-untyped-def]
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading private elements as runs changes nothing in what -e writes (or refuses)."""
    import tasks.deidentify as deid
    from tasks.errors import AnonpipeError
    from tasks.reidentify import reidentify_bytes

    def outcome(data: bytes, settings: DeidentifySettings) -> bytes | str:
        try:
            return deidentify_bytes(data, settings)
        except AnonpipeError as exc:
            return f"{type(exc).__name__}: {exc}"

    settings = DeidentifySettings(secret=SECRET, allow_burned_in=True)
    reversible = DeidentifySettings(secret=SECRET, allow_burned_in=True, encryptor=encryptor)
    compared = with_runs = 0
    for path in run_corpus:
        data = path.read_bytes()
        fast = outcome(data, settings)
        with monkeypatch.context() as patch:
            patch.setattr(deid, "read_dicom",
                          lambda d, private_runs=False: read_dicom(d))
            slow = outcome(data, settings)
        assert fast == slow, path.name
        compared += 1
        try:
            runs = [el for el in read_dicom(data, private_runs=True).elements
                    if el.length and el.tag & 0x10000
                    and el.end - el.start > 8 + el.length]  # impossible for one element
        except AnonpipeError:
            continue
        if isinstance(fast, bytes):
            with_runs += bool(runs) or any(
                el.tag & 0x10000 for el in read_dicom(data, private_runs=True).elements)
            restored = reidentify_bytes(deidentify_bytes(data, reversible), reid)
            assert restored == data, path.name  # the payload holds every private byte
    assert compared > 50 and with_runs > 5


def test_private_runs_give_the_same_scan_rows(run_corpus: list[Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import inventory

    for path in run_corpus:
        fast = inventory.scan_file(path)
        with monkeypatch.context() as patch:
            patch.setattr(inventory, "read_header_at",
                          lambda fd, private_runs=False: dicomio.read_header_at(fd))
            patch.setattr(inventory, "read_to_pixels",
                          lambda d, private_runs=False: dicomio.read_to_pixels(d))
            slow = inventory.scan_file(path)
        assert fast == slow, path.name


def test_private_runs_keep_the_order_check(tmp_path: Path) -> None:
    """Private elements out of order inside a run are reported as before."""
    import struct

    def el(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    meta_body = el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0")
    meta = el(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta_body))) + meta_body
    body = (el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0")
            + el(0x0009, 0x0010, b"LO", b"ACME")
            + el(0x0009, 0x1002, b"LO", b"AB")
            + el(0x0009, 0x1001, b"LO", b"CD")  # out of order
            + el(0x0010, 0x0010, b"PN", b"Doe^J "))
    data = b"\0" * 128 + b"DICM" + meta + body
    for runs in (False, True):
        with pytest.raises(DicomFormatError, match="out of order"):
            read_dicom(data, private_runs=runs)
    body2 = (el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0")
             + el(0x0009, 0x0010, b"LO", b"ACME") + el(0x0009, 0x1005, b"LO", b"AB")
             + el(0x0009, 0x1003, b"UI", b"1.2\0"))  # a UID ends the run, out of order
    with pytest.raises(DicomFormatError, match="out of order"):
        read_dicom(b"\0" * 128 + b"DICM" + meta + body2, private_runs=True)
    ordered = (el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0")
               + el(0x0009, 0x0010, b"LO", b"ACME") + el(0x0009, 0x1001, b"LO", b"AB")
               + el(0x0009, 0x1002, b"UI", b"1.2\0") + el(0x0009, 0x1003, b"LO", b"CD")
               + el(0x0010, 0x0010, b"PN", b"Doe^J "))
    df = read_dicom(b"\0" * 128 + b"DICM" + meta + ordered, private_runs=True)
    assert [(e.tag, e.vr) for e in df.elements] == [
        (0x00080016, "UI"), (0x00090010, "UN"), (0x00091002, "UI"), (0x00091003, "UN"),
        (0x00100010, "PN")]
    assert df.elements[1].value(df.body) == ordered[34:34 + 12 + 10]
