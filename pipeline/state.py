"""The per-user state folder: secrets, stores and run reports live here, never in an output.

The secret turns a pseudonym back into a patient (hash every plausible ID and compare), and
the store maps originals to replacements: both are PHI.  So every folder holding them must
be the user's own and writable by nobody else (else another user could plant a secret of
their choosing, or swap the file under us), and the files themselves are opened without
following a symbolic link and must be owned by the user and private (0600).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tasks.errors import UsageError

SECRET_BYTES = 32
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def state_dir_path() -> Path:
    """``$ANONPIPE_STATE_DIR``, else ``$XDG_STATE_HOME/anonpipe``, else ~/.local/state/anonpipe
    (where it would be: nothing is created or checked)."""
    explicit = os.environ.get("ANONPIPE_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "anonpipe"


def state_dir() -> Path:
    """The state folder, created 0700 on first use and refused when it is not private."""
    base = state_dir_path()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_folder(base, "state folder")
    return base


def check_folder(folder: Path, what: str) -> None:
    """Refuse a folder that another user owns or that group or others may write, or that
    lies in a folder someone else could change (:func:`check_ancestors`).

    The folder itself may be reached through a link the user made; what matters is who can
    change the entries inside it."""
    try:
        info = os.stat(folder)
    except OSError as exc:
        raise UsageError(f"cannot use the {what} {folder}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"cannot use the {what} {folder}: not a directory")
    if info.st_uid != os.geteuid():
        raise UsageError(f"the {what} {folder} belongs to another user (uid {info.st_uid}): "
                         "refused")
    if _writable_by_others(info):
        raise UsageError(f"the {what} {folder} is writable by other users (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}): refused; run: chmod go-w "
                         f"{folder}")
    check_ancestors(folder, what)


def check_ancestors(folder: Path, what: str) -> None:
    """Refuse a folder that lies in one another user could change: whoever may rename the
    entries of a folder on the way can swap ours for theirs (a secret of their choosing).

    Every folder above it, on the path as written and on the path the links lead to, must
    belong to the user or to root and be writable by no one else, except a sticky folder
    like ``/tmp`` (there only an entry's owner may rename or remove it, and the entry on
    our way is the user's or root's, as this same check asks of it).  A link on the way
    must be the user's or root's too.  The rules of OpenSSH's StrictModes, for the same
    reason."""
    me = os.geteuid()
    seen: set[str] = set()
    literal = Path(os.path.abspath(folder))
    for chain in (literal.parents, Path(os.path.realpath(folder)).parents):
        for ancestor in chain:
            key = str(ancestor)
            if key in seen:
                continue
            seen.add(key)
            try:
                info = os.lstat(ancestor)
            except OSError:
                continue  # not there yet: made by us below a checked folder
            if info.st_uid not in (me, 0):
                raise UsageError(f"the {what} {folder} lies in {ancestor}, which belongs to "
                                 f"another user (uid {info.st_uid}): refused (they could "
                                 "replace what it holds)")
            if stat.S_ISDIR(info.st_mode) and _writable_by_others(info) \
                    and not info.st_mode & stat.S_ISVTX:
                raise UsageError(f"the {what} {folder} lies in {ancestor}, which other users "
                                 f"can write (mode {stat.S_IMODE(info.st_mode):04o}): refused "
                                 f"(they could replace what it holds); run: chmod go-w "
                                 f"{ancestor}, or choose another place")


def check_private_folder(folder: Path, what: str) -> None:
    """A folder for files as sensitive as the secret (``--pixels-preview`` images show the
    burned-in text): when it exists, the user's own, no link, no access for anyone else;
    when not (it is made 0700 on first use), nothing above it another user could change."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        check_ancestors(folder, what)
        return
    except OSError as exc:
        raise UsageError(f"cannot use the {what} {folder}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"the {what} {folder} is a symbolic link: refused (name the folder "
                         "itself)")
    check_folder(folder, what)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"the {what} {folder} is open to other users (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}): refused; run: chmod 700 {folder}")


