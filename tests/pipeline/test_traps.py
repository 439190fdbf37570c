"""What a new user trips over, run as the user runs it: the installed ``anonpipe`` in a
subprocess, on sample archives with bad files, checking the words, the numbers and the exit
code together."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from functools import partial
from pathlib import Path

import pytest

from pipeline.sample import generate_archive
from tests.conftest import ANONPIPE, Pki, run_command

run = partial(run_command, "anonpipe", timeout=180)


def flat(text: str) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 DICOM files in patient folders, a text file, a burned-in file and two cut short
    (in the header, and in the pixel data)."""
    root = tmp_path_factory.mktemp("mixed") / "in"
    generate_archive(root, patients=2, studies=1, series=2, instances=3, seed=3)
    sample = root / "P0001/ST01/SE01/IM0001.dcm"
    data = sample.read_bytes()
    (root / "P0001" / "readme.txt").write_text("exported by the PACS")
    (root / "P0002" / "cut.dcm").write_bytes(data[:700])  # cut inside the header
    (root / "P0002" / "short.dcm").write_bytes(data[:-400])  # cut in the pixel data
    import pydicom

    ds = pydicom.dcmread(sample)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(root / "P0002" / "burned.dcm")
    return root


def test_folder_of_folders_without_r_says_r_and_fails(mixed: Path, tmp_path: Path) -> None:
    proc = run("--irreversible", str(mixed), str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "has no file at its top but 2 sub-folders hold DICOM files: -r descends" in (
        flat(proc.stderr))
    assert not (tmp_path / "out").exists()


def test_counts_add_up_in_one_vocabulary(mixed: Path, tmp_path: Path) -> None:
    """Without --continue: nothing written, exit 1, every file named by its outcome; the
    table, the reason lines, the report and the failed list agree."""
    proc = run("--irreversible", "-r", "--pixels", "refuse", str(mixed), str(tmp_path / "out"))
    text = flat(proc.stderr)
    assert proc.returncode == 1, text
    assert "4 files cannot be processed (1 not DICOM, 1 refused, 2 failed): nothing is written" \
        in text
    assert "pass 1 reads headers and element lengths" in text  # what it cannot see, it says
    for name, n in (("written", 0), ("already done", 0), ("not DICOM", 1), ("refused", 1),
                    ("failed", 2)):
        assert re.search(rf"│ {name}\s+│\s+{n} │", text), (name, text)
    assert "not DICOM: DicomFormatError: not a DICOM file" in text
    assert "refused: UnsupportedFileError: burned-in annotation: Burned In Annotation " \
        "(0028,0301) is YES; --pixels refuse" in text
    assert re.search(r"failed: DicomFormatError: truncated: element \(7FE0,0010\) declares "
                     r"\d+ bytes, only \d+ remain \(1\)", text), text
    report = json.loads(Path(re.findall(r"report: (\S+)", text)[-1]).read_text())
    counts = report["counts"]
    assert (counts["written"], counts["not_dicom"], counts["refused"], counts["failed"]) == (
        0, 1, 1, 2)
    assert sum(r["files"] for r in report["reasons"]) == 4
    assert counts["not_attempted"] == 12 and report["findings"]["files"] == 16
    assert "the run stopped: 12 more files were not attempted" in text
    listed = Path(report["failed_list"])
    assert f"files not written (paths, 0600): {listed}" in text
    assert stat.S_IMODE(listed.stat().st_mode) == 0o600
    rows = [line.split("\t") for line in listed.read_text().splitlines()]
    assert sorted((r[0], r[1]) for r in rows) == [
        ("P0001/readme.txt", "not DICOM"), ("P0002/burned.dcm", "refused"),
        ("P0002/cut.dcm", "failed"), ("P0002/short.dcm", "failed")]
    assert "readme.txt" not in json.dumps(report)  # paths stay out of the report

    goes_on = run("--irreversible", "-r", "--continue", "--pixels", "refuse", str(mixed),
                  str(tmp_path / "out"))
    text = flat(goes_on.stderr)
    assert goes_on.returncode == 1  # a file failed
    assert re.search(r"│ written\s+│\s+12 │", text) and re.search(r"│ failed\s+│\s+2 │", text)
    again = run("--irreversible", "-r", "--continue", "--pixels", "refuse", str(mixed),
                str(tmp_path / "out"))
    assert re.search(r"│ already done\s+│\s+12 │", flat(again.stderr))


def test_error_mode_prints_the_reasons(mixed: Path, tmp_path: Path) -> None:
    proc = run("--irreversible", "-r", "-E", str(mixed), str(tmp_path / "out"))
    assert proc.returncode == 1
    text = flat(proc.stderr)
    assert "not DICOM: DicomFormatError: not a DICOM file" in text
    assert "files not written (paths, 0600):" in text and "readme.txt" not in text
    clean = tmp_path / "clean"
    shutil.copytree(mixed / "P0001" / "ST01", clean)
    quiet = run("--irreversible", "-r", "-E", str(clean), str(tmp_path / "out2"))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_wrong_key_names_the_certificate_needed(pki: Pki, tmp_path: Path) -> None:
    src = tmp_path / "in"
    generate_archive(src, patients=1, studies=1, series=1, instances=4, seed=5)
    deid = tmp_path / "deid"
    assert run("-c", str(pki.cert), "-r", str(src), str(deid)).returncode == 0
    serial = subprocess.run(["openssl", "x509", "-in", str(pki.cert), "-noout", "-serial"],
                            capture_output=True, text=True, check=True).stdout
    number = int(serial.strip().split("=")[1], 16)
    proc = run("-d", "-k", str(pki.key2), "-r", str(deid), str(tmp_path / "back"))
    text = flat(proc.stderr)
    assert proc.returncode == 1
    assert ("the key (-k) does not open these files: they were encrypted for issuer "
            f"Common Name: anonpipe-one, serial {number}") in text, text
    assert "no more batches are submitted" in text and re.search(r"│ failed\s+│\s+1 │", text)
    assert not list((tmp_path / "back").rglob("*.dcm"))


def test_dry_run_plan_to_a_file_or_stdout(mixed: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.tsv"
    proc = run("--irreversible", "-r", "--pixels", "refuse", "--dry-run", "--plan", str(plan),
               str(mixed), str(tmp_path / "out"))
    assert proc.returncode == 0 and "P0001" not in proc.stderr + proc.stdout
    assert stat.S_IMODE(plan.stat().st_mode) == 0o600
    lines = plan.read_text().splitlines()
    assert lines == sorted(lines) and len(lines) == 16
    assert "P0001/ST01/SE01/IM0001.dcm\tP0001/ST01/SE01/IM0001.dcm" in lines
    assert any(line.startswith("P0001/readme.txt\t(not written: not DICOM") for line in lines)
    debug = run("--irreversible", "-r", "--pixels", "refuse", "--dry-run", "-D", str(mixed),
                str(tmp_path / "out"))
    assert debug.stdout.splitlines() == lines  # `> plan.txt` works
    assert not (tmp_path / "out").exists()


def test_retry_failed_and_files_from(mixed: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(mixed, src)
    out, store = tmp_path / "out", tmp_path / "run.sqlite"
    first = run("--irreversible", "-r", "--continue", "--pixels", "refuse", "--store",
                str(store), str(src), str(out))
    assert first.returncode == 1
    listed = Path(re.findall(r"files not written \(paths, 0600\): (\S+)",
                             flat(first.stderr))[0])
    (src / "P0002" / "cut.dcm").write_bytes((src / "P0002/ST01/SE01/IM0002.dcm").read_bytes())
    (src / "P0001" / "readme.txt").unlink()
    retry = run("--irreversible", "-r", "--continue", "--allow-burned-in", "--retry-failed",
                "--store", str(store), str(src), str(out))
    text = flat(retry.stderr)
    assert retry.returncode == 1  # readme.txt is gone: failed, by name in the new list
    assert "found 4 files" in text and re.search(r"│ written\s+│\s+2 │", text), text
    assert (out / "P0002" / "cut.dcm").exists() and (out / "P0002" / "burned.dcm").exists()
    assert "listed file not found" in text
    # the failed list of a run is a valid --files-from list (text after a tab is ignored)
    only = run("--irreversible", "-r", "--continue", "--pixels", "refuse", "--files-from",
               str(listed),
               str(src), str(tmp_path / "out2"))
    assert "found 4 files" in flat(only.stderr)
    bad = tmp_path / "bad.txt"
    bad.write_text("P0001/ST01/SE01/IM0001.dcm\n../etc/passwd\n")
    refused = run("--irreversible", "--files-from", str(bad), str(src), str(tmp_path / "o3"))
    assert refused.returncode == 2 and "line 2: not a relative path" in refused.stderr
    assert "passwd" not in refused.stderr and not (tmp_path / "o3").exists()
    none = run("--irreversible", "--retry-failed", "--store", str(tmp_path / "none.sqlite"),
               str(src), str(tmp_path / "o4"))
    assert none.returncode == 2 and "--retry-failed: no store" in none.stderr


def test_reidentify_and_dumb_pass_one_print_files_and_bytes(mixed: Path,
                                                           tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    shutil.copytree(mixed / "P0001" / "ST01", clean)
    proc = run("--dumb", "--empty", "10,10", "-r", str(clean), str(tmp_path / "out"))
    assert proc.returncode == 0
    assert re.search(r"found 6 files \([\d.]+ MB\)", proc.stderr)
    assert "patients" not in proc.stderr and "studies" not in proc.stderr


def test_files_are_private(mixed: Path, tmp_path: Path) -> None:
    """The failed list and plan are created 0600 whatever the umask."""
    old = os.umask(0)
    try:
        proc = run("--irreversible", "-r", "-E", str(mixed), str(tmp_path / "out"))
    finally:
        os.umask(old)
    listed = Path(re.findall(r"files not written \(paths, 0600\): (\S+)",
                             flat(proc.stderr))[0])
    assert stat.S_IMODE(listed.stat().st_mode) == 0o600


def test_list_options_are_checked_before_anything_is_written(mixed: Path, tmp_path: Path) -> None:
    secret = tmp_path / "s.secret"
    missing = run("--irreversible", "--secret-file", str(secret), "--files-from",
                  str(tmp_path / "nope.txt"), str(mixed), str(tmp_path / "out"))
    assert missing.returncode == 2 and "--files-from" in missing.stderr
    assert not secret.exists() and not (tmp_path / "out").exists()
    single = run("--irreversible", "--plan", str(tmp_path / "p.tsv"), "--dry-run",
                 str(mixed / "P0001/ST01/SE01/IM0001.dcm"), str(tmp_path / "one.dcm"))
    assert single.returncode == 2 and "for directory runs" in single.stderr
    plan_alone = run("--irreversible", "-r", "--plan", str(tmp_path / "p.tsv"), str(mixed),
                     str(tmp_path / "out"))
    assert plan_alone.returncode == 2 and "--plan FILE goes with --dry-run" in plan_alone.stderr


def _on_a_terminal(argv: list[str], columns: int = 80) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal of ``columns`` columns (the
    live display draws only there); returns the exit status and everything drawn."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERM")}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env={**env, "TERM": "xterm"}, close_fds=True)
    os.close(follower)
    drawn = bytearray()
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed (the run ended)
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    return proc.returncode, drawn.decode("utf-8", "replace")


def test_the_live_pass_one_bar_shows_elapsed_time_and_the_latest_kind(tmp_path: Path) -> None:
    """On an 80-column terminal each pass is one line with its elapsed time and, once a
    file cannot be processed, the kind of the latest one; pass 1 as well as pass 2."""
    src = tmp_path / "in"
    generate_archive(src, patients=1, studies=1, series=1, instances=3, seed=5)
    sample = next(src.rglob("*.dcm"))
    (src / "cut.dcm").write_bytes(sample.read_bytes()[:700])  # cut inside the header
    code, drawn = _on_a_terminal([ANONPIPE, "--irreversible", "-r", "--continue", str(src),
                                  str(tmp_path / "out")])
    assert code == 1, drawn  # one file failed
    frames = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", frame)
              for frame in re.split(r"\x1b\[2K|\n", drawn)]
    for name in ("pass 1 scan", "pass 2 deidentify"):
        bars = [frame.rstrip() for frame in frames if frame.startswith(name)]
        assert bars, drawn
        final = bars[-1]
        assert len(final) <= 80, final
        assert re.search(r"\b0:00:\d\d\b", final), final  # elapsed time
        assert "4/4" in final and "✗1 DicomFormatError" in final, final


def test_plain_progress_lines_name_the_latest_kind(tmp_path: Path) -> None:
    """Not on a terminal (a batch job's log) the pass lines say it in words."""
    src = tmp_path / "in"
    generate_archive(src, patients=1, studies=1, series=1, instances=2, seed=6)
    (src / "notes.txt").write_text("not an image")
    proc = run("--irreversible", "-r", "--continue", str(src), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"pass 1 scan: finished 3/3 files, .* 1 not written \(latest: not DICOM\), "
                     r"workers -, [\d.]+ s", proc.stderr), proc.stderr
