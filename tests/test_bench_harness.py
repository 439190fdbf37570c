"""``make bench`` checks what it timed: a run whose output is wrong or whose command failed
cannot count towards a target (benchmarks/run.py, ``check_output`` and ``targets``)."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO, Pki, pydicom_file

FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> Path:
    for i, name in enumerate(FILES):
        target = root / f"P{i}" / name
        target.parent.mkdir(parents=True)
        shutil.copyfile(pydicom_file(name), target)
    return root


def _checked(bench: ModuleType, command: str, archive: Path, output: Path) -> list[str]:
    result = bench.Result("tiny", command, len(FILES), 1.0)
    bench.check_output(result, archive, output)
    return list(result.problems)


def test_a_faithful_reidentification_passes_and_a_changed_byte_does_not(
        bench: ModuleType, tmp_path: Path) -> None:
    archive = _tree(tmp_path / "archive")
    output = tmp_path / "reid"
    shutil.copytree(archive, output)
    assert _checked(bench, "anonpipe -d", archive, output) == []
    changed = output / "P1" / "MR_small.dcm"
    data = bytearray(changed.read_bytes())
    data[-1] ^= 0xFF
    changed.write_bytes(bytes(data))
    assert _checked(bench, "anonpipe -d", archive, output) == [
        "1 re-identified files differ from the originals (first: P1/MR_small.dcm)"]


def test_missing_extra_and_unchanged_outputs_are_problems(bench: ModuleType,
                                                          tmp_path: Path) -> None:
    archive = _tree(tmp_path / "archive")
    output = tmp_path / "out"
    shutil.copytree(archive, output)
    assert _checked(bench, "anonpipe -e", archive, output) == [
        "3 outputs are their input unchanged"]
    assert _checked(bench, "cp -r", archive, output) == []  # a copy is what cp must give
    (output / "P0" / "CT_small.dcm").unlink()
    (output / "P0" / ".CT_small.dcm.tmp").write_bytes(b"left over")
    assert _checked(bench, "gdcmanon -e", archive, output) == [
        "1 of 3 files have no output", "1 unexpected files in the output"]
    assert _checked(bench, "anonpipe -e", archive, tmp_path / "nowhere") == ["no output folder"]


def test_an_unsound_row_does_not_meet_its_target(bench: ModuleType) -> None:
    def row(command: str, wall: float, returncode: int = 0) -> object:
        result = bench.Result("small20k", command, 20000, 514.0)
        result.samples.append(bench.Sample(wall, wall, 50.0, 80.0, returncode, wall, 0.0))
        return result

    fast = [row("gdcmanon -e", 12.0), row("anonpipe -e", 6.0)]
    assert {label: met for label, met, _ in bench.targets(fast)}[
        "20k: anonpipe >= 1.5x faster than gdcmanon"]
    failed = [row("gdcmanon -e", 12.0), row("anonpipe -e", 6.0, returncode=1)]
    (_, met, detail), = [c for c in bench.targets(failed) if c[0].startswith("20k")]
    assert not met
    assert "unsound, not counted: small20k anonpipe -e" in detail


def test_back_to_back_pairs_run_both_commands_and_judge_the_ct_target(
        bench: ModuleType, tmp_path: Path, pki: Pki) -> None:
    """The pairs run the real ``cp -r`` and ``anonpipe -e`` (the first pair unmeasured),
    check both outputs, leave none behind, and the CT target compares each anonpipe row
    with the ``cp -r`` of its own pairs."""
    archive = _tree(tmp_path / "archive")
    work, outputs = tmp_path / "work", tmp_path / "outputs"
    work.mkdir()
    outputs.mkdir()
    env = {**os.environ, "ANONPIPE_STATE_DIR": str(work / "state")}
    rows = bench.back_to_back("ct960", archive, work, outputs, 2, pki.cert, env)
    assert [r.command for r in rows] == ["cp -r, back to back", "anonpipe -e, back to back"]
    assert all(len(r.samples) == 2 and r.sound for r in rows)
    assert rows[1].checked == "one output per input, none equal to its input"
    assert not any(outputs.iterdir())
    (_, met, detail), = [c for c in bench.targets(rows) if "back to back" in c[0]]
    assert met == (rows[1].wall <= 2 * rows[0].wall)
    assert detail.startswith(f"{rows[1].wall / rows[0].wall:.2f}x")


def test_the_floor_writes_every_file_as_a_copy_and_is_set_beside_cp(
        bench: ModuleType, tmp_path: Path) -> None:
    """``benchmarks/floor.py`` makes the system calls of a run for real: every file gets its
    output (head written, the rest copied: the input's bytes), and the floor's line
    compares it with ``cp -r`` and anonpipe with it."""
    archive = _tree(tmp_path / "archive")
    argv, output = bench.commands(archive, tmp_path, tmp_path, tmp_path / "c.pem",
                                  tmp_path / "k.pem", False, False)[bench.FLOOR]
    subprocess.run(argv, check=True)
    assert _checked(bench, bench.FLOOR, archive, output) == []
    for rel in bench.relative_files(archive):
        assert (output / rel).read_bytes() == (archive / rel).read_bytes()

    def row(command: str, wall: float) -> object:
        result = bench.Result("ct960", command, 960, 511.0)
        result.samples.append(bench.Sample(wall, wall * 2, 50.0, 80.0, 0, wall, wall))
        return result

    lines = bench.floors([row("cp -r", 0.2), row(bench.FLOOR, 0.3), row("anonpipe -e", 0.6)])
    assert lines == [("ct960: floor 0.300 s = 1.50x cp -r; anonpipe -e 0.600 s = 2.00x the "
                     "floor (CPU 0.625 vs 1.250 ms/file)")]


def test_each_repetition_starts_the_round_one_writer_later(bench: ModuleType) -> None:
    """Every writer takes each place of the round in turn (the first writers after a
    deletion pay more on an ext4 without a journal); re-identifications stay last, after
    the de-identification they read."""
    order = ["cp -r", "gdcmanon -e", "anonpipe -e", "anonpipe -d", "gdcmanon -d"]
    rounds = [bench.rotated(order, rep) for rep in range(4)]
    assert rounds[0] == order
    assert rounds[1] == ["gdcmanon -e", "anonpipe -e", "cp -r", "anonpipe -d", "gdcmanon -d"]
    assert rounds[3] == order  # three writers: every third round alike
    writers = order[:3]
    for label in writers:
        assert sorted(r.index(label) for r in rounds[:3]) == [0, 1, 2]


@pytest.fixture(scope="module")
def pagecache() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pagecache", REPO / "benchmarks" / "pagecache.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_cache_to_reset_quiesce_only_writes_back(bench: ModuleType,
                                                           tmp_path: Path) -> None:
    assert bench.quiesce(_tree(tmp_path / "archive"), None) == 0


def test_a_reset_drops_the_cache_and_reads_back_the_archive_and_the_programs(
        pagecache: ModuleType, tmp_path: Path) -> None:
    """Run as root (as ``make test`` is where it installs packages): after a reset the
    archive's and the remembered programs' pages are in the cache again and nothing
    else of theirs is; without root the harness knows it may not drop the cache."""
    assert pagecache.available() == os.access("/proc/sys/vm/drop_caches", os.W_OK)
    if not pagecache.available():
        return
    archive = _tree(tmp_path / "archive")
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / "module.pyc").write_bytes(b"\x01" * 10000)
    other = tmp_path / "other.bin"
    other.write_bytes(b"\x02" * 10000)
    os.sync()
    cache = pagecache.PageCache([programs])
    assert cache.remember() == 1
    size = sum(path.stat().st_size for path in archive.rglob("*") if path.is_file())
    assert cache.reset(archive) == size + 10000
    assert pagecache.cached(str(programs / "module.pyc"))
    assert all(pagecache.cached(str(path)) for path in archive.rglob("*.dcm"))
    assert not pagecache.cached(str(other))


def test_a_result_names_the_commit_its_changes_and_the_python_it_measured(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_provenance",
                                                  REPO / "benchmarks" / "provenance.py")
    assert spec is not None and spec.loader is not None
    provenance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provenance)
    repo = tmp_path / "repo"
    repo.mkdir()
    git = partial(subprocess.run, check=True, capture_output=True, text=True, cwd=repo)
    git(["git", "init", "-q"])
    (repo / "a.txt").write_text("one\n")
    git(["git", "add", "a.txt"])
    git(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "a"])
    head = git(["git", "rev-parse", "HEAD"]).stdout.strip()
    assert provenance.code_version(repo) == {"commit": head, "changed": False}
    (repo / "a.txt").write_text("two\n")
    assert provenance.code_version(repo) == {"commit": head, "changed": True}
    assert provenance.code_version(tmp_path / "nowhere") == {"commit": None, "changed": None}
    ran = provenance.interpreter()  # the build that ran it, not only its version
    assert ran == {"python": platform.python_version(),
                   "python_executable": os.path.realpath(sys.executable)}
