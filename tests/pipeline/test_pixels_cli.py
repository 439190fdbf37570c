"""--pixels, --allow-burned-in, --pixels-preview and --explain on the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest

from pipeline.cli import main
from tests import pixel_images
from tests.conftest import Pki


def _exit(args: list[str]) -> int | str | None:
    """The exit status, whether main returns it or argparse exits."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    pixel_images.secondary_capture(folder / "sc.dcm")
    pixel_images.ct_plain(folder / "ct.dcm")
    return folder


def test_default_run_cleans_and_previews(archive: Path, pki: Pki, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    preview = tmp_path / "preview"
    out = tmp_path / "out"
    assert main(["-c", str(pki.cert), "--workers", "0", "--pixels-preview", str(preview),
                 str(archive), str(out)]) == 0
    report = json.loads(Path(re.findall(r"report: (\S+)", capsys.readouterr().err)[-1])
                        .read_text())
    assert report["counts"]["pixels"] == {"rule": 0, "ocr": 1, "checked": 0,
                                          "refused_after_verification": 0}
    assert report["options"]["pixels"] == "clean"
    assert pydicom.dcmread(out / "sc.dcm").BurnedInAnnotation == "NO"
    assert "BurnedInAnnotation" not in pydicom.dcmread(out / "ct.dcm")
    previews = list(preview.glob("*.png"))
    assert [p.stem for p in previews] == [pydicom.dcmread(out / "sc.dcm").SOPInstanceUID]


def test_refuse_policy_fails_the_flagged_file_only(archive: Path, pki: Pki, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    # pass 1 finds it; with --continue a refused file is skipped (exit 0), without it the
    # run stops before writing anything (exit 1)
    assert main(["-c", str(pki.cert), "--workers", "0", "--continue", "--pixels", "refuse",
                 str(archive), str(out)]) == 0
    assert (out / "ct.dcm").exists() and not (out / "sc.dcm").exists()
    assert "refused: UnsupportedFileError: burned-in annotation" in capsys.readouterr().err
    assert main(["-c", str(pki.cert), "--workers", "0", "--pixels", "refuse",
                 str(archive), str(tmp_path / "out2")]) == 1
    assert "--pixels refuse" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


@pytest.mark.parametrize("args,message", [
    (["--allow-burned-in", "--pixels", "clean"], "--allow-burned-in is --pixels keep"),
    (["--pixels", "keep", "--pixels-preview", "p"], "--pixels-preview shows what"),
    (["--pixels", "blank"], "invalid choice"),
    (["--pixels-preview", "{out}/preview"], "must not be inside the output folder"),
])
def test_pixel_options_are_checked(args: list[str], message: str, archive: Path, pki: Pki,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [arg.replace("{out}", str(tmp_path / "out")) for arg in args]
    assert _exit(["-c", str(pki.cert), *args, str(archive), str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_explain_shows_the_boxes(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit(["--explain", str(archive / "sc.dcm")]) == 0
    text = capsys.readouterr().out
    assert "pixels: OCR boxes (frames 1 read, blanked on all 1): [x=" in text
    assert "pixels: verified by OCR on frames 1: no text left" in text
    assert "4820193" not in text and "DOE" not in text


def test_default_run_cleans_every_drawn_text_kind_and_d_restores_each(
        pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every kind of test image with names, IDs and dates drawn into its pixels (ultrasound
    RGB native, RLE, JPEG Baseline, cines native and JPEG, mid-grey text, secondary captures
    of 12 and 16 bits in four syntaxes, dark text on a light panel, XA with Burned In
    Annotation YES): the default run writes every one, cleaned, and -d restores each input
    byte for byte.  (What OCR reads in the outputs: tests/tasks/test_pixels.py.)"""
    folder = tmp_path / "in"
    folder.mkdir()
    made = {kind: make(folder / f"{kind}.dcm") for kind, make in pixel_images.ALL.items()}
    out = tmp_path / "out"
    assert main(["-c", str(pki.cert), "--workers", "0", str(folder), str(out)]) == 0
    report = json.loads(Path(re.findall(r"report: (\S+)", capsys.readouterr().err)[-1])
                        .read_text())
    pixels = report["counts"]["pixels"]
    assert pixels["rule"] + pixels["ocr"] == len(made), pixels
    assert pixels["refused_after_verification"] == 0
    for path in made.values():
        cleaned = pydicom.dcmread(out / path.name)
        assert cleaned.BurnedInAnnotation == "NO" and cleaned.PixelData != pydicom.dcmread(
            path).PixelData
    back = tmp_path / "back"
    assert main(["-k", str(pki.key), "-d", "--workers", "0", str(out), str(back)]) == 0
    assert all((back / path.name).read_bytes() == path.read_bytes() for path in made.values())
