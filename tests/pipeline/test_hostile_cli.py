"""Hostile inputs through the command line, single-file mode, both ways.

In process (``main([...])``) and as the installed ``anonpipe`` in a subprocess, every bad
input gives exit 1 and one line on stderr, ``anonpipe: NAME: reason``, writes nothing and
leaves the input's bytes alone.  Never a traceback, never an exit code >= 128; gdcmanon's
aborts (SIGABRT, 134) on the same inputs are asserted where it is installed.

The subprocess runs are started together by a module fixture (about 0.4 s of interpreter
start-up each) and checked one case per test.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.state import default_secret_path, load_secret
from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tests.conftest import ANONPIPE, Pki, run_command
from tests.fuzz.hostile import (
    BAD_INPUTS,
    TRUNCATED_SEEDS,
    TRUNCATION_STEP,
    explicit,
    modified_attributes,
    patient,
    seed,
    with_payload,
)

SOP = explicit(0x00080018, "UI", b"1.2.3.4.5")
#: cuts run as a subprocess too (all of them run in process): where gdcmanon aborts (194,
#: 291), inside a sequence or text (1000), inside the pixel data (gdcmanon zero-fills 20000)
SUBPROCESS_CUTS = {"CT_small.dcm": (194, 291, 20000), "MR_small_implicit.dcm": (194, 291),
                   "rtplan.dcm": (194, 291)}
#: BAD_INPUTS run as a subprocess too: one per kind (all of them run in process)
SUBPROCESS_BAD = ("not-dicom", "dicm-without-meta", "huge-OB-length", "nested-10000-undefined-items",
                  "corrupt-deflate", "dicomdir")


@dataclass
class Case:
    """One bad single-file call: the argv (``{src}``, ``{out}``, ``{cert}``, ``{key}``
    placeholders), the input's file name and the words its one stderr line must hold."""

    id: str
    argv: list[str]
    name: str
    reason: str | None
    make: Callable[[Path], None] = field(repr=False)  # creates the input at the given path
    rc: int = 1


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _bytes(build: Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(build())


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "deleted-long-ago.dcm")


ENCRYPT = ["-c", "{cert}", "{src}", "{out}"]
DECRYPT = ["-d", "-k", "{key}", "{src}", "{out}"]


def _header_corruption(offset: int, patch: bytes) -> Callable[[], bytes]:
    def build() -> bytes:
        data = bytearray(seed("CT_small.dcm"))
        data[offset:offset + len(patch)] = patch
        return bytes(data)
    return build


# CT_small: the data set's first elements, (0008,0005) CS and (0008,0008) CS, start at bytes
# 336 and 354 (explicit VR LE: VR at +4, 2-byte length at +6).  A bad VR on the very first
# element would make the data set implicit VR (tolerated, as pydicom does).
CASES: list[Case] = [
    Case("empty", ENCRYPT, "empty.dcm", "empty file", _write(b"")),
    *[Case(f"bad-{b.id}", ENCRYPT, f"{b.id}.dcm", b.match, _bytes(b.build)) for b in BAD_INPUTS],
    Case("header-length-ffff", ENCRYPT, "len.dcm", None, _bytes(_header_corruption(342, b"\xff\xff"))),
    Case("header-vr-zeroed", ENCRYPT, "vr.dcm", "invalid VR", _bytes(_header_corruption(358, b"\0\0"))),
    Case("header-tag-is-item", ENCRYPT, "tag.dcm", "unexpected item",
         _bytes(_header_corruption(336, b"\xfe\xff\x00\xe0"))),
    Case("fifo", ENCRYPT, "pipe.dcm", "not a regular file (a FIFO)", _fifo),
    Case("plain-file-to-reidentify", DECRYPT, "plain.dcm", "not de-identified",
         _bytes(lambda: seed("CT_small.dcm"))),
]
for _name, _cuts in SUBPROCESS_CUTS.items():
    for _cut in _cuts:
        CASES.append(Case(f"cut-{_name}-{_cut}", ENCRYPT, f"cut{_cut}-{_name}", "truncated",
                          _bytes(lambda n=_name, c=_cut: seed(n)[:c])))
CASES_BY_ID = {case.id: case for case in CASES}

#: -d on de-identified files whose payload was replaced: (id, plaintext or None for a
#: damaged CMS, words of the reason)
TAMPERED = [
    ("payload-two-items", modified_attributes(SOP, SOP), "has 2 items, expected 1"),
    ("payload-without-sop-instance-uid", modified_attributes(patient()), "(0008,0018)"),
    ("payload-wrong-outer-tag", modified_attributes(SOP, outer=0x04000551),
     "not one Modified Attributes Sequence"),
    ("payload-corrupt-cms", None, "cannot decrypt the payload"),
]


