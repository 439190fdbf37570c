"""CMS EnvelopedData (RFC 5652 §6) for the Encrypted Attributes Sequence (PS3.15 §E.1.1).

gdcmanon puts the original attributes in an EnvelopedData written by OpenSSL's
``CMS_encrypt``; cryptography's ``pkcs7`` helpers open only part of what it writes (no
AES-192, 3DES, PasswordRecipientInfo, BER or trailing pad byte), so this module builds the
fixed-shape envelope by hand on cryptography's primitives and parses any envelope with
asn1crypto (imported only to decrypt).  The layout is the one gdcmanon's envelopes have;
tests/tasks/test_crypto.py checks both directions against gdcmanon and ``openssl cms``.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeAlias

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher as _CipherContext
from cryptography.hazmat.primitives.ciphers import CipherAlgorithm, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tasks.certificate import KEY_ENCIPHERMENT, der_of, parse_certificate, rsa_public_numbers
from tasks.errors import CryptoError
from tasks.model import FieldEquality

if TYPE_CHECKING:  # asn1crypto parses envelopes (decryption) only: imported there, lazily
    from asn1crypto import cms, core

__all__ = [
    "CbcContent",
    "Cipher",
    "EnvelopeEncryptor",
    "PrivateKey",
    "StreamingEnvelope",
    "certificate_fingerprint",
    "decrypt_envelope",
    "load_certificate",
    "load_private_key",
    "load_private_key_bytes",
    "open_envelope_in_pieces",
    "read_private_key",
    "recipient_problems",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey


class Cipher(str, enum.Enum):
    """Content-encryption cipher, named as gdcmanon's ``--aes128/--aes192/--aes256/--des3``."""

    AES128 = "aes128"
    AES192 = "aes192"
    AES256 = "aes256"
    DES3 = "des3"


# --------------------------------------------------------------------------- algorithm tables


class _BlockCipher(NamedTuple):
    """A CBC content/KEK cipher: the OID, its name and its sizes (RFC 3565 §4.1, RFC 3370 §5.1)."""

    oid: str
    name: str
    algorithm: Callable[[bytes], CipherAlgorithm]
    key_size: int
    block_size: int  # also the IV length: the IV is the AlgorithmIdentifier's OCTET STRING


_CBC_CIPHERS: dict[str, _BlockCipher] = {
    c.oid: c
    for c in (
        _BlockCipher("2.16.840.1.101.3.4.1.2", "aes-128-cbc", algorithms.AES, 16, 16),
        _BlockCipher("2.16.840.1.101.3.4.1.22", "aes-192-cbc", algorithms.AES, 24, 16),
        _BlockCipher("2.16.840.1.101.3.4.1.42", "aes-256-cbc", algorithms.AES, 32, 16),
        _BlockCipher("1.2.840.113549.3.7", "des-ede3-cbc", TripleDES, 24, 8),
    )
}
_CIPHER_OIDS: dict[Cipher, str] = {
    Cipher.AES128: "2.16.840.1.101.3.4.1.2",
    Cipher.AES192: "2.16.840.1.101.3.4.1.22",
    Cipher.AES256: "2.16.840.1.101.3.4.1.42",
    Cipher.DES3: "1.2.840.113549.3.7",
}
# AuthEnvelopedData ciphers (RFC 5083, RFC 5084 §3.2): OID -> key size.
_GCM_KEY_SIZES: dict[str, int] = {
    "2.16.840.1.101.3.4.1.6": 16,
    "2.16.840.1.101.3.4.1.26": 24,
    "2.16.840.1.101.3.4.1.46": 32,
}
_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
_HMAC_PRFS: dict[str, Callable[[], hashes.HashAlgorithm]] = {  # RFC 8018 §B.1.2
    "1.2.840.113549.2.7": hashes.SHA1,
    "1.2.840.113549.2.8": hashes.SHA224,
    "1.2.840.113549.2.9": hashes.SHA256,
    "1.2.840.113549.2.10": hashes.SHA384,
    "1.2.840.113549.2.11": hashes.SHA512,
}

_OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_OID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
_OID_DATA = "1.2.840.113549.1.7.1"
_OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_PWRI_KEK = "1.2.840.113549.1.9.16.3.9"

# RFC 3211 §2.3 as OpenSSL writes it: 8-byte salt, PRF HMAC-SHA1 (the DEFAULT, so omitted),
# no keyLength; but 600,000 iterations where OpenSSL writes 2,048 (OWASP's 2023 figure for
# PBKDF2-HMAC-SHA256: the payload of every file is exposed to offline guessing of the
# password).  OpenSSL, hence ``gdcmanon -d -p``, reads the count from the envelope.  The
# derivation runs once per run, not per file: one random salt per encryptor, its KEK kept.
_PBKDF2_SALT_SIZE = 8
PBKDF2_ITERATIONS = 600_000
# A crafted envelope must not make us spin for hours.
_PBKDF2_MAX_ITERATIONS = 10_000_000
#: RSA recipients below this size are refused unless the caller allows weak keys (NIST SP
#: 800-57 Part 1 Rev. 5, Table 2: 2048 bits give 112-bit security, the minimum past 2030)
MIN_RSA_BITS = 2048

_PKCS1V15 = padding.PKCS1v15()


# --------------------------------------------------------------------------- DER building


def _header(tag: int, length: int) -> bytes:
    """Identifier and definite length octets (X.690 §8.1.3, DER minimal form)."""
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")


def _tlv(tag: int, content: bytes) -> bytes:
    return _header(tag, len(content)) + content


