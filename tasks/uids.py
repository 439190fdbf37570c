"""Deterministic replacement values derived by HMAC-SHA256 from a secret.

The same secret and original give the same replacement on every worker, in every run and
at every site, which is what keeps a study consistent across files without a shared map.
The secret never leaves the driver's state folder except inside the settings
shipped to workers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from typing import Any

from tasks.errors import UsageError

#: PS3.5 B.2: UUID-derived UIDs need no registered root.
DEFAULT_ROOT = "2.25"
GDCM_ROOT = "1.2.826.0.1.3680043.2.1143"
MIN_SUFFIX_DIGITS = 20
_ROOT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def validate_root(root: str) -> str:
    """Check a root UID and that it leaves room for collision-free suffixes.

    gdcmanon accepts 61-64 character roots and then collides or segfaults; we refuse.
    """
    if not _ROOT_RE.match(root):
        raise UsageError(f"specified Root UID is not valid: {root!r} (digits and dots, "
                         "no empty component, no leading zero)")
    digits = 64 - len(root) - 1
    if digits < MIN_SUFFIX_DIGITS:
        raise UsageError(f"Root UID {root!r} is too long: it leaves {max(digits, 0)} digits "
                         f"for the unique part, at least {MIN_SUFFIX_DIGITS} are needed")
    return root


def _digest(secret: bytes, domain: bytes, value: bytes) -> bytes:
    """HMAC-SHA256 of ``domain + b"\\0" + value`` under ``secret`` (RFC 2104), from the
    inner and outer states keyed once per secret and domain: the key's two blocks and the
    domain are hashed once per run, not once per value (half the instructions of
    ``hmac.digest``, the same digest)."""
    inner, outer = _keyed(secret, domain)
    inner = inner.copy()
    inner.update(value)
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.digest()


@functools.lru_cache(maxsize=64)
def _keyed(secret: bytes, domain: bytes) -> tuple[Any, Any]:
    """SHA-256 states of HMAC's inner pad with ``domain + b"\\0"`` fed, and of its outer
    pad (RFC 2104: a key longer than the block is hashed first)."""
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    inner.update(domain + b"\0")
    return inner, hashlib.sha256(key.translate(_OPAD))


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def new_uid(secret: bytes, root: str, original: str) -> str:
    """Replacement UID for ``original`` under ``root`` (at most 64 characters).

    Cached per process: the study, series and frame-of-reference UIDs of a batch repeat
    in every file of it.
    """
    return _new_uid(bytes(secret), root, original)


@functools.lru_cache(maxsize=8192)
def _new_uid(secret: bytes, root: str, original: str) -> str:
    number = int.from_bytes(_digest(secret, b"uid", original.encode("ascii", "replace"))[:16])
    digits = 64 - len(root) - 1
    if root == DEFAULT_ROOT or digits >= 39:
        suffix = number
    else:
        suffix = number % (10 ** digits)
    return f"{root}.{suffix or 1}"


_B32 = str.maketrans("", "", "=")


def pseudonym(secret: bytes, domain: str, original: bytes, length: int) -> str:
    """An upper-case alphanumeric code of ``length`` characters for ``original``."""
    return _pseudonym(bytes(secret), domain, bytes(original), length)


@functools.lru_cache(maxsize=8192)  # a patient's values repeat in every file of theirs
def _pseudonym(secret: bytes, domain: str, original: bytes, length: int) -> str:
    code = base64.b32encode(_digest(secret, domain.encode(), original)).decode().translate(_B32)
    return code[:length]


def secret_fingerprint(secret: bytes) -> str:
    """A short public fingerprint of the secret, for reports (never the secret)."""
    return hashlib.sha256(b"anonpipe-secret-fingerprint\0" + secret).hexdigest()[:16]


# --------------------------------------------------------------------------- registered UIDs

#: PS3.5 9.1: the DICOM root, reserved for the UIDs PS3.6 Annex A registers
DICOM_ROOT = "1.2.840.10008."

#: Attributes whose UID names a definition (a SOP Class, a Transfer Syntax, a coding scheme,
#: a context group or template's creator, the software that made the instance), never an
#: instance: kept whatever the value, a private SOP Class included (PS3.3 C.12.1, PS3.3
#: Table 8.8-1, PS3.10 7.1).  Every other UI value is an instance UID unless registered.
DEFINITION_UID_TAGS: dict[int, str] = {
    0x00000002: "AffectedSOPClassUID",
    0x00000003: "RequestedSOPClassUID",
    0x00020002: "MediaStorageSOPClassUID",
    0x00020010: "TransferSyntaxUID",
    0x00020012: "ImplementationClassUID",
    0x00020032: "RTVCommunicationSOPClassUID",
    0x00041510: "ReferencedSOPClassUIDInFile",
    0x00041512: "ReferencedTransferSyntaxUIDInFile",
    0x0004151A: "ReferencedRelatedGeneralSOPClassUIDInFile",
    0x00080016: "SOPClassUID",
    0x0008001A: "RelatedGeneralSOPClassUID",
    0x0008001B: "OriginalSpecializedSOPClassUID",
    0x00080062: "SOPClassesInStudy",
    0x0008010C: "CodingSchemeUID",
    0x0008010D: "ContextGroupExtensionCreatorUID",
    0x00080117: "ContextUID",
    0x00080118: "MappingResourceUID",
    0x0008040E: "StoredInstanceTransferSyntaxUID",
    0x00081150: "ReferencedSOPClassUID",
    0x0008115A: "SOPClassesSupported",
    0x00083002: "AvailableTransferSyntaxUID",
    0x00089123: "CreatorVersionUID",
    0x00340003: "FlowTransferSyntaxUID",
    0x04000010: "MACCalculationTransferSyntaxUID",
    0x04000510: "EncryptedContentTransferSyntaxUID",
    0x0040DB0C: "TemplateExtensionOrganizationUID",
    0x0040DB0D: "TemplateExtensionCreatorUID",
    0x30100052: "PertinentSOPClassesInStudy",
    0x30100053: "PertinentSOPClassesInSeries",
}


@functools.cache
def _registry() -> Callable[[str], tuple[str, str] | None]:
    """PS3.6 Annex A's look-up (``tasks.datadict``), loaded on first need: only UIDs under
    the DICOM root are looked up, so most runs never load it."""
    from tasks.datadict import registered_uid

    return registered_uid


def registered(uid: str) -> str | None:
    """The PS3.6 Annex A name of ``uid`` (a SOP Class, a Transfer Syntax, a well-known frame
    of reference or SOP instance, a coding scheme...), or None: then it is an instance UID."""
    if not uid.startswith(DICOM_ROOT):
        return None  # PS3.5 9.1: registered UIDs live under the DICOM root
    entry = _registry()(uid)
    return None if entry is None else f"{entry[1]}: {entry[0]}"


def instance_uids(value: bytes) -> bool:
    """Whether a UI value holds at least one UID that is not registered (an instance UID)."""
    for part in value.rstrip(b"\0 ").split(b"\\"):
        uid = part.strip(b"\0 ")
        if uid and (not uid.startswith(b"1.2.840.10008.")
                    or registered(uid.decode("ascii", "replace")) is None):
            return True
    return False
