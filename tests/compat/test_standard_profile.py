"""The PS3.15 E.1-1 (2026d) basic profile against the real gdcmanon and dciodvfy (issue 4).

* Token corpus: a unique token in every attribute of Table E.1-1 (top level and nested),
  private blocks, an overlay plane and a curve.  After ``anonpipe -e`` (default profile) no
  token survives outside (0400,0500); gdcmanon leaks most of them.
* dciodvfy reports no error on our output that it does not report on the original.
* gdcmanon ``-d`` restores our output except what the basic profile adds.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pydicom
import pytest

from pipeline.cli import main
from tasks.dicomio import read_dicom
from tests.conftest import Pki, pydicom_file
from tests.tokens import build_corpus, surviving

pytestmark = pytest.mark.gdcm


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    corpus = build_corpus()
    path = tmp_path_factory.mktemp("corpus") / "tokens.dcm"
    path.write_bytes(corpus.data)
    return corpus, path


def test_no_token_survives_the_basic_profile_gdcmanon_leaks_most(
        corpus_file, pki: Pki, tmp_path: Path, require_tool) -> None:  # type: ignore[no-untyped-def]
    corpus, src = corpus_file
    assert len(surviving(corpus.data, corpus)) == len(corpus.tokens)  # every token is findable
    ours, theirs = tmp_path / "ours.dcm", tmp_path / "theirs.dcm"
    assert main(["-c", str(pki.cert), "-e", str(src), str(ours)]) == 0
    leaked = surviving(ours.read_bytes(), corpus)
    assert leaked == {}
    out = pydicom.dcmread(ours)
    for parent, tag in corpus.numeric:  # binary numbers carry no token: checked by absence
        holder = out if parent == 0 else out[parent][0]
        assert tag not in holder
    require_tool("gdcmanon")
    proc = subprocess.run(["gdcmanon", "-c", str(pki.cert), "-e", str(src), str(theirs)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    gdcm_leaked = surviving(theirs.read_bytes(), corpus)
    print(f"\ntokens surviving: ours {len(leaked)} / gdcmanon {len(gdcm_leaked)} "
          f"of {len(corpus.tokens)}")
    assert len(gdcm_leaked) > len(corpus.tokens) * 0.8


def _errors(path: Path) -> set[str]:
    """dciodvfy's error lines, numbers and UIDs masked (they change by design)."""
    proc = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return {re.sub(r"\d+(\.\d+)*", "#", line.strip()) for line in lines
            if line.startswith("Error")}


#: pydicom test images dciodvfy can read: the broken and partial ones are left out, and
#: image_dfl.dcm too (dciodvfy does not inflate Deflated Explicit VR LE: it reports read
#: errors on the compressed bytes, which differ with every random CMS envelope)
DCIODVFY_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm",
                  "MR_small_bigendian.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm",
                  "test-SR.dcm", "reportsi.dcm", "examples_overlay.dcm", "waveform_ecg.dcm",
                  "JPEG2000.dcm", "liver_1frame.dcm", "SC_rgb_rle.dcm",
                  "examples_palette.dcm", "MR_small_RLE.dcm"]


@pytest.mark.parametrize("name", DCIODVFY_FILES)
def test_dciodvfy_finds_no_new_error(name: str, pki: Pki, tmp_path: Path,
                                     require_tool) -> None:  # type: ignore[no-untyped-def]
    require_tool("dciodvfy")
    original = pydicom_file(name)
    ours = tmp_path / "ours.dcm"
    assert main(["-c", str(pki.cert), "--allow-burned-in", str(original), str(ours)]) == 0
    new = _errors(ours) - _errors(original)
    assert not new, sorted(new)


@pytest.mark.parametrize("name", ["CT_small.dcm", "test-SR.dcm"])
def test_gdcmanon_introduces_errors_we_do_not(name: str, pki: Pki, tmp_path: Path,
                                              require_tool) -> None:  # type: ignore[no-untyped-def]
    """gdcmanon empties Type 1 attributes: documented for comparison."""
    require_tool("dciodvfy")
    require_tool("gdcmanon")
    original = pydicom_file(name)
    theirs = tmp_path / "theirs.dcm"
    proc = subprocess.run(["gdcmanon", "-c", str(pki.cert), "-e", str(original), str(theirs)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _errors(theirs) - _errors(original)


def _top_elements(path: Path) -> dict[int, bytes]:
    df = read_dicom(path.read_bytes())
    return {el.tag: df.body[el.start:el.end] for el in df.elements}


@pytest.mark.parametrize("options,left_behind", [
    ([], {0x00120064}),
    (["--retain-long-modified-dates", "--retain-safe-private"], {0x00120064, 0x00280303}),
])
def test_gdcmanon_reidentifies_basic_output_leaving_the_added_attributes(
        options: list[str], left_behind: set[int], pki: Pki, tmp_path: Path,
        require_tool) -> None:  # type: ignore[no-untyped-def]
    """gdcmanon -d removes (0012,0062), (0012,0063), (0400,0500) only: it leaves behind
    (0012,0064) De-identification Method Code Sequence and, with a Longitudinal option,
    (0028,0303) Longitudinal Temporal Information Modified.  Our -d removes them too."""
    require_tool("gdcmanon")
    original = pydicom_file("CT_small.dcm")
    deid, theirs, ours = tmp_path / "deid.dcm", tmp_path / "theirs.dcm", tmp_path / "ours.dcm"
    assert main(["-c", str(pki.cert), *options, str(original), str(deid)]) == 0
    proc = subprocess.run(["gdcmanon", "-k", str(pki.key), "-d", str(deid), str(theirs)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    before, after = _top_elements(original), _top_elements(theirs)
    assert set(after) - set(before) == left_behind
    # every original element is back (gdcmanon drops group lengths, which CT_small has)
    assert {t: v for t, v in before.items() if t & 0xFFFF} == {
        t: v for t, v in after.items() if t in before and t & 0xFFFF}
    assert main(["-k", str(pki.key), "-d", str(deid), str(ours)]) == 0
    assert ours.read_bytes() == original.read_bytes()


def test_explain_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--explain", str(pydicom_file("rtplan.dcm")), "--retain-uids"]) == 0
    text = capsys.readouterr().out
    assert "options: retain_uids" in text
    assert re.search(r"\(0020,000D\) StudyInstanceUID +UI K keep +.*retain_uids K", text)
    assert main(["--explain", str(pydicom_file("rtplan.dcm")), "-d"]) == 2
    assert main(["--explain", str(pydicom_file("rtplan.dcm")), "--profile", "gdcmanon",
                 "--clean-graphics"]) == 2
