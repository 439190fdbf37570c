"""The per-file input/output path of pass 2 keeps its guarantees: each output no more
readable than the input actually opened, rows as ``FileResult.as_row`` makes them, outputs
linked in by a forked child are its own, and ``str`` paths work as ``Path`` ones."""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import stat
import sys
from pathlib import Path

import pytest

from tasks import fileio
from tasks.batch import run_batch, run_item
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.dumb import DumbEdit, DumbSettings, parse_dumb_ops
from tasks.fileio import FileRange, Stream, output_policy, write_atomic
from tasks.model import Batch, FileResult, Status, WorkItem
from tests.conftest import SECRET, pydicom_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _inputs(tmp_path: Path, modes: dict[str, int]) -> list[WorkItem]:
    items = []
    for rel, mode in modes.items():
        src = tmp_path / "in" / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pydicom_file("CT_small.dcm"), src)
        src.chmod(mode)
        items.append(WorkItem(str(src), str(tmp_path / "out" / rel), rel, src.stat().st_size))
    return items


def test_each_output_takes_the_permissions_of_its_own_input(tmp_path: Path) -> None:
    """Modes that alternate file by file within one batch: no output inherits the mode of
    the file before it, and a folder made for an owner-only input is not listable by
    others."""
    modes = {"A/open.dcm": 0o644, "B/private.dcm": 0o600, "B/group.dcm": 0o640,
             "C/private.dcm": 0o400, "C/open.dcm": 0o644}
    items = _inputs(tmp_path, modes)
    result = run_batch(Batch(1, tuple(items), str(tmp_path / "out"), sync=False),
                       Deidentify(DeidentifySettings(secret=SECRET)))
    assert [row["status"] for row in result["rows"]] == [Status.DONE.value] * len(items)
    for rel, mode in modes.items():
        expected = 0o644 & (mode | stat.S_IWUSR) & ~_umask()
        assert stat.S_IMODE((tmp_path / "out" / rel).stat().st_mode) == expected, rel
    assert stat.S_IMODE((tmp_path / "out" / "B").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((tmp_path / "out" / "C").stat().st_mode) & 0o077 == 0


def test_the_mode_is_taken_from_the_file_opened(tmp_path: Path) -> None:
    """The permissions come from the input as opened (its ``fstat``), set before the
    output is created, whatever the policy allowed before (here: the owner only)."""
    src = tmp_path / "in.dcm"
    shutil.copy(pydicom_file("CT_small.dcm"), src)
    src.chmod(0o640)
    with output_policy(tmp_path / "out") as policy:
        policy.like_mode(0o600)
        assert policy.mode == 0o600 and policy.folder_mode == 0o700
        from tasks.engine import opened_input

        with opened_input(str(src)) as (_, size):
            assert size == src.stat().st_size
            assert policy.mode == 0o640 and policy.folder_mode == 0o770


def test_rows_are_those_of_file_result(tmp_path: Path) -> None:
    """A done row and a failed row have ``FileResult.as_row``'s keys, in its order."""
    items = _inputs(tmp_path, {"a.dcm": 0o644})
    missing = WorkItem(str(tmp_path / "in" / "none.dcm"), str(tmp_path / "out" / "none.dcm"),
                       "none.dcm", 7)
    operation = Deidentify(DeidentifySettings(secret=SECRET))
    with output_policy(tmp_path / "out"):
        done = run_item(operation, items[0].src, items[0].dst, "a.dcm", items[0].size)
        failed = run_item(operation, missing.src, missing.dst, missing.rel, missing.size)
    written = (tmp_path / "out" / "a.dcm").stat().st_size
    assert list(done) == list(FileResult("a.dcm", Status.DONE).as_row())
    assert {**done, "seconds": 0.0} == FileResult("a.dcm", Status.DONE, items[0].size,
                                                  written).as_row()
    assert failed == {**FileResult("none.dcm", Status.FAILED, 7, 0, "DicomFormatError",
                                   "no such file").as_row(), "seconds": failed["seconds"]}
    assert isinstance(failed["seconds"], float) and failed["seconds"] >= 0


def test_str_and_path_arguments_give_the_same_output(tmp_path: Path) -> None:
    src = pydicom_file("CT_small.dcm")
    deid = Deidentify(DeidentifySettings(secret=SECRET))
    dumb = DumbEdit(DumbSettings(parse_dumb_ops([], [], ["10,10"], [])))
    for name, operation in (("deid", deid), ("dumb", dumb)):
        as_path, as_str = tmp_path / f"{name}-path.dcm", tmp_path / f"{name}-str.dcm"
        operation(src, as_path)
        operation(str(src), str(as_str))
        assert as_path.read_bytes() == as_str.read_bytes() != src.read_bytes(), name


def test_untracked_durability_notes_nothing(tmp_path: Path) -> None:
    """A batch whose durability the driver sees to notes no file (nothing to commit)."""
    with fileio.deferred_durability(track=False) as durable:
        write_atomic(tmp_path / "a.dcm", b"abc")
    assert durable.paths == [] and durable.folders == {}
    with fileio.deferred_durability() as durable:
        write_atomic(str(tmp_path / "b.dcm"), b"abc")
    assert durable.paths == [str(tmp_path / "b.dcm")]


def test_mixed_pieces_are_written_in_order(tmp_path: Path) -> None:
    """Bytes, a file range and a stream in one output: the one-``writev`` path steps aside
    without writing anything twice."""
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)))
    fd = os.open(source, os.O_RDONLY)
    try:
        pieces = [b"head", FileRange(fd, 16, 32), memoryview(b"mid"),
                  Stream(5, lambda: [b"st", b"rea"]), b"tail"]
        total = write_atomic(tmp_path / "out.bin", pieces)
    finally:
        os.close(fd)
    expected = b"head" + bytes(range(16, 48)) + b"mid" + b"strea" + b"tail"
    assert (tmp_path / "out.bin").read_bytes() == expected and total == len(expected)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_links_its_own_file(tmp_path: Path) -> None:
    """Nameless outputs are linked in through /proc/self/fd: a child forked after its
    parent wrote links the file it wrote itself, not the parent's descriptor of that
    number."""
    write_atomic(tmp_path / "parent.dcm", b"parent")
    keep = os.open(tmp_path / "parent.dcm", os.O_RDONLY)  # a parent descriptor to confuse
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit status says whether its output is its own
            code = 1
            try:
                write_atomic(tmp_path / "child.dcm", b"child")
                code = 0 if (tmp_path / "child.dcm").read_bytes() == b"child" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(keep)
    assert os.waitstatus_to_exitcode(status) == 0
    write_atomic(tmp_path / "again.dcm", b"again")
    assert (tmp_path / "child.dcm").read_bytes() == b"child"
    assert (tmp_path / "again.dcm").read_bytes() == b"again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.dcm", "child.dcm",
                                                          "parent.dcm"]
    assert sys.platform != "linux" or not list(tmp_path.glob(f"*{fileio.TEMP_MARKER}*"))


