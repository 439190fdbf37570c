"""Directory runs never touch their input, keep the store private and out of the output, and
fail cleanly when the output cannot be written (permissions, a full disk).

Real command-line runs (``main([...])`` in process; a subprocess where permissions must bind
for root, or where the run is killed).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.state import state_dir
from pipeline.store import job_store_path
from tasks.fileio import TEMP_MARKER
from tests.conftest import ANONPIPE, REPO, Pki
from tests.pipeline.conftest import FILES, SECRET

#: root bypasses file permissions; without these capabilities a 0555 folder binds root too
DROP = (["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        if os.geteuid() == 0 else [])


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """rel -> (mode, mtime_ns, sha256 or "dir") of everything under ``root``, root included:
    a file added, removed, rewritten, touched or chmod-ed anywhere shows up."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[path.relative_to(root).as_posix()] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def irreversible(tmp_path: Path, *argv: str) -> list[str]:
    """An irreversible -e whose outputs equal the session's reference run (same secret)."""
    secret = tmp_path / "secret"
    if not secret.exists():
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
    return ["-e", "--irreversible", "--secret-file", str(secret), "-r", "--workers", "0", *argv]


def outputs_are_whole(out: Path, reference_out: Path) -> list[str]:
    """The files under ``out``: no temp file, each byte-identical to the uninterrupted run."""
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert not [f for f in files if TEMP_MARKER in f]
    for rel in files:
        assert (out / rel).read_bytes() == (reference_out / rel).read_bytes(), rel
    return files


# --------------------------------------------------------------------------- the store


