"""Deterministic replacement values derived by HMAC-SHA256 from a secret.

The same secret and original give the same replacement on every worker, in every run and
at every site, which is what keeps a study consistent across files without a shared map
(STYLE.md 5).  The secret never leaves the driver's state folder except inside the settings
shipped to workers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re

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
    return hmac.digest(secret, domain + b"\0" + value, "sha256")  # one-shot: C fast path


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
