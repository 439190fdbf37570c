"""A run defends the secret, the store and the trees against other users and the user's own
mistakes: the installed ``anonpipe`` command on real files, folders, links and certificates.

Every refusal is checked the same way: exit 2, one line on stderr, and nothing written (no
output, no store, no secret, no report).
"""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.state import _private_group
from tests.conftest import ANONPIPE, Pki, make_pair, pydicom_file, require_tool, run_command

PASSWORD = "correct horse battery staple"
OTHER_UID = 65534  # nobody


def anonpipe(*args: str, env: dict[str, str] | None = None, state: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    extra = {**(env or {})}
    if state is not None:
        extra["ANONPIPE_STATE_DIR"] = str(state)
    return run_command("anonpipe", *args, env=extra)


def everything(*roots: Path) -> list[str]:
    """Every path under ``roots`` (links not followed): what a run may have written."""
    found = []
    for root in roots:
        if os.path.lexists(root):
            found.append(str(root))
            if root.is_dir() and not root.is_symlink():
                found += sorted(str(p) for p in root.rglob("*"))
    return found


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run was refused as a usage error in one line naming ``words``."""
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    return proc.stderr


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    return folder


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "site.secret"
    path.parent.mkdir(mode=0o700)
    path.write_text("00" * 32 + "\n")
    path.chmod(0o600)
    return path


def _small_tree(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "P1" / "ST1").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom_file(name), src / "P1" / "ST1" / name)
    return src


# --------------------------------------------------------------------------- 2. state folders


def _unowned(folder: Path) -> Path:
    """A folder another user owns: made and given away as root, else one of the system's."""
    if os.geteuid() == 0:
        folder.mkdir(mode=0o755)
        os.chown(folder, OTHER_UID, OTHER_UID)
        return folder
    return Path("/usr/share")


def test_unsafe_state_store_and_secret_folders_are_refused(
        tmp_path: Path, state: Path, secret: Path, pki: Pki) -> None:
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o1777)  # like /tmp: sticky, but anyone can plant a file
    group_folder = tmp_path / "group"
    group_folder.mkdir()
    group_folder.chmod(0o770)
    if os.geteuid() == 0:
        os.chown(group_folder, -1, OTHER_UID)  # a shared group: its members could plant files
    theirs = _unowned(tmp_path / "theirs")
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    cases = [
        ({"ANONPIPE_STATE_DIR": str(open_folder)}, [], ("state folder", "writable by other")),
        ({"ANONPIPE_STATE_DIR": str(theirs)}, [], ("state folder", "another user")),
        ({}, ["--store", str(open_folder / "run.sqlite")], ("store's folder", "writable")),
        *([({}, ["--store", str(group_folder / "run.sqlite")], ("store's folder", "writable"))]
          if not _private_group(group_folder.stat().st_gid) else []),
        ({}, ["--store", str(theirs / "run.sqlite")], ("store's folder", "another user")),
    ]
    for env, extra, words in cases:
        before = everything(open_folder, group_folder, tmp_path / "theirs", state)
        proc = anonpipe(*base, *extra, str(src), str(out), env=env,
                        state=None if env else state)
        refused(proc, *words)
        assert not out.exists()
        assert everything(open_folder, group_folder, tmp_path / "theirs", state) == before
    # a secret in a folder others can write, or through a link, or of another user
    planted = open_folder / "site.secret"
    planted.write_text("11" * 32)
    planted.chmod(0o600)
    refused(anonpipe(*base[:-2], "--secret-file", str(planted), str(src), str(out), state=state),
            "secret's folder", "writable by other")
    assert not out.exists() and not any(state.iterdir())


def test_a_folder_writable_only_by_the_users_own_group_is_accepted(
        tmp_path: Path, state: Path, secret: Path, pki: Pki) -> None:
    """A umask of 002 with one group per user (Debian's default for users) is no risk."""
    shared = tmp_path / "runs"
    shared.mkdir()
    shared.chmod(0o770)
    proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file",
                    str(secret), "--store", str(shared / "run.sqlite"), str(_small_tree(tmp_path)),
                    str(tmp_path / "out"), state=state)
    if _private_group(shared.stat().st_gid):
        assert proc.returncode == 0, proc.stderr
    else:
        refused(proc, "writable by other users")


