"""tasks.certificate reads what cryptography.x509 reads, from the same certificates."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tasks.certificate import KEY_ENCIPHERMENT, der_of, parse_certificate, rsa_public_numbers
from tests.builders import der_tlv

UTC = datetime.UTC
_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


def _built(*, usage: set[str] | None = None, critical: bool = True, ec_key: bool = False,
           not_before: datetime.datetime = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
           not_after: datetime.datetime = datetime.datetime(2034, 6, 7, 8, 9, 10, tzinfo=UTC),
           serial: int = 0x1234_5678_9ABC, other_extension: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()) if ec_key else rsa.generate_private_key(
        public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recipient"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hôpital")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(not_before).not_valid_after(not_after))
    if other_extension:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                        critical=True)
    if usage is not None:
        flags = {u: u in usage for u in _USAGES}
        if not flags["key_agreement"]:
            flags["encipher_only"] = flags["decipher_only"] = False
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


CASES = {
    "no extensions": {},
    "key encipherment, critical": {"usage": {"key_encipherment", "digital_signature"}},
    "signing only, not critical": {"usage": {"digital_signature"}, "critical": False},
    "decipher only (the ninth bit)": {"usage": {"key_agreement", "decipher_only"}},
    "key usage after another extension": {"usage": {"key_encipherment"},
                                          "other_extension": True},
    "GeneralizedTime after 2049": {
        "not_after": datetime.datetime(2051, 12, 31, 23, 59, 59, tzinfo=UTC)},
    "UTCTime before 2000": {"not_before": datetime.datetime(1999, 5, 6, tzinfo=UTC)},
    "EC key": {"ec_key": True},
    "a one-byte serial": {"serial": 1},
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_fields_are_what_cryptography_reads(case: str) -> None:
    der = _built(**CASES[case])  # type: ignore[arg-type]
    reference = x509.load_der_x509_certificate(der)
    ours = parse_certificate(der)
    assert ours.issuer == reference.issuer.public_bytes()
    assert int.from_bytes(ours.serial[2:], "big") == reference.serial_number
    assert ours.public_key_info == reference.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert ours.not_before == reference.not_valid_before_utc
    assert ours.not_after == reference.not_valid_after_utc
    try:
        usage = reference.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        assert ours.key_usage is None and ours.allows(KEY_ENCIPHERMENT)
    else:
        expected = set()
        for bit, name in enumerate(_USAGES):
            try:
                if getattr(usage, name):
                    expected.add(bit)
            except ValueError:  # encipher/decipher only without key agreement
                pass
        assert ours.key_usage == expected
        assert ours.allows(KEY_ENCIPHERMENT) == usage.key_encipherment


def test_pem_gives_the_der() -> None:
    der = _built()
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    assert der_of(b"subject=CN=recipient\n" + pem + b"trailing text\n") == der
    assert der_of(der) == der
    with pytest.raises(ValueError, match="no CERTIFICATE"):
        der_of(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not a PEM or DER"):
        der_of(pem.replace(b"M", b"!", 3))


def test_what_is_not_a_certificate_is_refused() -> None:
    der = _built()
    bad = [b"", b"\x30\x03\x02\x01\x00", der[:-1], der + b"\x00", der[:40],
           b"\x30\x80" + der[2:],  # indefinite length (BER, not DER)
           b"\x30\x84\x00\x00" + der[2:]]  # a length in more octets than it needs
    for blob in bad:
        with pytest.raises(ValueError):
            parse_certificate(blob)


@pytest.mark.parametrize("bits,exponent", [(2048, 65537), (3072, 3), (4096, 65537)])
def test_rsa_numbers_are_what_cryptography_reads(bits: int, exponent: int) -> None:
    key = rsa.generate_private_key(public_exponent=exponent, key_size=bits).public_key()
    info = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    numbers = key.public_numbers()
    assert rsa_public_numbers(info) == (numbers.n, numbers.e)


def test_a_key_of_another_algorithm_has_no_rsa_numbers() -> None:
    info = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert rsa_public_numbers(info) is None


def _spki(modulus: bytes, exponent: bytes = b"\x02\x03\x01\x00\x01", unused: int = 0,
          after: bytes = b"", params: bytes = b"\x05\x00") -> bytes:
    """An rsaEncryption SubjectPublicKeyInfo of the INTEGER TLVs given."""
    algorithm = der_tlv(0x30, bytes.fromhex("06092a864886f70d010101") + params)
    key = der_tlv(0x30, modulus + exponent)
    return der_tlv(0x30, algorithm + der_tlv(0x03, bytes([unused]) + key) + after)


def test_an_rsa_key_that_is_not_der_is_refused() -> None:
    good = b"\x02\x81\x81\x00" + b"\xc3" * 128  # 1024 bits, a leading zero to stay positive
    assert rsa_public_numbers(_spki(good)) == (int.from_bytes(b"\xc3" * 128, "big"), 65537)
    absent = _spki(good, params=b"")  # parameters left out, as some encoders do
    assert rsa_public_numbers(absent) == (int.from_bytes(b"\xc3" * 128, "big"), 65537)
    bad = [_spki(b"\x02\x81\x80" + b"\xc3" * 128),  # negative
           _spki(b"\x02\x81\x81\x00" + b"\x43" * 128),  # a leading zero it does not need
           _spki(b"\x02\x01\x00"),  # zero
           _spki(good, unused=1),  # unused bits in the BIT STRING
           _spki(good, after=b"\x05\x00"),  # something after the BIT STRING
           _spki(good, exponent=b"\x02\x03\x01\x00\x01\x05\x00"),  # after the exponent
           _spki(good)[:-1],
           _spki(good, params=b"\x04\x00")]  # parameters that are not NULL
    for blob in bad:
        with pytest.raises(ValueError):
            rsa_public_numbers(blob)