def _writable_by_others(info: os.stat_result) -> bool:
    """Group (other than the user's own private group) or others may write it."""
    writers = stat.S_IWOTH | (0 if _private_group(info.st_gid) else stat.S_IWGRP)
    return bool(info.st_mode & writers)


def _private_group(gid: int) -> bool:
    """The user's own group (a "user private group", as Debian makes one per user, where a
    umask of 002 leaves folders group-writable): the user's primary group, no other
    member listed, named as the user."""
    import grp
    import pwd

    if gid != os.getegid():
        return False
    try:
        group = grp.getgrgid(gid)
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}


def check_private(path: Path, info: os.stat_result | None = None) -> None:
    """Refuse a secret or store that is not a regular file of the user's own, or that group
    or others can read (it links PHI to pseudonyms).  ``info``: its ``fstat``, when open."""
    if info is None:
        try:
            info = os.lstat(path)
        except OSError as exc:
            raise UsageError(f"cannot use {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"{path} is a symbolic link: refused (name the file itself)")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{path} is not a regular file: refused")
    if info.st_uid != os.geteuid():
        raise UsageError(f"{path} belongs to another user (uid {info.st_uid}): refused")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )


def open_private(path: Path, flags: int = os.O_RDONLY) -> int:
    """Open the secret or store ``path`` without following a link and check it with
    ``fstat`` (what was opened is what was checked); returns the descriptor."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise UsageError(f"{path} is a symbolic link: refused (name the file itself)"
                             ) from None
        reason = "it is a directory" if isinstance(exc, IsADirectoryError) else exc.strerror
        raise UsageError(f"cannot use {path}: {reason or exc}") from None
    try:
        check_private(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def secret_exists(path: Path) -> bool:
    return os.path.lexists(path)


def load_secret(path: Path, *, create: bool) -> tuple[bytes, bool]:
    """The HMAC secret at ``path`` and whether it was just made.  A missing secret is made
    (0600) only when ``create``; the caller says where, once."""
    folder = path.parent
    created = False
    if not secret_exists(path):
        if not create:
            raise UsageError(f"the secret file {path} does not exist (a typo? give "
                             "--new-secret to create a new secret there)")
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"cannot use the secret file {path}: {folder} is not a directory")
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot use the secret file {path}: {exc.strerror}") from None
        check_folder(folder, "secret's folder")
        created = _create_secret(path)
    else:
        check_folder(folder, "secret's folder")
    fd = open_private(path)
    try:
        with os.fdopen(fd, "rb") as fh:
            text = fh.read(4096).decode().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot use the secret file {path}: {reason}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    if len(secret) < 16:
        raise UsageError(f"secret file {path} holds fewer than 16 bytes")
    return secret, created


def load_or_create_secret(path: Path) -> bytes:
    """Read the HMAC secret at ``path``, creating it (mode 0600) on first use."""
    return load_secret(path, create=True)[0]


def _create_secret(path: Path) -> bool:
    """Write a new secret to a private temp file, then link it in under ``path``; False
    when another process linked its secret first.  Why a link: it appears whole or not at
    all, so a run that starts at the same moment reads either nothing (and links its own,
    which fails: then it reads ours) or the full secret, never the empty file an exclusive
    create shows before its write."""
    import secrets
    import tempfile

    fd, temp = tempfile.mkstemp(prefix=".secret-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(SECRET_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return False  # another process linked its secret first: everyone reads that one
        return True
    finally:
        os.unlink(temp)


def default_secret_path() -> Path:
    """The per-user secret, shared by every job that names no --store or --secret-file.

    Stores default to one per output folder (``pipeline.store.job_store_path``); keeping one
    secret per user makes separate jobs agree on replacement values.
    """
    return state_dir() / "secret"
