"""The command line, in-process (``main([...])``) and as the installed command."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pydicom
import pytest

from pipeline.cli import main
from tests.conftest import Pki, pydicom_file, run_command

run = partial(run_command, "anonpipe")


def test_installed_command_round_trip(pki: Pki, tmp_path: Path) -> None:
    src = pydicom_file("CT_small.dcm")
    deid, back = tmp_path / "d.dcm", tmp_path / "b.dcm"
    assert run("-c", str(pki.cert), "-e", str(src), str(deid)).returncode == 0
    assert run("--key", str(pki.key), "--re-identify", "-i", str(deid), "-o", str(back)).returncode == 0
    assert back.read_bytes() == src.read_bytes()


def test_version_and_help() -> None:
    proc = run("-v")
    assert proc.returncode == 0 and "gdcmanon 3.0.21 compatible" in proc.stdout
    proc = run("-h")
    assert proc.returncode == 0
    for option in ("--de-identify", "--re-identify", "--dumb", "--continue", "--root-uid",
                   "--resources-path", "--certificate", "--password", "--des3", "--aes192",
                   "--empty", "--replace", "Triple DES (gdcmanon takes --des as --des3"):
        assert option in proc.stdout


def test_unknown_option_is_an_error() -> None:
    proc = run("--bogus", "a", "b")
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr


BAD_CALLS = [
    (["-e", "-d", "{src}", "{out}"], "one operating mode"),
    (["-c", "{cert}", "--aes128", "--des3", "{src}", "{out}"], "choose one cipher"),
    (["-c", "{cert}", "-c", "{cert}", "--root-uid", "1.2", "--root-uid", "1.3", "{src}", "{out}"],
     "given twice"),
    (["-e", "{src}", "{out}"], "needs a certificate"),
    (["-c", "{tmp}/missing.pem", "{src}", "{out}"], "cannot read certificate"),
    (["-c", "{src}", "{src}", "{out}"], "cannot read certificate"),
    (["-k", "{tmp}/missing.pem", "-d", "{src}", "{out}"], "cannot read private key"),
    (["-c", "{cert}", "--root-uid", "1.02", "{src}", "{out}"], "Root UID is not valid"),
    (["-c", "{cert}", "--crypto=capi", "{src}", "{out}"], "not recognized"),
    (["-c", "{cert}", "--resources-path", "{tmp}/nowhere", "{src}", "{out}"], "Resources Path"),
    (["-c", "{cert}", "{tmp}/absent.dcm", "{out}"], "Could not find file"),
    (["-c", "{cert}", "{src}"], "need an input and an output"),
    (["-c", "{cert}", "{src}", "{src}"], "inputs are never modified"),
    (["-c", "{cert}", "-r", "--workers", "-1", "{tmp}", "{out}"], "--workers must be 0"),
]


@pytest.mark.parametrize("argv,message", BAD_CALLS)
def test_bad_calls_fail_with_one_clear_line(argv: list[str], message: str, pki: Pki,
                                            tmp_path: Path) -> None:
    src = tmp_path / "in.dcm"
    src.write_bytes(pydicom_file("CT_small.dcm").read_bytes())
    values = {"src": str(src), "out": str(tmp_path / "out.dcm"), "cert": str(pki.cert),
              "tmp": str(tmp_path)}
    proc = run(*[a.format(**values) for a in argv])
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.dcm").exists()


BAD_FILES = [
    (b"", "empty file"),
    (b"hello, this is not DICOM at all" * 10, "not a DICOM file"),
    (None, "truncated"),
]


@pytest.mark.parametrize("content,message", BAD_FILES)
def test_bad_input_files(content: bytes | None, message: str, pki: Pki, tmp_path: Path) -> None:
    src = tmp_path / "bad.dcm"
    src.write_bytes(content if content is not None
                    else pydicom_file("CT_small.dcm").read_bytes()[:5000])
    before = src.read_bytes()
    out = tmp_path / "out.dcm"
    proc = run("-c", str(pki.cert), str(src), str(out))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.dcm" in lines[0] and message in lines[0]
    assert not out.exists()
    assert src.read_bytes() == before


def test_wrong_key_names_file_and_reason(pki: Pki, tmp_path: Path) -> None:
    deid = tmp_path / "d.dcm"
    assert main(["-c", str(pki.cert), str(pydicom_file("MR_small.dcm")), str(deid)]) == 0
    proc = run("-k", str(pki.key2), "-d", str(deid), str(tmp_path / "b.dcm"))
    assert proc.returncode == 1
    assert "d.dcm" in proc.stderr and "wrong key" in proc.stderr
    assert not (tmp_path / "b.dcm").exists()


def test_the_key_checked_with_the_options_is_the_one_the_files_use(pki: Pki,
                                                                   tmp_path: Path) -> None:
    """-k is loaded and checked once, as the options are read: the operation (and every
    worker forked after) finds that key loaded, where it loaded the file again before
    (~50 ms each, most of it the RSA key's check)."""
    from pipeline.cli import build_parser
    from pipeline.options import build_run
    from tasks import reidentify

    deid = tmp_path / "d.dcm"
    assert main(["-c", str(pki.cert), str(pydicom_file("MR_small.dcm")), str(deid)]) == 0
    reidentify._KEYS.clear()
    run = build_run(build_parser().parse_args(
        ["-k", str(pki.key), "-d", "-i", str(deid), "-o", str(tmp_path / "b.dcm")]))
    settings = run.operation.settings
    loaded = reidentify._KEYS[(settings.key_pem, settings.key_password)]
    assert settings.key_pem == pki.key.read_bytes()
    assert settings.private_key() is loaded
    run.operation(deid, tmp_path / "b.dcm")
    assert (tmp_path / "b.dcm").read_bytes() == pydicom_file("MR_small.dcm").read_bytes()


def _outer_tlv(blob: bytes) -> bytes:
    """The first DER TLV of ``blob``: openssl asn1parse refuses bytes after it."""
    first = blob[1]
    if first < 0x80:
        return blob[: 2 + first]
    count = first & 0x7F
    return blob[: 2 + count + int.from_bytes(blob[2 : 2 + count], "big")]


def test_des_means_triple_des(pki: Pki, tmp_path: Path) -> None:
    deid = tmp_path / "d.dcm"
    assert main(["-c", str(pki.cert), "--des", str(pydicom_file("MR_small.dcm")), str(deid)]) == 0
    blob = pydicom.dcmread(deid)[0x04000500][0][0x04000520].value
    cms_der = _outer_tlv(blob)
    # The element holds the DER, plus one NUL when the DER's length is odd (as gdcmanon).
    assert blob[len(cms_der):] == (b"\0" if len(cms_der) % 2 else b"")
    der = tmp_path / "cms.der"
    der.write_bytes(cms_der)
    proc = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(der)],
                          capture_output=True, text=True, check=True)
    assert "des-ede3-cbc" in proc.stdout


