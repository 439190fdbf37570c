"""A recipient's X.509 certificate (RFC 5280 §4.1): the fields encryption needs, read from
its DER.

Encrypting to a certificate needs its issuer and serial number (the recipient's id, RFC 5652
§10.2.4, copied verbatim), its public key, its validity period and its Key Usage.  Reading
just these here keeps ``cryptography.x509`` (about 30 ms of imports: name parsers, e-mail
address handling) out of every ``-e`` run's start.  The certificate's structure is checked
to its end (X.690 DER, definite lengths, nothing after it).  An RSA key's two numbers are
read here too (:func:`rsa_public_numbers`), so that ``cryptography``'s key loaders (about
10 ms of imports: EC, DSA, SSH and PKCS #12 support) stay out of it as well; ``cryptography``
checks the numbers when it builds the key.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["KEY_ENCIPHERMENT", "Certificate", "der_of", "parse_certificate",
           "rsa_public_numbers"]

_SEQUENCE, _INTEGER, _BIT_STRING, _OCTET_STRING, _OID, _BOOLEAN = 0x30, 0x02, 0x03, 0x04, 0x06, 0x01
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_VERSION, _EXTENSIONS = 0xA0, 0xA3  # [0] and [3] EXPLICIT in TBSCertificate
_KEY_USAGE_OID = bytes.fromhex("0603551d0f")  # 2.5.29.15
_RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")  # 1.2.840.113549.1.1.1
_PEM_BEGIN, _PEM_END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


class Certificate(NamedTuple):
    """What a recipient certificate says that encryption uses (TLVs verbatim)."""

    serial: bytes  # the serialNumber INTEGER
    issuer: bytes  # the issuer Name SEQUENCE
    public_key_info: bytes  # the SubjectPublicKeyInfo SEQUENCE
    not_before: datetime
    not_after: datetime
    #: the Key Usage bits (bit 0 digitalSignature ... as RFC 5280 §4.2.1.3 numbers them),
    #: None without the extension
    key_usage: frozenset[int] | None

    def allows(self, bit: int) -> bool:
        """Whether the Key Usage allows ``bit`` (no extension: every use is allowed)."""
        return self.key_usage is None or bit in self.key_usage


#: Key Usage bit of key transport (RSA encrypting the content key)
KEY_ENCIPHERMENT = 2


def der_of(data: bytes) -> bytes:
    """The DER of a certificate file: its first PEM CERTIFICATE block, or the bytes as they
    are.  ValueError when a PEM has no such block or its base64 is broken."""
    if b"-----BEGIN" not in data:
        return data
    start = data.find(_PEM_BEGIN)
    end = data.find(_PEM_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError("the PEM holds no CERTIFICATE")
    body = data[start + len(_PEM_BEGIN):end]
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        raise ValueError("not a PEM or DER X.509 certificate") from None


def _tlv(der: bytes, pos: int, tag: int | None = None) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER TLV at ``pos`` (X.690 §8.1, definite
    lengths in minimal form); ValueError for anything else or another ``tag``."""
    if pos + 2 > len(der) or (tag is not None and der[pos] != tag):
        raise ValueError("not DER")
    first = der[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        size = first & 0x7F
        start = pos + 2 + size
        if not 1 <= size <= 4 or start > len(der) or der[pos + 2] == 0:
            raise ValueError("not DER")
        length = int.from_bytes(der[pos + 2:start], "big")
        if length < 0x80:
            raise ValueError("not DER")
    if start + length > len(der):
        raise ValueError("not DER")
    return der[pos], start, start + length


def _time(der: bytes, pos: int) -> tuple[datetime, int]:
    """A validity bound (RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime after,
    both in UTC with seconds) and the position after it."""
    tag, start, end = _tlv(der, pos)
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME and len(text) == 13:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME or len(text) != 15:
        raise ValueError("not a certificate time")
    if not text.endswith("Z") or not text[:-1].isdigit():
        raise ValueError("not a certificate time")
    month, day, hour, minute, second = (int(text[i:i + 2]) for i in range(4, 14, 2))
    return datetime(int(text[:4]), month, day, hour, minute, second, tzinfo=UTC), end


def _key_usage(der: bytes, pos: int, end: int) -> frozenset[int] | None:
    """The Key Usage among the extensions in ``der[pos:end]`` (the [3] SEQUENCE OF)."""
    _, pos, end = _tlv(der, pos, _SEQUENCE)
    while pos < end:
        _, start, stop = _tlv(der, pos, _SEQUENCE)
        oid_end = _tlv(der, start, _OID)[2]
        at = oid_end
        if der[at] == _BOOLEAN:  # critical
            at = _tlv(der, at, _BOOLEAN)[2]
        _, value_start, value_end = _tlv(der, at, _OCTET_STRING)
        if value_end != stop:
            raise ValueError("not an extension")
        if der[start:oid_end] == _KEY_USAGE_OID:
            _, bits_start, bits_end = _tlv(der, value_start, _BIT_STRING)
            if bits_end != value_end or bits_start == bits_end or der[bits_start] > 7:
                raise ValueError("not a Key Usage")
            octets = der[bits_start + 1:bits_end]
            return frozenset(i for i in range(len(octets) * 8)
                             if octets[i // 8] & (0x80 >> i % 8))
        pos = stop
    return None


def parse_certificate(der: bytes) -> Certificate:
    """The fields of a DER certificate (RFC 5280 §4.1: Certificate ::= SEQUENCE {
    tbsCertificate, signatureAlgorithm, signatureValue }); ValueError when it is not one."""
    try:
        _, pos, end = _tlv(der, 0, _SEQUENCE)
        if end != len(der):
            raise ValueError("bytes after the certificate")
        _, pos, tbs_end = _tlv(der, pos, _SEQUENCE)  # into tbsCertificate
        if der[pos] == _VERSION:
            pos = _tlv(der, pos, _VERSION)[2]
        serial_at = pos
        pos = _tlv(der, pos, _INTEGER)[2]
        serial = der[serial_at:pos]
        pos = _tlv(der, pos, _SEQUENCE)[2]  # signature (the algorithm)
        issuer_at = pos
        pos = _tlv(der, pos, _SEQUENCE)[2]
        issuer = der[issuer_at:pos]
        _, validity, validity_end = _tlv(der, pos, _SEQUENCE)
        not_before, at = _time(der, validity)
        not_after, at = _time(der, at)
        if at != validity_end:
            raise ValueError("not a validity")
        pos = _tlv(der, validity_end, _SEQUENCE)[2]  # subject
        key_at = pos
        pos = _tlv(der, pos, _SEQUENCE)[2]
        public_key_info = der[key_at:pos]
        key_usage = None
        while pos < tbs_end:  # issuerUniqueID [1], subjectUniqueID [2], extensions [3]
            tag, start, stop = _tlv(der, pos)
            if tag == _EXTENSIONS:
                key_usage = _key_usage(der, start, stop)
            elif tag not in (0x81, 0xA1, 0x82, 0xA2):
                raise ValueError("not a TBSCertificate")
            pos = stop
        if pos != tbs_end:
            raise ValueError("not a TBSCertificate")
        pos = _tlv(der, tbs_end, _SEQUENCE)[2]  # signatureAlgorithm
        if _tlv(der, pos, _BIT_STRING)[2] != end:  # signatureValue, and nothing after
            raise ValueError("not a certificate")
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError("not a certificate") from exc
    return Certificate(serial, issuer, public_key_info, not_before, not_after, key_usage)


def rsa_public_numbers(public_key_info: bytes) -> tuple[int, int] | None:
    """(modulus, public exponent) of a SubjectPublicKeyInfo of algorithm rsaEncryption
    (RFC 8017 A.1.1: ``RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent
    INTEGER }`` in the BIT STRING, RFC 3279 2.3.1); None for a key of any other algorithm.
    ValueError when it is not that DER: minimal positive integers, nothing left over."""
    der = public_key_info
    try:
        _, pos, end = _tlv(der, 0, _SEQUENCE)
        _, algorithm, algorithm_end = _tlv(der, pos, _SEQUENCE)
        if not der.startswith(_RSA_ENCRYPTION_OID, algorithm):
            return None
        if der[algorithm + len(_RSA_ENCRYPTION_OID):algorithm_end] not in (b"", b"\x05\x00"):
            raise ValueError("not an RSA public key")  # parameters: NULL (RFC 3279 2.3.1)
        _, bits, bits_end = _tlv(der, algorithm_end, _BIT_STRING)
        if end != len(der) or bits_end != end or der[bits] != 0:  # no unused bits
            raise ValueError("not an RSA public key")
        _, pos, key_end = _tlv(der, bits + 1, _SEQUENCE)
        modulus, pos = _positive(der, pos)
        exponent, pos = _positive(der, pos)
        if pos != key_end or key_end != bits_end:
            raise ValueError("not an RSA public key")
    except IndexError as exc:
        raise ValueError("not an RSA public key") from exc
    return modulus, exponent


def _positive(der: bytes, pos: int) -> tuple[int, int]:
    """A positive INTEGER in minimal form (X.690 8.3.2) at ``pos``, and the position after."""
    _, start, end = _tlv(der, pos, _INTEGER)
    value = der[start:end]
    if not value or value[0] & 0x80 or (len(value) > 1 and value[0] == 0 and value[1] < 0x80):
        raise ValueError("not a positive INTEGER in DER")
    number = int.from_bytes(value, "big")
    if number == 0:
        raise ValueError("not a positive INTEGER in DER")
    return number, end