def test_secret_and_store_are_not_followed_through_links(tmp_path: Path, state: Path,
                                                        secret: Path, pki: Pki) -> None:
    """A secret planted through a link beside the --store (and a store through a link)."""
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o700)
    os.symlink(secret, runs / "run.sqlite.secret")
    proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--workers", "0", "--store",
                    str(runs / "run.sqlite"), str(src), str(out), state=state)
    refused(proc, "symbolic link")
    assert not out.exists() and sorted(p.name for p in runs.iterdir()) == ["run.sqlite.secret"]
    os.unlink(runs / "run.sqlite.secret")
    store = tmp_path / "elsewhere.sqlite"
    store.write_bytes(b"")
    store.chmod(0o600)
    os.symlink(store, runs / "run.sqlite")
    proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file",
                    str(secret), "--store", str(runs / "run.sqlite"), str(src), str(out),
                    state=state)
    refused(proc, "symbolic link")
    assert store.read_bytes() == b"" and not out.exists()


def test_a_secret_or_store_of_another_user_is_refused(tmp_path: Path, state: Path,
                                                     secret: Path, pki: Pki) -> None:
    """As root, files given away in the user's own folder; otherwise, files of root's."""
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    store = tmp_path / "keys" / "run.sqlite"
    if os.geteuid() == 0:
        os.chown(secret, OTHER_UID, OTHER_UID)
        refused(anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", str(secret),
                         str(src), str(out), state=state), "another user")
        os.chown(secret, 0, 0)
        store.write_bytes(b"")
        store.chmod(0o600)
        os.chown(store, OTHER_UID, OTHER_UID)
    else:
        refused(anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", "/etc/hostname",
                         str(src), str(out), state=state), "another user")
        store = Path("/etc/anonpipe-run.sqlite")
    refused(anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", str(secret), "--store",
                     str(store), str(src), str(out), state=state), "another user")
    assert not out.exists() and not any(state.iterdir())


def test_no_state_inside_the_input_or_the_output(tmp_path: Path, state: Path, secret: Path,
                                                pki: Pki) -> None:
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    for where, name in ((out / "state", "output"), (src / "state", "input")):
        proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", str(secret),
                        str(src), str(out), env={"ANONPIPE_STATE_DIR": str(where)})
        refused(proc, "state folder", f"inside the {name} folder")
        assert not where.exists() and not out.exists()


# --------------------------------------------------------------------------- 3. links in the trees


def test_a_link_in_the_output_tree_is_never_followed(tmp_path: Path, state: Path,
                                                    secret: Path, pki: Pki) -> None:
    src = _small_tree(tmp_path)
    (src / "P2").mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), src / "P2" / "CT_small.dcm")
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "ST1").mkdir()
    victim = outside / "victim.dcm"
    victim.write_bytes(b"not to be touched")

    def plant() -> None:
        os.symlink(outside, out / "P1")  # a folder of the output replaced by a link
        (out / "P2").mkdir(exist_ok=True)
        os.symlink(victim, out / "P2" / "CT_small.dcm")  # an output file replaced by a link

    plant()
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    # files no run of this store wrote: the run stops before writing
    stopped = anonpipe(*base, "--continue", str(src), str(out), state=state)
    assert stopped.returncode == 2, stopped.stderr
    assert "no run of this store wrote" in stopped.stderr
    # --force: the links refuse their files, then the links themselves (not their targets)
    # are removed as files the run did not produce
    proc = anonpipe(*base, "--continue", "--force", str(src), str(out), state=state)
    assert proc.returncode == 1, proc.stderr
    assert "symbolic link" in proc.stderr and "refused" in proc.stderr
    assert "P1" not in proc.stderr and "CT_small" not in proc.stderr  # paths only with -D
    assert everything(outside) == [str(outside), str(outside / "ST1"), str(victim)]
    assert victim.read_bytes() == b"not to be touched"
    assert not os.path.lexists(out / "P1") and not os.path.lexists(out / "P2" / "CT_small.dcm")
    for output in out.rglob("*.dcm"):  # what was written is no link and lies inside
        assert not output.is_symlink() and output.resolve().is_relative_to(out.resolve())
    plant()
    debug = anonpipe(*base, "--continue", "--force", "-D", str(src), str(out), state=state)
    assert "P1/ST1/CT_small.dcm" in debug.stderr and "P2/CT_small.dcm" in debug.stderr
    assert everything(outside) == [str(outside), str(outside / "ST1"), str(victim)]