@dataclass
class Setup:
    folder: Path
    values: dict[str, str]


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _prepare(root: Path, case_id: str, make: Callable[[Path], None], name: str,
             pki: Pki) -> Setup:
    folder = root / case_id
    (folder / "in").mkdir(parents=True)
    (folder / "out").mkdir()
    src = folder / "in" / name
    make(src)
    return Setup(folder, {"src": str(src), "out": str(folder / "out" / name),
                          "cert": str(pki.cert), "key": str(pki.key)})


def _bad_padding(envelope: bytes) -> bytes:
    """The envelope with the last byte of its next-to-last cipher block flipped: in CBC that
    flips the last plaintext byte, the padding length (0x10 for a 64-byte plaintext), to
    0xEF, which no block size allows.  Every time: zeroing blocks instead gave a random
    last block whose padding passed about once in 256 runs."""
    damaged = bytearray(envelope)  # the encrypted content is the envelope's last element
    damaged[-17] ^= 0xFF
    return bytes(damaged)


def _tampered_maker(plaintext: bytes | None, pki: Pki) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        encryptor = EnvelopeEncryptor(certificates=(load_certificate(pki.cert),))
        deid = deidentify_bytes(seed("CT_small.dcm"),
                                DeidentifySettings(secret=b"s" * 32, encryptor=encryptor))
        cms = None if plaintext is not None else _bad_padding(encryptor.encrypt(b"x" * 64))
        path.write_bytes(with_payload(deid, plaintext, encryptor, cms=cms))
    return make


ALL_IDS = [c.id for c in CASES] + [t[0] for t in TAMPERED]
SUBPROCESS_IDS = [i for i in ALL_IDS if not i.startswith("bad-") or i[4:] in SUBPROCESS_BAD]


def _case(case_id: str, pki: Pki) -> Case:
    if case_id in CASES_BY_ID:
        return CASES_BY_ID[case_id]
    plaintext, reason = next((p, r) for i, p, r in TAMPERED if i == case_id)
    return Case(case_id, DECRYPT, "tampered.dcm", reason, _tampered_maker(plaintext, pki))


def _argv(case: Case, setup: Setup) -> list[str]:
    return [a.format(**setup.values) for a in case.argv]


def check_outcome(case: Case, setup: Setup, rc: int, stderr: str, before: str | None) -> None:
    assert 0 <= rc < 128, f"exit {rc}: {stderr}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert rc == case.rc, stderr
    assert lines[0].startswith(f"anonpipe: {case.name}: "), lines[0]
    if case.reason is not None:
        assert case.reason in lines[0], lines[0]
    assert list((setup.folder / "out").iterdir()) == []  # no output, no temp file
    assert _sha(Path(setup.values["src"])) == before  # the input is untouched


# --------------------------------------------------------------------------- subprocess


@pytest.fixture(scope="module")
def subprocess_runs(pki: Pki, tmp_path_factory: pytest.TempPathFactory,
                    ) -> dict[str, tuple[Setup, subprocess.CompletedProcess[str], str | None]]:
    """Every case through the installed command, four at a time."""
    root = tmp_path_factory.mktemp("hostile-cli-sub")
    # the per-user secret made once, before the parallel runs: otherwise whichever run comes
    # first announces it, beside the one line its case expects
    default_secret_path().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    load_secret(default_secret_path(), create=True)

    def run(case_id: str) -> tuple[str, tuple[Setup, subprocess.CompletedProcess[str], str | None]]:
        case = _case(case_id, pki)
        setup = _prepare(root, case_id, case.make, case.name, pki)
        before = _sha(Path(setup.values["src"]))
        proc = run_command("anonpipe", *_argv(case, setup), timeout=60)
        return case_id, (setup, proc, before)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, SUBPROCESS_IDS))


@pytest.mark.parametrize("case_id", SUBPROCESS_IDS)
def test_installed_command_refuses(case_id: str, pki: Pki, subprocess_runs: dict) -> None:  # type: ignore[type-arg]
    setup, proc, before = subprocess_runs[case_id]
    check_outcome(_case(case_id, pki), setup, proc.returncode, proc.stderr, before)