def test_store_secret_and_report_are_private(archive: Path, pki: Pki, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "state" / "run.sqlite"
    rc, _ = run(capsys, "-c", str(pki.cert), "-e", "-r", "-E", "--workers", "0", "--store",
                str(store), str(archive), str(tmp_path / "out"))
    assert rc == 0
    default_out = tmp_path / "out-default"
    assert run(capsys, "-c", str(pki.cert), "-e", "-r", "-W", "--workers", "0", str(archive),
               str(default_out))[0] == 0
    private = [store, Path(f"{store}.secret"), Path(f"{store}.lock"),
               job_store_path(default_out), state_dir() / "secret",
               *sorted((state_dir() / "reports").glob("*.json"))]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (store.parent, state_dir(), state_dir() / "stores", state_dir() / "reports"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert not [p for p in (tmp_path / "out").rglob("*") if "sqlite" in p.name]


def test_a_store_or_secret_others_can_read_is_refused(archive: Path, pki: Pki, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "run.sqlite"
    argv = ["-c", str(pki.cert), "-e", "-r", "-E", "--workers", "0", "--store", str(store),
            str(archive), str(tmp_path / "out")]
    assert run(capsys, *argv)[0] == 0
    for path in (store, Path(f"{store}.secret")):
        path.chmod(0o644)
        rc, text = run(capsys, *argv)
        assert rc == 2, text
        assert f"{path} is readable by other users (mode 0644); run: chmod 600 {path}" in text
        path.chmod(0o600)
    assert run(capsys, *argv)[0] == 0


def test_the_store_is_never_inside_the_output(archive: Path, pki: Pki, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    before = snapshot(archive)
    for option, path, where in (("--store", out / "x.sqlite", "output"),
                                ("--store", out / "sub" / "x.sqlite", "output"),
                                ("--secret-file", out / "secret", "output"),
                                ("--store", archive / "x.sqlite", "input")):
        rc, text = run(capsys, "-c", str(pki.cert), "-e", "-r", option, str(path),
                       str(archive), str(out))
        assert rc == 2, text
        assert f"must not be inside the {where} folder" in text
        assert not out.exists()  # nothing written: not even the secret beside the store
    assert snapshot(archive) == before


def test_output_inside_or_equal_to_the_input_is_refused(
        archive: Path, pki: Pki, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path_factory.mktemp("elsewhere") / "s.sqlite"
    src = tmp_path / "in"
    shutil.copytree(archive, src)
    before = snapshot(src)
    for out, message in ((src, "is the input folder"),
                         (src / "P0001", "is inside the input folder"),
                         (src / "new" / "out", "is inside the input folder"),
                         (tmp_path, "is inside the output folder")):
        for mode in (["-c", str(pki.cert), "-e"], ["-k", str(pki.key), "-d"],
                     ["--dumb", "--remove", "10,10"]):
            rc, text = run(capsys, *mode, "-r", "--store", str(store), str(src), str(out))
            assert rc == 2 and message in text, (out, mode, text)
    assert snapshot(src) == before


# --------------------------------------------------------------------------- inputs


def test_inputs_are_never_modified(archive: Path, pki: Pki, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(archive)
    deid = tmp_path / "deid"
    kinds = {
        "-e": ["-c", str(pki.cert), "-e", str(archive), str(deid)],
        "-e --continue, resumed": ["-c", str(pki.cert), "-e", "--continue", str(archive),
                                   str(deid)],
        "--scan-only": ["-c", str(pki.cert), "-e", "--scan-only", str(archive),
                        str(tmp_path / "scan")],
        "--dry-run": ["-c", str(pki.cert), "-e", "--dry-run", str(archive),
                      str(tmp_path / "dry")],
        "--dumb": ["--dumb", "--empty", "10,10", "--remove", "10,20", str(archive),
                   str(tmp_path / "dumb")],
        "--dumb --dry-run": ["--dumb", "--empty", "10,10", "--dry-run", str(archive),
                             str(tmp_path / "dumb-dry")],
    }
    for kind, argv in kinds.items():
        rc, text = run(capsys, "-r", "-E", "--workers", "0", *argv)
        assert rc == 0, (kind, text)
        assert snapshot(archive) == before, kind
    assert not (tmp_path / "scan").exists() and not (tmp_path / "dry").exists()
    deid_before = snapshot(deid)
    for kind, argv in {"-d": ["-k", str(pki.key), "-d", str(deid), str(tmp_path / "back")],
                       "-d --scan-only": ["-k", str(pki.key), "-d", "--scan-only", str(deid),
                                          str(tmp_path / "back2")]}.items():
        rc, text = run(capsys, "-r", "-E", "--workers", "0", *argv)
        assert rc == 0, (kind, text)
        assert snapshot(deid) == deid_before, kind
    for rel in (p.relative_to(archive) for p in archive.rglob("*.dcm")):
        assert (tmp_path / "back" / rel).read_bytes() == (archive / rel).read_bytes()


def test_a_killed_run_leaves_the_input_alone(archive: Path, tmp_path: Path) -> None:
    before = snapshot(archive)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.pipeline.driver", str(archive), str(out),
         str(tmp_path / "store.sqlite"), "0", "0.02"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and sum(1 for _ in out.rglob("*.dcm")) >= 10:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    written = sum(1 for _ in out.rglob("*.dcm"))
    assert 10 <= written < FILES
    assert snapshot(archive) == before


# --------------------------------------------------------------------------- write failures


def test_a_read_only_output_folder(archive: Path, reference_out: Path, tmp_path: Path) -> None:
    """Permission denied mid-run: one clear reason, nothing partial; --continue goes on."""
    out = tmp_path / "out"
    (out / "P0002").mkdir(parents=True)
    (out / "P0002").chmod(0o555)
    before = snapshot(archive)
    try:
        for extra in ([], ["--continue"]):
            proc = subprocess.run([*DROP, ANONPIPE, *irreversible(tmp_path, *extra),
                                   str(archive), str(out)],
                                  capture_output=True, text=True, timeout=120, check=False)
            text = " ".join(proc.stderr.split())  # rich wraps long lines
            assert proc.returncode == 1 and "Traceback" not in text, text
            assert re.search(r"failed: OutputError: [^│(]*permission denied[^│(]* \(\d+\)", text,
                             re.IGNORECASE), text
            files = outputs_are_whole(out, reference_out)
            assert not [f for f in files if f.startswith("P0002/")]
            if not extra:
                assert "a file failed: no more batches are submitted" in text
            else:  # every other file done, the 40 of P0002 listed as failed
                assert len(files) == FILES - 40
                assert re.search(r"│ failed │ 40 │", text), text
    finally:
        (out / "P0002").chmod(0o755)
    assert snapshot(archive) == before


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root and a working ``mount`` needed)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_disk_full(archive: Path, reference_out: Path, full_disk: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    out = full_disk / "out"
    before = snapshot(archive)
    rc, text = run(capsys, *irreversible(tmp_path), str(archive), str(out))
    assert rc == 1 and "Traceback" not in text
    assert "no space left on device" in text.lower(), text
    files = outputs_are_whole(out, reference_out)
    assert 0 < len(files) < FILES
    rc, text = run(capsys, *irreversible(tmp_path, "--continue"), str(archive), str(out))
    assert rc == 1 and "no space left on device" in text.lower()
    assert re.search(r"failed: OutputError: ", text), text
    assert len(outputs_are_whole(out, reference_out)) < FILES
    assert snapshot(archive) == before