def _oid(dotted: str) -> bytes:
    """The DER of an OBJECT IDENTIFIER (X.690 §8.19): the first two arcs as 40 * a + b,
    each subidentifier in base 128, high bit set on all but its last octet."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for value in (40 * arcs[0] + arcs[1], *arcs[2:]):
        octets = [value & 0x7F]
        while value := value >> 7:
            octets.append(0x80 | value & 0x7F)
        body += bytes(reversed(octets))
    return _tlv(0x06, bytes(body))


def _integer(value: int) -> bytes:
    """The DER of a non-negative INTEGER (X.690 §8.3: two's complement, minimal octets)."""
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_SEQUENCE, _SET, _OCTET_STRING = 0x30, 0x31, 0x04
_DER_VERSION_0 = b"\x02\x01\x00"
_DER_VERSION_3 = b"\x02\x01\x03"
_DER_CONTENT_INFO_OID = _oid(_OID_ENVELOPED_DATA)
_DER_ID_DATA = _oid(_OID_DATA)
_DER_RSA_ENCRYPTION = _tlv(_SEQUENCE, _oid(_OID_RSA_ENCRYPTION) + b"\x05\x00")
_DER_PBKDF2_OID = _oid(_OID_PBKDF2)
_DER_PWRI_KEK_OID = _oid(_OID_PWRI_KEK)


def _cipher_id_head(spec: _BlockCipher) -> bytes:
    """AlgorithmIdentifier of a CBC cipher up to its IV: ``SEQUENCE { OID, OCTET STRING iv }``."""
    oid = _oid(spec.oid)
    return (
        _header(_SEQUENCE, len(oid) + 2 + spec.block_size)
        + oid
        + _header(_OCTET_STRING, spec.block_size)
    )


_CIPHER_ID_HEADS: dict[str, bytes] = {oid: _cipher_id_head(s) for oid, s in _CBC_CIPHERS.items()}

# DES keys carry odd parity in the low bit of every byte (FIPS 46-3 §3); OpenSSL sets it.
_DES_ODD_PARITY = bytes((b & 0xFE) | (((b >> 1).bit_count() + 1) & 1) for b in range(256))


def _cbc_encrypt(spec: _BlockCipher, key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = _CipherContext(spec.algorithm(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _cbc_decrypt(spec: _BlockCipher, key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = _CipherContext(spec.algorithm(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


# --------------------------------------------------------------------------- loading


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "it is a directory"
    except PermissionError:
        reason = "permission denied"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise CryptoError(f"cannot read {what} {path}: {reason}")


def _public_key(public_key_info: bytes) -> object:
    """The key of a SubjectPublicKeyInfo: an RSA key built from its numbers (the key
    loaders of ``cryptography`` imported only for another kind of key, to name it)."""
    numbers = rsa_public_numbers(public_key_info)
    if numbers is not None:
        modulus, exponent = numbers
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_public_key(public_key_info)


def _key_type(key: object) -> str:
    """Short key type for error messages ("EC", "Ed25519", "DSA"), from the class name."""
    return type(key).__name__.lstrip("_").removesuffix("PrivateKey").removesuffix("PublicKey")


def load_certificate(path: Path) -> bytes:
    """Read a recipient's X.509 certificate (PEM or DER) and return its DER.

    Unlike gdcmanon (PEM only), DER is accepted too.  The key must be RSA: the envelope
    carries only KeyTransRecipientInfo (RFC 5652 §6.2.1).
    """
    data = _read(path, "certificate")
    try:
        der = der_of(data)
    except ValueError as exc:
        raise CryptoError(f"cannot read certificate {path}: {exc}") from None
    try:
        parse_certificate(der)
    except ValueError:
        raise CryptoError(
            f"cannot read certificate {path}: not a PEM or DER X.509 certificate"
        ) from None
    try:
        _recipient(der)
    except CryptoError as exc:
        raise CryptoError(f"cannot read certificate {path}: {exc}") from None
    return der


def recipient_problems(der: bytes, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for a recipient certificate, checked once where options are read.

    Refused: an RSA key under :data:`MIN_RSA_BITS`, and a KeyUsage extension (RFC 5280
    §4.2.1.3) that does not allow keyEncipherment, which RSA key transport needs.  Warned: a
    certificate outside its validity period (the payload stays readable with the key, but
    the certificate was not meant for it any more, or not yet).
    """
    certificate = parse_certificate(der)
    refusals: list[str] = []
    key = _public_key(certificate.public_key_info)
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        refusals.append(f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
    if not certificate.allows(KEY_ENCIPHERMENT):
        refusals.append("its key usage does not include keyEncipherment")
    now = now or datetime.now(UTC)
    warnings = []
    if certificate.not_after < now:
        warnings.append(f"expired on {certificate.not_after:%Y-%m-%d}")
    elif certificate.not_before > now:
        warnings.append(f"not valid before {certificate.not_before:%Y-%m-%d}")
    return refusals, warnings


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKey:
    """Read an RSA private key: PEM or DER, PKCS#8 or traditional PKCS#1, maybe encrypted.

    ``password`` unlocks an encrypted key and is ignored for a clear one (gdcmanon's ``-p``
    is a PWRI password, so a user may well pass one with an unencrypted key).
    """
    return read_private_key(path, password)[1]


def read_private_key(path: Path, password: bytes | None = None) -> tuple[bytes, PrivateKey]:
    """:func:`load_private_key`, and the file's bytes it loaded (what workers are given)."""
    data = _read(path, "private key")
    return data, load_private_key_bytes(data, password, name=str(path))


def load_private_key_bytes(
    data: bytes, password: bytes | None = None, name: str = "(bytes)"
) -> PrivateKey:
    """:func:`load_private_key` on the file's bytes, for workers that got the key pickled."""
    from cryptography.hazmat.primitives import serialization  # -d only: ~10 ms of imports

    pem = b"-----BEGIN" in data
    loader = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    if pem and b"PRIVATE KEY-----" not in data:
        raise CryptoError(f"cannot read private key {name}: the PEM holds no PRIVATE KEY")
    try:
        try:
            key = loader(data, None)
        except TypeError:  # raised only for "encrypted but no password given"
            if password is None:
                raise CryptoError(
                    f"cannot read private key {name}: "
                    "private key is encrypted: give its passphrase with -p"
                ) from None
            try:
                key = loader(data, password)
            except ValueError:
                raise CryptoError(
                    f"cannot read private key {name}: wrong passphrase for the encrypted key"
                ) from None
    except UnsupportedAlgorithm as exc:
        raise CryptoError(f"cannot read private key {name}: unsupported format ({exc})") from None
    except ValueError:
        raise CryptoError(f"cannot read private key {name}: not a PEM or DER private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError(
            f"cannot read private key {name}: key type {_key_type(key)}; only RSA keys are supported"
        )
    return key


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of the certificate DER, lower-case hex (what reports show, never the key)."""
    return hashlib.sha256(der).hexdigest()


# --------------------------------------------------------------------------- encryption


class _KeyTransRecipient(NamedTuple):
    """A recipient's KeyTransRecipientInfo up to its encryptedKey bytes, and its RSA key."""

    head: bytes
    public_key: rsa.RSAPublicKey


# Per-process cache keyed by certificate DER: an EnvelopeEncryptor pickled to a worker
# carries only the DER and rebuilds this on its first encrypt there.
_RECIPIENTS: dict[bytes, _KeyTransRecipient] = {}


def _recipient(der: bytes) -> _KeyTransRecipient:
    cached = _RECIPIENTS.get(der)
    if cached is None:
        cached = _RECIPIENTS[der] = _build_recipient(der)
    return cached


def _build_recipient(der: bytes) -> _KeyTransRecipient:
    """Precompute ``KeyTransRecipientInfo`` v0 (RFC 5652 §6.2.1) for one certificate.

    The rid is issuerAndSerialNumber with the issuer Name and serial copied verbatim from
    the certificate, so it matches the certificate byte for byte (as OpenSSL does).
    """
    try:
        certificate = parse_certificate(der)
        public_key = _public_key(certificate.public_key_info)
    except (ValueError, UnsupportedAlgorithm):
        raise CryptoError("not a DER X.509 certificate") from None
    issuer_and_serial = _tlv(_SEQUENCE, certificate.issuer + certificate.serial)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CryptoError(
            f"public key type {_key_type(public_key)}; only RSA recipients are supported"
        )
    key_bytes = (public_key.key_size + 7) // 8
    body = _DER_VERSION_0 + issuer_and_serial + _DER_RSA_ENCRYPTION
    encrypted_key_header = _header(_OCTET_STRING, key_bytes)
    head = (
        _header(_SEQUENCE, len(body) + len(encrypted_key_header) + key_bytes)
        + body
        + encrypted_key_header
    )
    return _KeyTransRecipient(head, public_key)


def _pwri_wrap(spec: _BlockCipher, kek: bytes, iv: bytes, cek: bytes) -> bytes:
    """RFC 3211 §2.3.1 key wrap: length, check bytes, key, random pad; CBC twice."""
    block = spec.block_size
    size = max(2 * block, -(-(4 + len(cek)) // block) * block)
    check = bytes(b ^ 0xFF for b in cek[:3])
    formatted = bytes((len(cek),)) + check + cek
    formatted += os.urandom(size - len(formatted))
    first = _cbc_encrypt(spec, kek, iv, formatted)
    return _cbc_encrypt(spec, kek, first[-block:], first)


def _pwri_unwrap(spec: _BlockCipher, kek: bytes, iv: bytes, wrapped: bytes) -> bytes | None:
    """Invert :func:`_pwri_wrap` (RFC 3211 §2.3.2); None when the check bytes disagree.

    The second pass used the first pass's last block as IV; CBC gives that block back as
    D(C[n]) xor C[n-1], i.e. a one-block CBC decryption of C[n] with IV C[n-1].
    """
    block = spec.block_size
    if len(wrapped) < 2 * block or len(wrapped) % block:
        return None
    first_last = _cbc_decrypt(spec, kek, wrapped[-2 * block : -block], wrapped[-block:])
    first = _cbc_decrypt(spec, kek, first_last, wrapped)
    formatted = _cbc_decrypt(spec, kek, iv, first)
    length = formatted[0]
    if length < 3 or 4 + length > len(formatted):
        return None
    if any(a ^ b != 0xFF for a, b in zip(formatted[1:4], formatted[4:7], strict=True)):
        return None
    return formatted[4 : 4 + length]


#: the PKCS#7 pad of a last block lacking n bytes (RFC 5652 §6.3), n = 1..16
_PADS = tuple(bytes((n,)) * n for n in range(17))
#: frames remembered per layout (one per ciphertext length: a run's sizes repeat)
_MAX_FRAMES = 1024


class _Frame(NamedTuple):
    """The DER of an envelope around its drawn parts, for one ciphertext length: ``front``
    (ContentInfo, EnvelopedData and SET OF headers, the version), the recipient infos,
    ``back`` (EncryptedContentInfo up to the IV), the IV, ``tail`` (the [0] IMPLICIT
    encryptedContent header), the ciphertext.  ``size``: the whole DER's length."""

    front: bytes
    back: bytes
    tail: bytes
    size: int


class _Layout:
    """What every envelope of one encryptor shares (RFC 5652 §6.1), built once per process:
    the recipient infos up to their drawn parts (every one has a fixed length: RSA output
    of the modulus' size, a key wrap of fixed blocks) and, per ciphertext length, the
    headers around them.  Per file only the content key and IV, the RSA outputs and the
    password recipient's KEK IV and wrap are drawn and computed."""

    __slots__ = (
        "_eci_head",
        "_frames",
        "_infos_length",
        "_password",
        "_pwri_head",
        "_pwri_wrapped_header",
        "_recipients",
        "_version_and_set",
        "spec",
    )

    def __init__(self, encryptor: EnvelopeEncryptor) -> None:
        spec = self.spec = _CBC_CIPHERS[_CIPHER_OIDS[encryptor.cipher]]
        self._recipients = tuple(map(_recipient, encryptor.certificates))
        infos_length = sum(len(r.head) + (r.public_key.key_size + 7) // 8
                           for r in self._recipients)
        self._password: tuple[bytes, int] | None = None
        self._pwri_head = self._pwri_wrapped_header = b""
        if encryptor.password is not None:
            # [3] PasswordRecipientInfo (RFC 3211 §2.2) as ``openssl cms -pwri_password``
            # writes it: all but the KEK IV and the wrapped key is the same in every file
            salt, kek = encryptor.__dict__["_password_kek"]
            self._password = kek, _pwri_wrapped_size(spec)
            kdf_params = _tlv(_SEQUENCE, _tlv(_OCTET_STRING, salt)
                              + _integer(encryptor.pbkdf2_iterations))
            kdf = _tlv(0xA0, _DER_PBKDF2_OID + kdf_params)  # [0] IMPLICIT AlgorithmIdentifier
            kek_head = _DER_PWRI_KEK_OID + _CIPHER_ID_HEADS[spec.oid]
            kek_algorithm = _header(_SEQUENCE, len(kek_head) + spec.block_size) + kek_head
            self._pwri_wrapped_header = _header(_OCTET_STRING, self._password[1])
            content = (len(_DER_VERSION_0) + len(kdf) + len(kek_algorithm) + spec.block_size
                       + len(self._pwri_wrapped_header) + self._password[1])
            self._pwri_head = _header(0xA3, content) + _DER_VERSION_0 + kdf + kek_algorithm
            infos_length += len(_header(0xA3, content)) + content
        version = _DER_VERSION_0 if encryptor.password is None else _DER_VERSION_3
        self._version_and_set = version + _header(_SET, infos_length)
        self._infos_length = infos_length
        self._eci_head = _DER_ID_DATA + _CIPHER_ID_HEADS[spec.oid]  # up to the IV
        self._frames: dict[int, _Frame] = {}

    def draw(self) -> tuple[bytes, bytes, list[bytes]]:
        """A fresh content key and IV (one per file, never reused), and the recipient infos
        that carry the key, in DER SET OF order (X.690 §11.6, as OpenSSL writes them)."""
        spec = self.spec
        fresh = os.urandom(spec.key_size + spec.block_size)
        cek, iv = fresh[: spec.key_size], fresh[spec.key_size :]
        if spec.algorithm is TripleDES:
            cek = cek.translate(_DES_ODD_PARITY)
        infos = [r.head + r.public_key.encrypt(cek, _PKCS1V15) for r in self._recipients]
        if self._password is not None:
            kek_iv = os.urandom(spec.block_size)
            infos.append(self._pwri_head + kek_iv + self._pwri_wrapped_header
                         + _pwri_wrap(spec, self._password[0], kek_iv, cek))
        if len(infos) > 1:
            infos.sort()
        return cek, iv, infos

    def frame(self, encrypted: int) -> _Frame:
        """The headers of an envelope whose ciphertext is ``encrypted`` bytes (RFC 5652 §3,
        §6.1): every DER length follows from it."""
        frame = self._frames.get(encrypted)
        if frame is None:
            tail = _header(0x80, encrypted)
            eci_length = len(self._eci_head) + self.spec.block_size + len(tail) + encrypted
            back = _header(_SEQUENCE, eci_length) + self._eci_head
            enveloped_length = (len(self._version_and_set) + self._infos_length + len(back)
                                - len(self._eci_head) + eci_length)
            enveloped = _header(_SEQUENCE, enveloped_length)
            explicit = _header(0xA0, len(enveloped) + enveloped_length)  # [0] EXPLICIT
            outer_length = (len(_DER_CONTENT_INFO_OID) + len(explicit) + len(enveloped)
                            + enveloped_length)
            front = (_header(_SEQUENCE, outer_length) + _DER_CONTENT_INFO_OID + explicit
                     + enveloped + self._version_and_set)
            size = len(front) + self._infos_length + len(back) - len(self._eci_head) \
                + eci_length
            if len(self._frames) >= _MAX_FRAMES:
                self._frames.clear()
            frame = self._frames[encrypted] = _Frame(front, back, tail, size)
        return frame


def _pwri_wrapped_size(spec: _BlockCipher) -> int:
    """The length of a content key wrapped by :func:`_pwri_wrap`."""
    return max(2 * spec.block_size, -(-(4 + spec.key_size) // spec.block_size) * spec.block_size)


class EnvelopeEncryptor(FieldEquality):
    """Writes a DER ContentInfo(EnvelopedData) as gdcmanon/OpenSSL does.

    One KeyTransRecipientInfo per certificate, plus a PasswordRecipientInfo when
    ``password`` is set (then EnvelopedData v3, RFC 5652 §6.1).  Holds only DER and plain
    values, so it pickles small; each process builds its layout (:class:`_Layout`) lazily.
    Immutable, compared and hashed by its :attr:`_fields` (which an operation's
    fingerprint reads: ``pipeline.plan.op_fingerprint``).
    """

    _fields = ("certificates", "cipher", "password", "pbkdf2_iterations")
    certificates: tuple[bytes, ...]
    cipher: Cipher
    password: bytes | None
    #: PBKDF2 iterations of the password recipient (OpenSSL's own 2,048 only to compare
    #: layouts with ``openssl cms`` in tests)
    pbkdf2_iterations: int

    def __init__(self, certificates: Iterable[bytes], cipher: Cipher | str = Cipher.AES256,
                 password: bytes | None = None,
                 pbkdf2_iterations: int = PBKDF2_ITERATIONS) -> None:
        if isinstance(certificates, bytes | bytearray):
            raise CryptoError("certificates must be a tuple of DER certificates, not one bytes")
        object.__setattr__(self, "certificates", tuple(bytes(c) for c in certificates))
        try:
            object.__setattr__(self, "cipher", Cipher(cipher))
        except ValueError:
            choices = ", ".join(c.value for c in Cipher)
            raise CryptoError(f"unsupported cipher {cipher!r}: use one of {choices}") from None
        object.__setattr__(self, "password", password)
        object.__setattr__(self, "pbkdf2_iterations", pbkdf2_iterations)
        if self.password is not None and not self.password:
            raise CryptoError("the envelope password is empty")
        if self.password is not None:
            spec = _CBC_CIPHERS[_CIPHER_OIDS[self.cipher]]
            salt = os.urandom(_PBKDF2_SALT_SIZE)
            kek = _derive_kek(hashes.SHA1, spec.key_size, salt, self.pbkdf2_iterations,
                              self.password)
            object.__setattr__(self, "_password_kek", (salt, kek))
        if not self.certificates and self.password is None:
            raise CryptoError("an envelope needs at least one certificate or a password")
        for index, der in enumerate(self.certificates):
            try:
                _recipient(der)  # fail here, where the options are read, not on a worker
            except CryptoError as exc:
                raise CryptoError(f"certificate #{index + 1}: {exc}") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"an EnvelopeEncryptor is immutable: cannot set {name}")

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state: the layout (RSA key objects) is rebuilt where it is used."""
        return {k: v for k, v in self.__dict__.items() if k != "_built_layout"}

    def __repr__(self) -> str:  # never show the password
        recipients = ", ".join(certificate_fingerprint(c)[:16] for c in self.certificates)
        return (
            f"EnvelopeEncryptor(certificates=[{recipients}], cipher={self.cipher.value}, "
            f"password={'set' if self.password is not None else 'none'})"
        )

    def _layout(self) -> _Layout:
        layout: _Layout | None = self.__dict__.get("_built_layout")
        if layout is None:
            layout = _Layout(self)
            object.__setattr__(self, "_built_layout", layout)
        return layout

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt under a fresh content key and IV; PKCS#7 block padding (RFC 5652 §6.3).
        The bytes are those of :meth:`open` fed ``plaintext``, in one piece."""
        layout = self._layout()
        spec = layout.spec
        cek, iv, infos = layout.draw()
        pad = spec.block_size - len(plaintext) % spec.block_size
        frame = layout.frame(len(plaintext) + pad)
        context = _CipherContext(spec.algorithm(cek), modes.CBC(iv)).encryptor()
        return b"".join((frame.front, *infos, frame.back, iv, frame.tail,
                         context.update(plaintext + _PADS[pad]), context.finalize()))

    def open(self, length: int) -> StreamingEnvelope:
        """The envelope of a plaintext of ``length`` bytes, to be encrypted in pieces: every
        DER length is known from ``length`` (CBC with PKCS#7 padding gives whole blocks,
        one more than ``length // block``), so the DER up to the ciphertext comes first and
        the plaintext never needs to be held whole (a cine's original pixel data)."""
        layout = self._layout()
        spec = layout.spec
        cek, iv, infos = layout.draw()
        frame = layout.frame((length // spec.block_size + 1) * spec.block_size)
        head = b"".join((frame.front, *infos, frame.back, iv, frame.tail))
        context = _CipherContext(spec.algorithm(cek), modes.CBC(iv)).encryptor()
        return StreamingEnvelope(head, frame.size, spec.block_size, length, context)


class StreamingEnvelope:
    """A DER ContentInfo(EnvelopedData) written in order: :attr:`head` (everything up to
    the ciphertext), then :meth:`update` of each piece of the plaintext, then
    :meth:`finish` (the last block, padded).  :attr:`size` is the whole DER's length."""

    __slots__ = ("_context", "block_size", "head", "left", "length", "size")

    def __init__(self, head: bytes, size: int, block_size: int, length: int,
                 context: Any) -> None:
        self.head = head
        self.size = size
        self.block_size = block_size
        self.length = length  # of the plaintext
        self.left = length  # plaintext bytes still to come
        self._context = context

    def update(self, data: bytes | memoryview) -> bytes:
        """The ciphertext of the next ``data`` (whole blocks so far; the rest is held)."""
        if len(data) > self.left:
            raise CryptoError("more plaintext than the envelope was opened for")
        self.left -= len(data)
        return self._context.update(data)  # type: ignore[no-any-return]

    def finish(self) -> bytes:
        """The padded last block (RFC 5652 §6.3); the plaintext must all have come."""
        if self.left:
            raise CryptoError(f"the plaintext ended {self.left} bytes early")
        pad = self.block_size - self.length % self.block_size
        return self._context.update(_PADS[pad]) + self._context.finalize()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- decryption


@functools.cache
def _gcm_parameters() -> type[core.Sequence]:
    """GCMParameters (RFC 5084 §3.2), defined on first use (asn1crypto is imported for
    decryption only)."""
    from asn1crypto import core

    class GcmParameters(core.Sequence):
        _fields: ClassVar[list[tuple[Any, ...]]] = [
            ("nonce", core.OctetString),
            ("icv_len", core.Integer, {"default": 12}),
        ]

    return GcmParameters


class _Content(NamedTuple):
    """What is needed to decrypt the content once the content key is known."""

    key_size: int
    decrypt: Callable[[bytes], bytes | None]  # content key -> plaintext, None if wrong key


class _KeyTrans(NamedTuple):
    padding: padding.AsymmetricPadding
    encrypted_key: bytes


class _Password(NamedTuple):
    prf: Callable[[], hashes.HashAlgorithm]
    salt: bytes
    iterations: int
    key_length: int | None
    kek_cipher: _BlockCipher
    kek_iv: bytes
    encrypted_key: bytes


class _Envelope(NamedTuple):
    content: _Content
    key_trans: list[_KeyTrans]
    passwords: list[_Password]
    unsupported: list[str]  # recipient algorithms we skipped, for the error message
    other_kinds: list[str]  # kari, kekri, ori


_NOT_ENVELOPED = "payload is not a CMS EnvelopedData"


def _named(oid: core.ObjectIdentifier) -> str:
    name = oid.native
    return oid.dotted if name == oid.dotted else f"{oid.dotted} ({name})"


def _octets(value: core.Asn1Value) -> bytes:
    from asn1crypto import core

    return core.OctetString.load(value.dump()).native


def _cbc_content(spec: _BlockCipher, iv: bytes, encrypted: bytes) -> _Content:
    if len(iv) != spec.block_size:
        raise CryptoError(f"corrupt envelope: {spec.name} IV of {len(iv)} bytes")
    if not encrypted or len(encrypted) % spec.block_size:
        raise CryptoError(
            f"corrupt envelope: {len(encrypted)} encrypted bytes is not a whole number of "
            f"{spec.name} blocks"
        )

    def decrypt(cek: bytes) -> bytes | None:
        # With the wrong key (RSA implicit rejection hands back a random key) the padding is
        # what tells: RFC 5652 §6.3 padding must be 1..block bytes all equal to its length.
        plain = _cbc_decrypt(spec, cek, iv, encrypted)
        pad = plain[-1]
        if not 1 <= pad <= spec.block_size or plain[-pad:] != bytes((pad,)) * pad:
            return None
        return plain[:-pad]

    return _Content(spec.key_size, decrypt)


def _gcm_content(
    key_size: int, params: core.Sequence, encrypted: bytes, mac: bytes, aad: bytes
) -> _Content:
    nonce = params["nonce"].native
    if not 8 <= len(nonce) <= 128:  # what the GCM mode accepts
        raise CryptoError(f"corrupt envelope: AES-GCM nonce of {len(nonce)} bytes")
    if len(mac) != params["icv_len"].native or len(mac) < 12:
        raise CryptoError(f"corrupt envelope: AES-GCM tag of {len(mac)} bytes")

    def decrypt(cek: bytes) -> bytes | None:
        decryptor = _CipherContext(
            algorithms.AES(cek), modes.GCM(nonce, mac, min_tag_length=len(mac))
        ).decryptor()
        if aad:
            decryptor.authenticate_additional_data(aad)
        try:
            return decryptor.update(encrypted) + decryptor.finalize()
        except InvalidTag:
            return None

    return _Content(key_size, decrypt)


def _oaep(parameters: core.Asn1Value) -> padding.AsymmetricPadding | str:
    """RSAES-OAEP-params (RFC 4055 §4.1, RFC 8017 §A.2.1); an OID string when unsupported."""
    from asn1crypto import algos

    params = algos.RSAESOAEPParams.load(parameters.dump()) if parameters.contents else None
    if params is None:  # absent parameters: every field takes its DEFAULT (SHA-1, MGF1-SHA-1)
        params = algos.RSAESOAEPParams()
    digest = params["hash_algorithm"]["algorithm"]
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].dotted != _OID_MGF1:
        return _named(mgf["algorithm"])
    mgf_digest = mgf["parameters"]["algorithm"]
    for oid in (digest, mgf_digest):
        if oid.dotted not in _DIGESTS:
            return _named(oid)
    label = params["p_source_algorithm"]["parameters"].native or None
    return padding.OAEP(
        mgf=padding.MGF1(_DIGESTS[mgf_digest.dotted]()),
        algorithm=_DIGESTS[digest.dotted](),
        label=label,
    )


def _password_info(info: cms.PasswordRecipientInfo) -> _Password | str:
    """PasswordRecipientInfo with PBKDF2 and id-alg-PWRI-KEK; an OID string when unsupported."""
    from asn1crypto import algos

    kdf = info["key_derivation_algorithm"]
    if not kdf.contents:
        return "PasswordRecipientInfo without keyDerivationAlgorithm"
    if kdf["algorithm"].dotted != _OID_PBKDF2:
        return _named(kdf["algorithm"])
    params = algos.Pbkdf2Params.load(kdf["parameters"].dump())
    if params["salt"].name != "specified":
        return "PBKDF2 with a non-specified salt"
    prf = params["prf"]["algorithm"]
    if prf.dotted not in _HMAC_PRFS:
        return _named(prf)
    iterations = params["iteration_count"].native
    if not 1 <= iterations <= _PBKDF2_MAX_ITERATIONS:
        raise CryptoError(f"corrupt envelope: PBKDF2 iteration count {iterations}")
    kek_algorithm = info["key_encryption_algorithm"]
    if kek_algorithm["algorithm"].dotted != _OID_PWRI_KEK:
        return _named(kek_algorithm["algorithm"])
    inner = algos.EncryptionAlgorithm.load(kek_algorithm["parameters"].dump())
    kek_cipher = _CBC_CIPHERS.get(inner["algorithm"].dotted)
    if kek_cipher is None:
        return _named(inner["algorithm"])
    return _Password(
        prf=_HMAC_PRFS[prf.dotted],
        salt=params["salt"].chosen.native,
        iterations=iterations,
        key_length=params["key_length"].native,
        kek_cipher=kek_cipher,
        kek_iv=_octets(inner["parameters"]),
        encrypted_key=info["encrypted_key"].native,
    )


def _parse(blob: bytes) -> _Envelope:
    """Parse DER or BER; bytes after the outer TLV are ignored (gdcmanon's 0x00 pad)."""
    from asn1crypto import cms

    try:
        content_info = cms.ContentInfo.load(bytes(blob), strict=False)
        content_type = content_info["content_type"]
        if content_type.dotted == _OID_ENVELOPED_DATA:
            enveloped = content_info["content"]
            eci = enveloped["encrypted_content_info"]
        elif content_type.dotted == _OID_AUTH_ENVELOPED_DATA:
            enveloped = content_info["content"]
            eci = enveloped["auth_encrypted_content_info"]
        else:
            raise CryptoError(f"{_NOT_ENVELOPED} (content type {_named(content_type)})")

        algorithm = eci["content_encryption_algorithm"]
        encrypted = eci["encrypted_content"].native
        if encrypted is None:
            raise CryptoError("corrupt envelope: no encryptedContent (detached content)")
        oid = algorithm["algorithm"].dotted
        if content_type.dotted == _OID_ENVELOPED_DATA and oid in _CBC_CIPHERS:
            content = _cbc_content(_CBC_CIPHERS[oid], _octets(algorithm["parameters"]), encrypted)
        elif content_type.dotted == _OID_AUTH_ENVELOPED_DATA and oid in _GCM_KEY_SIZES:
            auth_attrs = enveloped["auth_attrs"]
            # RFC 5083 §2.2: the AAD is the DER of authAttrs with an EXPLICIT SET OF tag.
            aad = _tlv(_SET, auth_attrs.contents) if auth_attrs.contents else b""
            content = _gcm_content(
                _GCM_KEY_SIZES[oid],
                _gcm_parameters().load(algorithm["parameters"].dump()),
                encrypted,
                enveloped["mac"].native,
                aad,
            )
        else:
            raise CryptoError(
                f"unsupported content encryption algorithm {_named(algorithm['algorithm'])}"
            )

        envelope = _Envelope(content, [], [], [], [])
        for recipient in enveloped["recipient_infos"]:
            info = recipient.chosen
            if recipient.name == "ktri":
                key_algorithm = info["key_encryption_algorithm"]
                kind = key_algorithm["algorithm"].dotted
                chosen: padding.AsymmetricPadding | str
                if kind == _OID_RSA_ENCRYPTION:
                    chosen = _PKCS1V15
                elif kind == _OID_RSAES_OAEP:
                    chosen = _oaep(key_algorithm["parameters"])
                else:
                    chosen = _named(key_algorithm["algorithm"])
                if isinstance(chosen, str):
                    envelope.unsupported.append(chosen)
                else:
                    envelope.key_trans.append(_KeyTrans(chosen, info["encrypted_key"].native))
            elif recipient.name == "pwri":
                password_info = _password_info(info)
                if isinstance(password_info, str):
                    envelope.unsupported.append(password_info)
                else:
                    envelope.passwords.append(password_info)
            else:
                envelope.other_kinds.append(recipient.name)
        return envelope
    except CryptoError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
        raise CryptoError(f"{_NOT_ENVELOPED} (malformed ASN.1)") from None


def _content_key_from_rsa(private_key: PrivateKey, recipient: _KeyTrans) -> bytes | None:
    try:
        return private_key.decrypt(recipient.encrypted_key, recipient.padding)
    except ValueError:  # OAEP failure, or PKCS#1 v1.5 where the backend still raises
        return None


_KEKS: dict[tuple[bytes, ...], bytes] = {}  # the last few derivations of this process


def _derive_kek(prf: Callable[[], hashes.HashAlgorithm], size: int, salt: bytes,
                iterations: int, password: bytes) -> bytes:
    """PBKDF2 (RFC 8018 §5.2), remembered: every file of one run shares the salt, so a
    directory of password-only payloads costs one derivation per process, not per file."""
    key = (prf().name.encode(), size.to_bytes(2, "big"), salt, iterations.to_bytes(4, "big"),
           hashlib.sha256(password).digest())
    kek = _KEKS.get(key)
    if kek is None:
        kek = PBKDF2HMAC(prf(), size, salt, iterations).derive(password)
        if len(_KEKS) >= 8:
            _KEKS.clear()
        _KEKS[key] = kek
    return kek


def _content_key_from_password(password: bytes, recipient: _Password) -> bytes | None:
    spec = recipient.kek_cipher
    if (
        recipient.key_length not in (None, spec.key_size)
        or len(recipient.kek_iv) != spec.block_size
    ):
        return None
    kek = _derive_kek(recipient.prf, spec.key_size, recipient.salt, recipient.iterations,
                      password)
    return _pwri_unwrap(spec, kek, recipient.kek_iv, recipient.encrypted_key)


def _open(content: _Content, cek: bytes | None) -> bytes | None:
    """The plaintext if ``cek`` is the content key, else None (length, then padding or tag)."""
    if cek is None or len(cek) != content.key_size:
        return None
    return content.decrypt(cek)


def decrypt_envelope(
    blob: bytes, private_key: PrivateKey | None = None, password: bytes | None = None
) -> bytes:
    """Open a CMS EnvelopedData (or AES-GCM AuthEnvelopedData) with an RSA key or a password.

    Every KeyTransRecipientInfo is tried with ``private_key`` (no certificate needed), then
    every PasswordRecipientInfo with ``password``.  RSA PKCS#1 v1.5 with the wrong key does
    not fail under OpenSSL >= 3.2 (implicit rejection: a random key comes back): a candidate key
    counts only if its length fits the cipher and the content's padding (or GCM tag) checks.
    CBC has no integrity: a wrong key passes those checks about once in 70 000 tries, and
    a damaged ciphertext block can decrypt to damaged plaintext, so the caller must still
    parse what comes back.
    """
    _check_key(private_key, password)
    return _opened(_parse(blob), private_key, password)[1]


def _check_key(private_key: PrivateKey | None, password: bytes | None) -> None:
    if private_key is None and password is None:
        raise CryptoError("cannot decrypt the payload: no private key and no password given")
    if private_key is not None and not isinstance(private_key, rsa.RSAPrivateKey):
        raise CryptoError(
            f"cannot decrypt the payload: key type {_key_type(private_key)}; "
            "only RSA keys are supported"
        )


def _opened(envelope: _Envelope, private_key: PrivateKey | None, password: bytes | None
            ) -> tuple[bytes, bytes]:
    """The content key and the plaintext (see :func:`decrypt_envelope`)."""
    content = envelope.content
    tried: list[str] = []

    if private_key is not None and envelope.key_trans:
        tried.append("key")
        size = (private_key.key_size + 7) // 8
        for ktri in envelope.key_trans:
            if len(ktri.encrypted_key) == size:  # else it was made for a key of another size
                cek = _content_key_from_rsa(private_key, ktri)
                plaintext = _open(content, cek)
                if plaintext is not None and cek is not None:
                    return cek, plaintext

    if password is not None and envelope.passwords:
        tried.append("password")
        for pwri in envelope.passwords:
            cek = _content_key_from_password(password, pwri)
            plaintext = _open(content, cek)
            if plaintext is not None and cek is not None:
                return cek, plaintext

    if tried:
        raise CryptoError(
            f"cannot decrypt the payload: wrong {' or '.join(tried)} or corrupt envelope"
        )
    if envelope.unsupported:
        raise CryptoError(
            "cannot decrypt the payload: unsupported recipient algorithm "
            + ", ".join(dict.fromkeys(envelope.unsupported))
        )
    present = [
        kind
        for kind, found in (
            ("KeyTransRecipientInfo (needs the private key)", envelope.key_trans),
            ("PasswordRecipientInfo (needs the password)", envelope.passwords),
        )
        if found
    ] + [f"{kind} (not supported)" for kind in dict.fromkeys(envelope.other_kinds)]
    raise CryptoError(
        "cannot decrypt the payload: no recipient matches what was given; the envelope has "
        + (", ".join(present) or "no recipients")
    )


# --------------------------------------------------------------------------- decryption in pieces

#: ``(offset, count)`` -> that many bytes of a DER envelope, read where it is stored
ReadBytes: TypeAlias = Callable[[int, int], bytes]


class CbcContent(NamedTuple):
    """The CBC content of an EnvelopedData whose key was found, decrypted by range: a CBC
    block needs only the ciphertext block before it, so any part of the plaintext comes
    without the rest (a payload holding a cine's pixel data is never held whole).  The
    padding was checked when the key was found; :attr:`length` excludes it."""

    spec: _BlockCipher
    key: bytes
    iv: bytes
    read: ReadBytes  # the ciphertext by (offset, count)
    length: int

    def plaintext(self, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The plaintext bytes ``[start, end)``, about ``chunk`` at a time."""
        if not 0 <= start <= end <= self.length:
            raise CryptoError("corrupt payload: a range outside its plaintext")
        block = self.spec.block_size
        pos = start // block * block
        iv = self.iv if pos == 0 else self._ciphertext(pos - block, block)
        decryptor = _CipherContext(self.spec.algorithm(self.key), modes.CBC(iv)).decryptor()
        chunk = max(chunk // block, 1) * block
        while pos < end:
            count = min(chunk, -(-(end - pos) // block) * block)
            data = decryptor.update(self._ciphertext(pos, count))
            yield data[max(start - pos, 0):min(count, end - pos)]
            pos += count

    def _ciphertext(self, offset: int, count: int) -> bytes:
        data = self.read(offset, count)
        if len(data) != count:
            raise CryptoError("corrupt envelope: the ciphertext ends early")
        return data


def _der_header(der: bytes, pos: int, tag: int) -> tuple[int, int]:
    """Where the content of the definite-length ``tag`` TLV at ``pos`` starts, and its
    length (X.690 §8.1); ValueError for anything else (another tag, BER indefinite)."""
    if pos + 2 > len(der) or der[pos] != tag:
        raise ValueError("unexpected DER")
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2, first
    size = first & 0x7F
    if not 1 <= size <= 4 or pos + 2 + size > len(der):
        raise ValueError("unexpected DER")
    return pos + 2 + size, int.from_bytes(der[pos + 2:pos + 2 + size], "big")


def open_envelope_in_pieces(head: bytes, size: int, read: ReadBytes,
                            private_key: PrivateKey | None = None,
                            password: bytes | None = None) -> CbcContent | None:
    """:func:`decrypt_envelope` of a large DER EnvelopedData of ``size`` bytes without
    decrypting it: ``head`` is its first bytes (up to the ciphertext at least), ``read``
    reads any of its bytes.  The content key is found as there (the same recipients
    tried, the same errors), its padding checked on the last two ciphertext blocks (the
    last one decrypts with the one before as IV).  None when the envelope is not the shape
    ``EnvelopedData``/CBC/one primitive encryptedContent in DER: decrypt it whole."""
    _check_key(private_key, password)
    try:  # ContentInfo { contentType, [0] EnvelopedData { version, ..., recipientInfos,
        # EncryptedContentInfo { contentType, algorithm, [0] IMPLICIT ciphertext } } }
        pos, _ = _der_header(head, 0, _SEQUENCE)
        if head[pos:pos + len(_DER_CONTENT_INFO_OID)] != _DER_CONTENT_INFO_OID:
            return None
        pos, _ = _der_header(head, pos + len(_DER_CONTENT_INFO_OID), 0xA0)
        start, _ = _der_header(head, pos, _SEQUENCE)
        pos = start
        while head[pos:pos + 1] != bytes((_SEQUENCE,)):  # version, originator, recipients
            if head[pos:pos + 1] not in (b"\x02", b"\xa0", b"\x31"):
                return None
            content, length = _der_header(head, pos, head[pos])
            pos = content + length
        recipients = head[start:pos]
        pos, _ = _der_header(head, pos, _SEQUENCE)
        content, length = _der_header(head, pos, 0x06)
        algorithm_at = content + length
        content, length = _der_header(head, algorithm_at, _SEQUENCE)
        algorithm = head[algorithm_at:content + length]
        at, encrypted = _der_header(head, content + length, 0x80)
        from asn1crypto import algos

        parsed = algos.EncryptionAlgorithm.load(algorithm)
        spec = _CBC_CIPHERS.get(parsed["algorithm"].dotted)
        iv = _octets(parsed["parameters"]) if spec is not None else b""
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        return None
    if (spec is None or len(iv) != spec.block_size or not encrypted
            or encrypted % spec.block_size or at + encrypted > size):
        return None  # decrypted whole, which says what is wrong
    # the envelope with its last two ciphertext blocks only: the same recipients, the same
    # padding check (a two-block tail decrypts its first block wrong, its last one right)
    tail_at = at + max(encrypted - 2 * spec.block_size, 0)
    tail = read(tail_at, at + encrypted - tail_at)
    if len(tail) != at + encrypted - tail_at:
        raise CryptoError("corrupt envelope: the ciphertext ends early")
    eci = _tlv(_SEQUENCE, _DER_ID_DATA + algorithm + _tlv(0x80, tail))
    enveloped = _tlv(_SEQUENCE, recipients + eci)
    shortened = _tlv(_SEQUENCE, _DER_CONTENT_INFO_OID + _tlv(0xA0, enveloped))
    key, last = _opened(_parse(shortened), private_key, password)
    return CbcContent(spec, key, iv, lambda offset, count: read(at + offset, count),
                      encrypted - (len(tail) - len(last)))