def test_input_links_leaving_the_tree_are_skipped(tmp_path: Path, state: Path, secret: Path,
                                                 pki: Pki) -> None:
    src = _small_tree(tmp_path)
    private = tmp_path / "private"
    private.mkdir()
    shutil.copy(pydicom_file("rtplan.dcm"), private / "rtplan.dcm")
    os.symlink(private / "rtplan.dcm", src / "leak.dcm")
    os.symlink(private, src / "leakdir")
    os.symlink(src / "P1" / "ST1" / "CT_small.dcm", src / "alias.dcm")  # inside: followed
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    out = tmp_path / "out"
    proc = anonpipe(*base, str(src), str(out), state=state)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm"))
    assert written == ["P1/ST1/CT_small.dcm", "P1/ST1/MR_small.dcm", "alias.dcm"]
    assert "LinkOutsideInput" in proc.stderr and "leak" not in proc.stderr
    followed = tmp_path / "followed"
    proc = anonpipe(*base, "--follow-symlinks", str(src), str(followed), state=state)
    assert proc.returncode == 0, proc.stderr
    assert (followed / "leak.dcm").is_file() and (followed / "leakdir" / "rtplan.dcm").is_file()


# --------------------------------------------------------------------------- 4. keys, passwords


def _certificate(folder: Path, name: str, bits: int = 2048, usage: str | None = None,
                 expired: bool = False) -> Path:
    """A self-signed certificate (conftest.make_pair), backdated with cryptography."""
    key, cert = make_pair(folder, name, bits, usage)
    if expired:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        private = serialization.load_pem_private_key(key.read_bytes(), None)
        old = x509.load_pem_x509_certificate(cert.read_bytes())
        now = datetime.datetime.now(datetime.UTC)
        built = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer)
                 .public_key(old.public_key()).serial_number(old.serial_number)
                 .not_valid_before(now - datetime.timedelta(days=400))
                 .not_valid_after(now - datetime.timedelta(days=35))
                 .sign(private, hashes.SHA256()))  # type: ignore[arg-type]
        cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    return cert


def test_weak_and_signing_only_certificates_are_refused(tmp_path: Path, state: Path,
                                                       secret: Path) -> None:
    src = pydicom_file("CT_small.dcm")
    out = tmp_path / "out.dcm"
    weak = _certificate(tmp_path, "weak", bits=1024)
    signing = _certificate(tmp_path, "signing", usage="digitalSignature")
    base = ["-e", "--secret-file", str(secret)]
    refused(anonpipe(*base, "-c", str(weak), str(src), str(out), state=state),
            "1024 bits", "--allow-weak-keys")
    refused(anonpipe(*base, "-c", str(signing), str(src), str(out), state=state),
            "keyEncipherment")
    assert not out.exists() and not any(state.iterdir())
    for cert in (weak, signing):  # test keys: the flag takes them
        proc = anonpipe(*base, "--allow-weak-keys", "-c", str(cert), str(src), str(out),
                        state=state)
        assert proc.returncode == 0 and out.is_file(), proc.stderr
        out.unlink()
    good = _certificate(tmp_path, "good", usage="keyEncipherment,digitalSignature")
    assert anonpipe(*base, "-c", str(good), str(src), str(out), state=state).returncode == 0


def test_an_expired_certificate_is_warned_about(tmp_path: Path, state: Path,
                                               secret: Path) -> None:
    out = tmp_path / "out.dcm"
    expired = _certificate(tmp_path, "expired", expired=True)
    proc = anonpipe("-e", "--secret-file", str(secret), "-c", str(expired),
                    str(pydicom_file("rtplan.dcm")), str(out), state=state)
    assert proc.returncode == 0 and out.is_file()
    assert proc.stderr.startswith(f"anonpipe: warning: certificate {expired} expired on ")
    assert len(proc.stderr.splitlines()) == 1


