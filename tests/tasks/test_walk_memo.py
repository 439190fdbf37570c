"""The per-run shortcuts of the de-identification walk change no output byte: the
top-level memo of ``_apply`` results (tasks.deidentify), the keyed HMAC states
(tasks.uids), the profile looked up by name (tasks.profile) and the eligibility checks
(tasks.eligibility), each against the plain computation, on pydicom's test files and the
privacy corpus under several profiles and options."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import pytest

from tasks import deidentify
from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.eligibility import Refusal, refusals
from tasks.errors import AnonpipeError
from tasks.profile import get_profile
from tasks.tags import DICOMDIR_SOP_CLASS
from tasks.uids import _digest, pseudonym
from tests.builders import file_bytes, small_ct
from tests.conftest import PYDICOM_FILES, SECRET, Pki
from tests.corpus import build_privacy_corpus
from tests.loops import python_loops

#: profile and options of each run compared
SETTINGS = {
    "basic": {},
    "modified dates": {"options": ("retain_long_modified_dates",)},
    "full dates, UIDs kept": {"options": ("retain_long_full_dates", "retain_uids")},
    "safe private, descriptors": {"options": ("retain_safe_private", "clean_descriptors",
                                              "retain_patient_characteristics")},
    "strict": {"profile": "strict"},
    "gdcmanon, GDCM root": {"profile": "gdcmanon",
                            "root_uid": "1.2.826.0.1.3680043.2.1143"},
}


def _inputs() -> Iterator[tuple[str, bytes]]:
    for path in sorted(PYDICOM_FILES.rglob("*")):
        if path.is_file() and path.stat().st_size < 300_000:
            yield str(path.relative_to(PYDICOM_FILES)), path.read_bytes()
    yield from build_privacy_corpus().files.items()


def _outputs(settings: DeidentifySettings, inputs: list[tuple[str, bytes]]
             ) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for name, data in inputs:
        try:
            found[name] = deidentify_bytes(data, settings)
        except AnonpipeError as exc:
            found[name] = f"{type(exc).__name__}: {exc}"
    return found


@pytest.mark.parametrize("label", sorted(SETTINGS))
def test_memoised_walk_gives_the_plain_walks_bytes(label: str, pki: Pki,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the payload in clear (the envelope's key and IV are random): what is encrypted is
    # compared, byte for byte
    monkeypatch.setattr(EnvelopeEncryptor, "encrypt", lambda self, plain: b"CLEAR" + plain)
    encryptor = EnvelopeEncryptor(certificates=(load_certificate(pki.cert),))
    inputs = list(_inputs())
    assert len(inputs) > 100
    for irreversible in (True, False):
        settings = DeidentifySettings(secret=SECRET, pixels="keep",
                                      encryptor=None if irreversible else encryptor,
                                      **SETTINGS[label])  # type: ignore[arg-type]
        deidentify._TOP_MEMOS.clear()
        cold = _outputs(settings, inputs)
        warm = _outputs(settings, inputs)  # every repeated value now from the memo
        assert deidentify._TOP_MEMOS  # the memo was used
        with monkeypatch.context() as plain, python_loops():
            # the memo never applies (the compiled loop applies memo hits: it is off too)
            plain.setattr(deidentify, "_MEMO_ELEMENT_MAX", -1)
            reference = _outputs(settings, inputs)
        written = [name for name, out in reference.items() if isinstance(out, bytes)]
        assert len(written) > 50
        assert cold == reference
        assert warm == reference


def test_the_memo_is_per_secret_and_root() -> None:
    data = file_bytes(small_ct())
    outputs = {deidentify_bytes(data, DeidentifySettings(secret=secret, root_uid=root))
               for secret in (SECRET, b"another secret") for root in ("2.25", "1.2.3")
               for _ in range(2)}
    assert len(outputs) == 4


def test_keyed_hmac_is_hmac_sha256() -> None:
    for secret in (b"", b"k", SECRET, b"k" * 64, b"k" * 65, bytes(range(200))):
        for domain in (b"", b"uid", b"pn"):
            for value in (b"", b"1.2.3.4", bytes(range(256)) * 3):
                assert _digest(secret, domain, value) == hmac.digest(
                    secret, domain + b"\0" + value, "sha256")
    assert pseudonym(SECRET, "id", b"ID1", 12) != pseudonym(b"other", "id", b"ID1", 12)


def test_profile_by_name_is_the_general_paths() -> None:
    options = ("retain_uids",)
    assert get_profile("basic", options) is get_profile("basic", list(options))
    assert get_profile("basic", ()) is get_profile("basic")
    assert get_profile("basic", options) is not get_profile("basic", ())


def _with(tag_value: dict[str, object]) -> bytes:
    ds = small_ct()
    for keyword, value in tag_value.items():
        setattr(ds, keyword, value)
    return file_bytes(ds)


@pytest.mark.parametrize("value, refused", [
    ("YES", True), ("yes ", True), ("\tYES", True), ("NO", False), ("YESS", False)])
@pytest.mark.filterwarnings("ignore:Invalid value for VR CS:UserWarning")  # on purpose
def test_identity_removed_is_read_as_before(value: str, refused: bool) -> None:
    df = read_dicom(_with({"PatientIdentityRemoved": value}))
    assert (Refusal.IDENTITY_REMOVED in refusals(df)) is refused


def test_dicomdir_class_refused() -> None:
    df = read_dicom(_with({"SOPClassUID": DICOMDIR_SOP_CLASS}))
    assert refusals(df) == [Refusal.DICOMDIR]
    assert refusals(read_dicom(file_bytes(small_ct()))) == []
