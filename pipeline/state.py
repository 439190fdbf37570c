"""The per-user state folder: secrets, stores and run reports live here, never in an output."""

from __future__ import annotations

import os
import secrets
import stat
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
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = secrets.token_hex(SECRET_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(value + "\n")
    check_private(path)
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    if len(secret) < 16:
        raise UsageError(f"secret file {path} holds fewer than 16 bytes")
    return secret


def default_secret_path() -> Path:
    """The per-user secret, shared by every job that names no --store or --secret-file.

    Stores default to one per output folder (``pipeline.store.job_store_path``); keeping one
    secret per user makes separate jobs agree on replacement values.
    """
    return state_dir() / "secret"
