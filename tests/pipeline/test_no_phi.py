"""PHI never escapes by accident: the token corpus through every directory mode and log level.

``tests.tokens`` puts a unique token in every attribute of PS3.15 Table E.1-1 (top level and
nested).  A tree of corpus files, plus bad files that make error lines and a folder named like
a patient, is run through ``-e``, ``-d`` and ``--dumb`` with ``--continue`` at ``-E``, ``-W``,
the default and ``-V``: no token, and not the folder's name, may appear on stdout, on stderr
or in the run report.  With ``-D`` they may, and do (the positive control: the check can see
a leak).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.state import state_dir
from tests.conftest import Pki
from tests.tokens import build_corpus

#: a folder named after a patient: a path component, never a value, that must not show
FOLDER = "DOE_JANE_MRN0471143"
LEVELS = (["-E"], ["-W"], [], ["-V"])
MODES = ("e", "d", "dumb")


@pytest.fixture(scope="module")
def corpus_tokens() -> dict[bytes, str]:
    return build_corpus().tokens


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> dict[str, Path]:
    """Inputs per mode: corpus files, a truncated one, one that is not DICOM (in FOLDER)."""
    data = build_corpus().data
    base = tmp_path_factory.mktemp("phi")
    src = base / "in"
    (src / FOLDER).mkdir(parents=True)
    (src / "a.dcm").write_bytes(data)
    (src / FOLDER / "b.dcm").write_bytes(data)
    (src / FOLDER / "c.dcm").write_bytes(data[: len(data) // 2])  # truncated in a sequence
    (src / FOLDER / "notes.dcm").write_bytes(b"Jane Doe called, not DICOM")
    # -d needs de-identified inputs: the corpus de-identified, plus an original (not
    # de-identified: an error) and the same bad files
    deid = base / "deid"
    assert main(["-c", str(pki.cert), "-e", "-r", "-E", "--continue", "--workers", "0",
                 str(src), str(deid)]) == 1  # c.dcm failed (notes.dcm: not DICOM)
    shutil.copyfile(src / "a.dcm", deid / FOLDER / "original.dcm")
    for name in ("c.dcm", "notes.dcm"):
        shutil.copyfile(src / FOLDER / name, deid / FOLDER / name)
    return {"e": src, "dumb": src, "d": deid}


def _argv(mode: str, pki: Pki) -> list[str]:
    return {"e": ["-c", str(pki.cert), "-e"], "d": ["-k", str(pki.key), "-d"],
            "dumb": ["--dumb", "--empty", "10,10", "--replace", "10,20=ANON"]}[mode]


def _strings(value: Any) -> Iterator[str]:
    """Every string of a JSON document, keys included (numbers are counts and timings)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _run(mode: str, level: list[str], trees: dict[str, Path], pki: Pki, out: Path,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI; returns (exit code, stdout + stderr, the strings of the run report)."""
    reports = state_dir() / "reports"
    before = set(reports.glob("*.json")) if reports.exists() else set()
    capsys.readouterr()
    rc = main([*_argv(mode, pki), *level, "-r", "--continue", "--workers", "0",
               str(trees[mode]), str(out)])
    captured = capsys.readouterr()
    new = sorted(set(reports.glob("*.json")) - before)
    assert len(new) == 1, new
    report = "\n".join(_strings(json.loads(new[0].read_text())))
    return rc, captured.out + captured.err, report


def _found(text: str, tokens: dict[bytes, str]) -> dict[str, str]:
    return {t.decode(): where for t, where in tokens.items() if t.decode() in text}


@pytest.mark.parametrize("mode", MODES)
def test_no_token_in_output_or_report(mode: str, trees: dict[str, Path], pki: Pki,
                                      corpus_tokens: dict[bytes, str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    tokens = {**corpus_tokens, FOLDER.encode(): "folder name", b"Jane Doe": "file content"}
    for level in LEVELS:
        rc, console, report = _run(mode, level, trees, pki, tmp_path / f"out{level}", capsys)
        assert rc in (0, 1), console  # 1: -d and --dumb fail files pass 1 cannot reject
        assert "Traceback" not in console
        assert _found(console, tokens) == {}, (level, console)
        assert _found(report, tokens) == {}, (level, report)
        if level != ["-E"]:
            assert "DicomFormatError" in console  # the errors are there, without a path


@pytest.mark.parametrize("mode", MODES)
def test_debug_shows_them(mode: str, trees: dict[str, Path], pki: Pki,
                          corpus_tokens: dict[bytes, str], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """The positive control: the same check sees the folder (and, for -e, values) with -D."""
    rc, console, report = _run(mode, ["-D"], trees, pki, tmp_path / "out", capsys)
    assert rc in (0, 1)
    assert f"{FOLDER}/notes.dcm" in console and f"{FOLDER}/notes.dcm" in report
    if mode == "e":  # pass 1 findings at -D: the shared SOP Instance UID, the patient
        assert _found(console, corpus_tokens), console