def test_a_batch_pickles_whole() -> None:
    """Batches travel to workers as columns (Batch.__reduce__): every field and every item
    comes back equal, with the types it left with."""
    assert WorkItem._fields == ("src", "dst", "rel", "size")
    items = tuple(WorkItem(f"/in/P{i}/x.dcm", f"/out/P{i}/x.dcm", f"P{i}/x.dcm", 100 + i)
                  for i in range(5))
    for batch in (Batch(7, items, "/out", sync=False), Batch(8), Batch(9, items[:1])):
        for protocol in (2, pickle.HIGHEST_PROTOCOL):
            back = pickle.loads(pickle.dumps(batch, protocol))
            assert back == batch and type(back.items) is tuple
            assert all(type(item) is WorkItem for item in back.items)
    assert copy.deepcopy(Batch(7, items, "/out", sync=False)) == Batch(7, items, "/out", False)


def test_seconds_are_rounded_to_the_microsecond(tmp_path: Path) -> None:
    items = _inputs(tmp_path, {"a.dcm": 0o644})
    with output_policy(tmp_path / "out"):
        row = run_item(DumbEdit(DumbSettings(parse_dumb_ops([], [], ["10,10"], []))),
                       items[0].src, items[0].dst, "a.dcm", items[0].size)
    seconds = row["seconds"]
    assert isinstance(seconds, float) and 0 < seconds < 60
    assert seconds == round(seconds, 6) and len(repr(seconds).partition(".")[2]) <= 6


def test_a_small_input_s_pieces_are_written_joined_or_not(tmp_path: Path) -> None:
    """Below JOIN_BELOW the output's pieces are joined first; a piece that is no buffer
    (a Stream) leaves them as they are, and the output is the same bytes either way."""
    from tasks.engine import JOIN_BELOW, stage, write_staged

    src = tmp_path / "in.dcm"
    src.write_bytes(b"x" * 100)
    assert src.stat().st_size < JOIN_BELOW
    outputs = {"bytes": lambda data: [data[:10], memoryview(data)[10:], b"!"],
               "stream": lambda data: [data[:10], Stream(3, lambda: [b"abc"]), b"!"]}
    for name, whole in outputs.items():
        written = write_staged(stage(src, whole, lambda fd, size: None, 1 << 30),
                               tmp_path / f"{name}.dcm")
        expected = b"x" * 100 + b"!" if name == "bytes" else b"x" * 10 + b"abc!"
        assert (tmp_path / f"{name}.dcm").read_bytes() == expected and written == len(expected)


def test_a_split_output_s_header_pieces_are_joined_around_its_pixel_data(
        tmp_path: Path) -> None:
    """A split output (pixel data left in the input) keeps its pixel data a range of the
    input, and its hundreds of header pieces (a restored payload's elements) become one
    piece on each side: the same bytes, three pieces."""
    from tasks.engine import stage, write_staged

    src = tmp_path / "in.dcm"
    src.write_bytes(bytes(range(256)) * 64)

    def split(fd: int, size: int) -> list[fileio.Piece]:
        head = [bytes([i]) * 3 for i in range(200)]
        return [*head, FileRange(fd, 1000, size - 1000), b"tail", memoryview(b"!!")]

    staged = stage(src, lambda data: [data], split, 1)
    assert len(staged.pieces) == 3 and isinstance(staged.pieces[1], FileRange)
    assert staged.held == 600 + 6
    written = write_staged(staged, tmp_path / "out.dcm")
    expected = (b"".join(bytes([i]) * 3 for i in range(200)) + src.read_bytes()[1000:]
                + b"tail!!")
    assert (tmp_path / "out.dcm").read_bytes() == expected and written == len(expected)
