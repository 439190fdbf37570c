"""What the whole suite shares: the test secret, the key pairs and what is built from them,
the installed commands and the external tools, pydicom's test files, a private state folder.

DICOM files built in code start from tests/builders.py."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.reidentify import ReidentifySettings

#: The HMAC secret of every test that needs one (32 bytes; tests wanting another secret name
#: theirs in place).  Distinctive, so a test can assert that it never shows in a log.
SECRET = b"anonpipe-tests-secret-0123456789"
#: The folder of the console scripts pyproject.toml installs (anonpipe, anonpipe-audit, ...)
#: next to the interpreter running the tests, so subprocess tests run the installed commands.
BIN = Path(sys.executable).parent
#: The repository's root (configs, scripts, notebooks; the PYTHONPATH of child interpreters)
REPO = Path(__file__).resolve().parents[1]
#: pydicom's bundled test data (installed with pydicom, never downloaded: the tests run offline)
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
#: the installed ``anonpipe`` command
ANONPIPE = str(BIN / "anonpipe")


def run_command(name: str, *args: str, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed command ``BIN / name`` run to its end, its output captured as text and
    its exit code left to the test; ``env`` adds to the test's environment."""
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd, env={**os.environ, **(env or {})})


def modules_loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code`` (from the
    checkout): what a worker or the driver pays to import on the path ``code`` takes."""
    probe = code + "\nimport sys\nprint(' '.join(sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return set(out.stdout.split())


def packages_loaded_by(code: str) -> set[str]:
    """The top-level packages of :func:`modules_loaded_by`."""
    return {name.split(".")[0] for name in modules_loaded_by(code)}


def run_main(*argv: str) -> subprocess.CompletedProcess[str]:
    """``anonpipe ARGV`` in this process, its stdout and stderr captured: the result reads
    as :func:`run_command`'s does."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return subprocess.CompletedProcess(["anonpipe", *argv], code, out.getvalue(), err.getvalue())


def require_tool(name: str) -> str:
    """Path of an external tool; skip when it is missing, or fail under ANONPIPE_REQUIRE_GDCM=1.

    CI sets ANONPIPE_REQUIRE_GDCM=1 so interop tests cannot pass by silently skipping.
    """
    path = shutil.which(name)
    if path is None:
        if os.environ.get("ANONPIPE_REQUIRE_GDCM") == "1":
            pytest.fail(f"{name} is not on PATH and ANONPIPE_REQUIRE_GDCM=1")
        pytest.skip(f"{name} is not on PATH")
    return path


@pytest.fixture(name="require_tool", scope="session")
def _require_tool_fixture() -> Callable[[str], str]:
    """:func:`require_tool` as a fixture, so test modules need no import path tricks."""
    return require_tool


@pytest.fixture
def needs_gdcmanon() -> str:
    """The real gdcmanon, for modules where every test runs it
    (``pytest.mark.usefixtures("needs_gdcmanon")``)."""
    return require_tool("gdcmanon")


@dataclass(frozen=True)
class Pki:
    """RSA key pairs made with the real openssl CLI."""

    key: Path
    cert: Path
    key2: Path
    cert2: Path
    cert_der: Path


def make_pair(folder: Path, name: str, bits: int = 2048,
              usage: str | None = None) -> tuple[Path, Path]:
    """An RSA key and its self-signed certificate (PEM), made with the openssl CLI; ``usage``
    is a critical Key Usage extension, e.g. ``keyEncipherment,digitalSignature``."""
    key, cert = folder / f"{name}_key.pem", folder / f"{name}_cert.pem"
    extra = ["-addext", f"keyUsage=critical,{usage}"] if usage else []
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", f"rsa:{bits}", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "365", "-subj", f"/CN=anonpipe-{name}", *extra],
        check=True, capture_output=True,
    )
    return key, cert


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Two key pairs and a DER copy of the first certificate.

    The second pair, the "wrong key" of the tests that expect a refusal, is RSA-3072: a
    2048-bit wrong key passes OpenSSL's implicit rejection and the padding check about
    once in 63,000 tries (tasks.crypto.decrypt_envelope), which made those tests fail at
    random; a key of another size is refused every time.  The random path itself is
    tested in tests/tasks/test_crypto.py::test_wrong_key_is_rejected."""
    folder = tmp_path_factory.mktemp("pki")
    key, cert = make_pair(folder, "one")
    key2, cert2 = make_pair(folder, "two", bits=3072)
    der = folder / "one_cert.der"
    subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER", "-out", str(der)],
                   check=True, capture_output=True)
    return Pki(key, cert, key2, cert2, der)


@pytest.fixture(scope="session")
def encryptor(pki: Pki) -> EnvelopeEncryptor:
    """The envelope of reversible runs: one recipient, the first certificate of :func:`pki`."""
    return EnvelopeEncryptor(certificates=(load_certificate(pki.cert),))


@pytest.fixture(scope="session")
def reid(pki: Pki) -> ReidentifySettings:
    """Re-identification with the first key, the one :func:`encryptor` encrypts to."""
    return ReidentifySettings(key_pem=pki.key.read_bytes())


def pydicom_file(name: str) -> Path:
    """A file of pydicom's bundled test data (:data:`PYDICOM_FILES`)."""
    path = PYDICOM_FILES / name
    assert path.is_file(), name
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep secrets, stores and reports of every run (session fixtures' runs too) out of the
    real state folder: one private folder for the whole session, the variable restored after."""
    state = tmp_path_factory.getbasetemp() / "state"
    state.mkdir(exist_ok=True, mode=0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANONPIPE_STATE_DIR", str(state))
        yield state
