"""The per-user state folder: secrets, stores and run reports live here, never in an output."""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path

from tasks.errors import UsageError

SECRET_BYTES = 32


def state_dir() -> Path:
    """``$ANONPIPE_STATE_DIR``, else ``$XDG_STATE_HOME/anonpipe``, else ~/.local/state/anonpipe."""
    explicit = os.environ.get("ANONPIPE_STATE_DIR")
    if explicit:
        base = Path(explicit)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "anonpipe"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def check_private(path: Path) -> None:
    """Refuse a secret or store that group or others can read (it links PHI to pseudonyms)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )


def load_or_create_secret(path: Path) -> bytes:
    """Read the HMAC secret at ``path``, creating it (mode 0600) on first use."""
    try:
        if not path.exists():
            _create_secret(path)
        check_private(path)
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot use the secret file {path}: {reason}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    if len(secret) < 16:
        raise UsageError(f"secret file {path} holds fewer than 16 bytes")
    return secret


def _create_secret(path: Path) -> None:
    """Write a new secret to a private temp file, then link it in under ``path``.  Why a
    link: it appears whole or not at all, so a run that starts at the same moment reads
    either nothing (and links its own, which fails: then it reads ours) or the full
    secret, never the empty file an exclusive create shows before its write."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"cannot use the secret file {path}: {folder} is not a directory")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=".secret-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(SECRET_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process linked its secret first: everyone reads that one
    finally:
        os.unlink(temp)


def default_secret_path() -> Path:
    """The per-user secret, shared by every job that names no --store or --secret-file.

    Stores default to one per output folder (``pipeline.store.job_store_path``); keeping one
    secret per user makes separate jobs agree on replacement values.
    """
    return state_dir() / "secret"