def test_root_uid_from_environment(pki: Pki, tmp_path: Path) -> None:
    out = tmp_path / "d.dcm"
    proc = run("-c", str(pki.cert), str(pydicom_file("MR_small.dcm")), str(out),
               env={"GDCM_ROOT_UID": "1.2.826.0.1.3680043.2.1143"})
    assert proc.returncode == 0, proc.stderr
    assert pydicom.dcmread(out).SOPInstanceUID.startswith("1.2.826.0.1.3680043.2.1143.")
    out2 = tmp_path / "e.dcm"
    assert main(["-c", str(pki.cert), "--root-uid", "1.2.3", str(pydicom_file("MR_small.dcm")),
                 str(out2)]) == 0
    assert pydicom.dcmread(out2).SOPInstanceUID.startswith("1.2.3.")


def test_der_certificate_and_password_recipient(pki: Pki, tmp_path: Path) -> None:
    src = pydicom_file("CT_small.dcm")
    deid, back = tmp_path / "d.dcm", tmp_path / "b.dcm"
    assert main(["-c", str(pki.cert_der), "-p", "pw", str(src), str(deid)]) == 0
    assert main(["-p", "pw", "-d", str(deid), str(back)]) == 0
    assert back.read_bytes() == src.read_bytes()


def test_encrypted_key_unlocked_by_password(pki: Pki, tmp_path: Path) -> None:
    locked = tmp_path / "locked.pem"
    subprocess.run(["openssl", "pkey", "-in", str(pki.key), "-aes256", "-passout", "pass:pw",
                    "-out", str(locked)], check=True, capture_output=True)
    src = pydicom_file("CT_small.dcm")
    deid, back = tmp_path / "d.dcm", tmp_path / "b.dcm"
    assert main(["-c", str(pki.cert), str(src), str(deid)]) == 0
    proc = run("-k", str(locked), "-d", str(deid), str(back))
    assert proc.returncode != 0 and "passphrase" in proc.stderr
    assert main(["-k", str(locked), "-p", "pw", "-d", str(deid), str(back)]) == 0
    assert back.read_bytes() == src.read_bytes()