def test_password_from_a_file_or_the_environment_and_gdcmanon_opens_it(
        tmp_path: Path, state: Path, secret: Path) -> None:
    """600,000 PBKDF2 iterations (asn1parse shows them), opened by gdcmanon -d -p."""
    import pydicom

    gdcmanon = require_tool("gdcmanon")
    src = pydicom_file("rtplan.dcm")  # no preamble data: nothing else to warn about
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    by_file, by_env = tmp_path / "file.dcm", tmp_path / "env.dcm"
    proc = anonpipe("-e", "--profile", "gdcmanon", "--secret-file", str(secret),
                    "--password-file", str(password_file), str(src), str(by_file), state=state)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    proc = anonpipe("-e", "--profile", "gdcmanon", "--secret-file", str(secret), str(src),
                    str(by_env), env={"ANONPIPE_PASSWORD": PASSWORD}, state=state)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for deid in (by_file, by_env):
        payload = tmp_path / "payload.der"
        blob = pydicom.dcmread(deid)[0x04000500][0][0x04000520].value
        size = blob[1] & 0x7F  # a DER long length: drop the pad byte after the envelope
        payload.write_bytes(blob[:2 + size + int.from_bytes(blob[2:2 + size], "big")])
        listing = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in",
                                  str(payload)], capture_output=True, text=True, check=True)
        assert "INTEGER           :0927C0" in listing.stdout, listing.stdout  # 600,000
        back = tmp_path / f"gdcm-{deid.name}"
        done = subprocess.run([gdcmanon, "-d", "-p", PASSWORD, str(deid), str(back)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr + done.stdout
        ours = tmp_path / f"ours-{deid.name}"
        assert anonpipe("-d", "--password-file", str(password_file), str(deid), str(ours),
                        state=state).returncode == 0
        assert ours.read_bytes() == src.read_bytes()
    on_argv = anonpipe("-d", "-p", PASSWORD, str(by_file), str(tmp_path / "argv.dcm"),
                       state=state)
    assert on_argv.returncode == 0
    assert "warning: -p shows the password" in on_argv.stderr and PASSWORD not in on_argv.stderr
    both = anonpipe("-d", "-p", PASSWORD, "--password-file", str(password_file), str(by_file),
                    str(tmp_path / "both.dcm"), state=state)
    refused(both, "give the password once")
    password_file.chmod(0o644)
    shared = anonpipe("-d", "--password-file", str(password_file), str(by_file),
                      str(tmp_path / "shared.dcm"), state=state)
    assert shared.returncode == 0 and "password file" in shared.stderr
    assert "readable by other users" in shared.stderr and PASSWORD not in shared.stderr
    missing = anonpipe("-d", "--password-file", str(tmp_path / "no-such-file"), str(by_file),
                       str(tmp_path / "missing.dcm"), state=state)
    refused(missing, "cannot read the password file")
    assert not (tmp_path / "missing.dcm").exists()
    # the environment's password only adds a recipient where there is a payload
    plain = tmp_path / "irreversible.dcm"
    assert anonpipe("-e", "--irreversible", "--secret-file", str(secret), str(src), str(plain),
                    env={"ANONPIPE_PASSWORD": PASSWORD}, state=state).returncode == 0


def test_the_password_never_shows_in_ps(archive: Path, tmp_path: Path, state: Path,
                                        secret: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    proc = subprocess.Popen(
        [ANONPIPE, "-e", "-r", "--workers", "0", "--secret-file", str(secret),
         "--password-file", str(password_file), str(archive), str(tmp_path / "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ANONPIPE_STATE_DIR": str(state)})
    seen = 0
    try:
        while proc.poll() is None:
            listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                                     check=True).stdout
            assert PASSWORD not in listing and "horse" not in listing
            seen += any(line.split(None, 1)[0] == str(proc.pid)
                        for line in listing.splitlines()[1:])
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen  # the run was listed while it worked
    assert sum(1 for _ in (tmp_path / "out").rglob("*.dcm")) == 120


# --------------------------------------------------------------------------- 5. output modes


def test_outputs_are_never_more_readable_than_their_input(tmp_path: Path, state: Path,
                                                         secret: Path, pki: Pki) -> None:
    src = tmp_path / "private.dcm"
    shutil.copy(pydicom_file("CT_small.dcm"), src)
    src.chmod(0o600)
    deid, back, dumb = tmp_path / "deid.dcm", tmp_path / "back.dcm", tmp_path / "dumb.dcm"
    for argv, dst in ((["-c", str(pki.cert), "-e", "--secret-file", str(secret), str(src)], deid),
                      (["-k", str(pki.key), "-d", str(deid)], back),
                      (["--dumb", "--remove", "10,10", str(src)], dumb)):
        proc = anonpipe(*argv, str(dst), state=state)
        assert proc.returncode == 0, proc.stderr
        assert stat.S_IMODE(dst.stat().st_mode) == 0o600, argv
    tree = _small_tree(tmp_path)
    (tree / "P1" / "ST1" / "CT_small.dcm").chmod(0o600)
    (tree / "P1" / "ST1" / "MR_small.dcm").chmod(0o640)
    for mode in (["-c", str(pki.cert), "-e", "--secret-file", str(secret)],
                 ["--dumb", "--remove", "10,10"]):
        out = tmp_path / f"out-{len(mode)}"
        proc = anonpipe(*mode, "-r", "--workers", "0", str(tree), str(out), state=state)
        assert proc.returncode == 0, proc.stderr
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*.dcm")}
        umask = os.umask(0)
        os.umask(umask)
        assert modes == {"CT_small.dcm": 0o600, "MR_small.dcm": 0o640 & ~umask}
        # no input is readable by others: neither are the folders made for the outputs
        # (their names mirror the input's, and may name a patient)
        for rel in ("P1", "P1/ST1"):
            assert stat.S_IMODE((out / rel).stat().st_mode) & 0o007 == 0, rel


# --------------------------------------------------------------------------- 6, 7. user mistakes


def test_a_new_secret_is_announced(tmp_path: Path, pki: Pki) -> None:
    fresh = tmp_path / "fresh-state"
    out = tmp_path / "out.dcm"
    proc = anonpipe("-c", str(pki.cert), "-e", str(pydicom_file("rtplan.dcm")), str(out),
                    state=fresh)
    assert proc.returncode == 0
    assert proc.stderr == f"anonpipe: created a new secret in {fresh / 'secret'} (keep it: " \
        "the same secret gives the same replacements)\n"
    again = anonpipe("-c", str(pki.cert), "-e", str(pydicom_file("rtplan.dcm")), str(out),
                     state=fresh)
    assert again.returncode == 0 and again.stderr == ""


def test_swapped_arguments_never_overwrite_an_original(tmp_path: Path, state: Path,
                                                      secret: Path, pki: Pki) -> None:
    original, other = tmp_path / "original.dcm", tmp_path / "other.dcm"
    shutil.copy(pydicom_file("CT_small.dcm"), original)
    shutil.copy(pydicom_file("MR_small.dcm"), other)
    kept = original.read_bytes()
    base = ["-c", str(pki.cert), "-e", "--secret-file", str(secret)]
    refused(anonpipe(*base, str(other), str(original), state=state),
            "not a de-identified file", "--force")
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM")
    refused(anonpipe(*base, str(other), str(notes), state=state), "--force")
    assert original.read_bytes() == kept and notes.read_text() == "not DICOM"
    # our own output is replaced on a rerun (an irreversible one too: (0012,0062) YES);
    # --force replaces anything
    deid = tmp_path / "deid.dcm"
    assert anonpipe(*base, str(original), str(deid), state=state).returncode == 0
    assert anonpipe(*base, str(original), str(deid), state=state).returncode == 0
    plain = ["-e", "--irreversible", "--secret-file", str(secret)]
    irreversible = tmp_path / "irreversible.dcm"
    for _ in range(2):
        proc = anonpipe(*plain, str(original), str(irreversible), state=state)
        assert proc.returncode == 0, proc.stderr
    assert anonpipe(*base, "--force", str(other), str(original), state=state).returncode == 0
    assert original.read_bytes() != kept