# --------------------------------------------------------------------------- in process


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case_id", ALL_IDS)
def test_main_refuses(case_id: str, pki: Pki, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    case = _case(case_id, pki)
    setup = _prepare(tmp_path, case_id, case.make, case.name, pki)
    before = _sha(Path(setup.values["src"]))
    outcome: list[tuple[int, str]] = []
    # a thread, so that a hang (a FIFO opened for reading) fails the test instead of the run
    worker = threading.Thread(target=lambda: outcome.append(_main(_argv(case, setup), capsys)),
                              daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        with open(setup.values["src"], "wb"):  # a writer unblocks a FIFO reader
            pass
        pytest.fail("main() blocked on the input")
    rc, stderr = outcome[0]
    check_outcome(case, setup, rc, stderr, before)


@pytest.mark.parametrize("name", TRUNCATED_SEEDS)
def test_main_on_every_97th_truncation(name: str, pki: Pki, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Every cut is exit 1 with one line, or exactly a top-level element end (a complete,
    shorter data set: see test_hostile_inputs), whose output then carries no pixel data."""
    data = seed(name)
    src, out = tmp_path / name, tmp_path / "out" / name
    accepted = []
    for cut in range(0, len(data), TRUNCATION_STEP):
        src.write_bytes(data[:cut])
        rc, stderr = _main(["-c", str(pki.cert), str(src), str(out)], capsys)
        assert "Traceback" not in stderr and 0 <= rc < 128
        if rc == 0:
            accepted.append(cut)
            assert len(out.read_bytes()) < len(data)
            out.unlink()
            continue
        assert rc == 1 and len(stderr.strip().splitlines()) == 1, stderr
        assert stderr.startswith(f"anonpipe: {name}: ")
        assert not out.exists()
        assert src.read_bytes() == data[:cut]
    assert accepted == {"CT_small.dcm": [2328, 3686, 6208]}.get(name, [])


def test_dangling_symlink(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before any work with one line (exit 2: the input path is checked with the
    other arguments, as gdcmanon's "Could not find file"); the engine itself says
    "dangling symbolic link" (test_hostile_inputs) for links found in a tree."""
    link = tmp_path / "gone.dcm"
    _dangling(link)
    argv = ["-c", str(pki.cert), str(link), str(tmp_path / "out.dcm")]
    rc, stderr = _main(argv, capsys)
    proc = subprocess.run([ANONPIPE, *argv], capture_output=True, text=True, timeout=60,
                          check=False)
    for code, err in ((rc, stderr), (proc.returncode, proc.stderr)):
        assert code in (1, 2) and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and "gone.dcm" in err
    assert not (tmp_path / "out.dcm").exists()


#: As root (CI), drop the capabilities that let root read a chmod 000 file, so the check is real.
WITHOUT_DAC = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
               if os.geteuid() == 0 else [])


def test_unreadable_file(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "locked.dcm"
    src.write_bytes(seed("CT_small.dcm"))
    src.chmod(0)
    try:
        argv = ["-c", str(pki.cert), str(src), str(tmp_path / "out.dcm")]
        proc = subprocess.run([*WITHOUT_DAC, ANONPIPE, *argv], capture_output=True, text=True,
                              timeout=60, check=False)
        results = [(proc.returncode, proc.stderr)]
        if os.geteuid() != 0:  # in-process only where the permission bits bind this process
            results.append(_main(argv, capsys))
    finally:
        src.chmod(0o600)
    for code, err in results:
        assert code == 1 and err.strip() == "anonpipe: locked.dcm: permission denied"
    assert not (tmp_path / "out.dcm").exists()


# --------------------------------------------------------------------------- gdcmanon


def _aborted(returncode: int) -> bool:
    return returncode in (-signal.SIGABRT, 128 + signal.SIGABRT)


@pytest.mark.gdcm
def test_gdcmanon_aborts_where_we_refuse(require_tool: Callable[[str], str], pki: Pki,
                                         subprocess_runs: dict) -> None:  # type: ignore[type-arg]
    """gdcmanon 3.0.21: SIGABRT on cuts at 194 and 291 bytes and on a two-item payload,
    exit 0 with zero-filled pixels on a cut at 20000; we exit 1 on each."""
    gdcmanon = require_tool("gdcmanon")
    checked = 0
    for case_id in [c for c in SUBPROCESS_IDS if c.startswith("cut-")] + ["payload-two-items"]:
        setup, ours, _ = subprocess_runs[case_id]
        assert ours.returncode == 1
        argv = _argv(_case(case_id, pki), setup)
        theirs_out = setup.folder / "gdcm.dcm"
        argv[-1] = str(theirs_out)
        proc = subprocess.run([gdcmanon, *argv], capture_output=True, timeout=60, check=False)
        cut = case_id.rsplit("-", 1)[-1]
        if case_id == "payload-two-items" or cut in ("194", "291"):
            assert _aborted(proc.returncode), (case_id, proc.returncode)
            checked += 1
        elif case_id == "cut-CT_small.dcm-20000":
            assert proc.returncode == 0  # silently zero-filled
            assert theirs_out.stat().st_size > 20000
            checked += 1
    assert checked == 8