def test_secret_file_created_private_and_reused(pki: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "state" / "my.secret"
    src = pydicom_file("MR_small.dcm")
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    typo = run("--irreversible", "--secret-file", str(secret), str(src), str(a))
    assert typo.returncode == 2 and "does not exist" in typo.stderr and "--new-secret" in typo.stderr
    assert len(typo.stderr.splitlines()) == 1 and not secret.exists() and not a.exists()
    made = run("--irreversible", "--secret-file", str(secret), "--new-secret", str(src), str(a))
    assert made.returncode == 0 and made.stderr.splitlines()[0] == (
        f"anonpipe: created a new secret in {secret} (keep it: the same secret gives the "
        "same replacements)")
    assert sum("created a new secret" in line for line in made.stderr.splitlines()) == 1
    assert secret.stat().st_mode & 0o777 == 0o600
    assert main(["--irreversible", "--secret-file", str(secret), str(src), str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    secret.chmod(0o644)
    proc = run("--irreversible", "--secret-file", str(secret), str(src), str(tmp_path / "c.dcm"))
    assert proc.returncode != 0 and "readable by other users" in proc.stderr


def test_help_shows_examples_and_exit_status() -> None:
    text = run("--help").stdout
    for example in ("anonpipe --certificate certificate.pem -e original.dcm",
                    "anonpipe --key privatekey.pem -d original_anonymized.dcm",
                    '--clear "0029,20,SIEMENS MEDCOM HEADER"', "--cluster slurm",
                    "anonpipe-audit --store run.sqlite", "anonpipe-crosswalk run.sqlite --csv",
                    "anonpipe-status run.sqlite", "--retry-failed", "exit status: 0"):
        assert example in text, example


def test_a_mistyped_option_gets_a_suggestion() -> None:
    proc = run("--recursve", "--contineu", "a", "b")
    assert proc.returncode == 2
    assert "unrecognized arguments: --recursve --contineu" in proc.stderr
    assert "--recursve: did you mean --recursive?" in proc.stderr
    assert "--contineu: did you mean --continue?" in proc.stderr


def test_dumb_mode_tags_by_keyword(tmp_path: Path) -> None:
    src = pydicom_file("CT_small.dcm")
    by_keyword, by_tag = tmp_path / "k.dcm", tmp_path / "t.dcm"
    assert run("--dumb", "--remove", "PatientName", "--replace", "PatientID=ANON",
               str(src), str(by_keyword)).returncode == 0
    assert run("--dumb", "--remove", "10,10", "--replace", "10,20=ANON",
               str(src), str(by_tag)).returncode == 0
    assert by_keyword.read_bytes() == by_tag.read_bytes()
    ds = pydicom.dcmread(by_keyword)
    assert "PatientName" not in ds and ds.PatientID == "ANON"
    typo = run("--dumb", "--remove", "PatientNmae", str(src), str(tmp_path / "x.dcm"))
    assert typo.returncode == 2 and "did you mean PatientName?" in typo.stderr
    assert not (tmp_path / "x.dcm").exists()


def _leave(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter, then ``pipeline.cli.leave(7)``."""
    script = f"import sys\nfrom pipeline.cli import leave\n{code}\nleave(7)\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)


def test_leave_flushes_what_was_printed() -> None:
    # no thread, no exit handler: the quick exit, with both streams written out in full
    proc = _leave("print('x' * 100_000, end=''); print('last words', file=sys.stderr, end='')")
    assert proc.returncode == 7
    assert proc.stdout == "x" * 100_000 and proc.stderr == "last words"


def test_leave_runs_exit_handlers_and_waits_for_threads() -> None:
    # what a normal exit would do is done: the handler runs, the thread finishes
    proc = _leave("import atexit, threading, time\n"
                  "atexit.register(print, 'handler ran')\n"
                  "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done')))"
                  ".start()")
    assert proc.returncode == 7
    assert proc.stdout.split() == ["thread", "done", "handler", "ran"]


def test_installed_command_exits_with_the_run_code(tmp_path: Path) -> None:
    # the console script goes through leave(): a file that fails is still 1, and said
    proc = run("-e", str(tmp_path / "missing.dcm"), str(tmp_path / "out.dcm"))
    assert proc.returncode == 1
    assert proc.stderr == f"anonpipe: Could not find file: {tmp_path / 'missing.dcm'} (no such file)\n"
