"""TLS for every dask cluster a run talks to.

Why: a dask scheduler runs whatever code a connected client sends, in the workers that hold
the run's HMAC secret; anyone who can open a plain ``tcp://`` connection to it can read the
secret and reverse every pseudonym.  So a cluster anonpipe starts (local or job queue) uses
mutual TLS with a certificate authority made for the run and kept in memory (distributed's
``Security.temporary()``): only the driver and the workers it starts hold the key.  An
existing scheduler (``--scheduler``) is reached with the TLS settings of dask's
configuration (``distributed.comm.tls.*``); a plain ``tcp://`` one is refused unless the
user accepts it with ``--insecure-scheduler``.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import UsageError

PLAIN_SCHEMES = ("tcp", "ws")


def scheme_of(address: str) -> str:
    """The comm scheme of a dask address (``tcp`` when none is written, as dask does)."""
    return address.split("://", 1)[0].lower() if "://" in address else "tcp"


def check_scheduler_address(address: str, insecure: bool) -> None:
    """Refuse a scheduler reached without encryption, unless the user accepts it."""
    scheme = scheme_of(address)
    if scheme in PLAIN_SCHEMES and not insecure:
        raise UsageError(
            f"refusing the unencrypted scheduler {address}: anyone who reaches it can run "
            "code in its workers and read the secret; use tls:// with certificates in "
            "dask's configuration (distributed.comm.tls), or --insecure-scheduler")
    if scheme not in (*PLAIN_SCHEMES, "tls", "wss", "inproc", "ucx"):
        raise UsageError(f"--scheduler {address}: unknown scheme {scheme}:// "
                         "(tls://HOST:PORT, or tcp:// with --insecure-scheduler)")


def run_security() -> Any:
    """Credentials made for one run: a temporary CA and certificate, in memory, required
    of every connection (clients and workers alike)."""
    from distributed.security import Security

    return Security.temporary()  # require_encryption=True: plain connections are refused


def configured_security() -> Any:
    """The TLS settings of dask's configuration, for a scheduler anonpipe did not start."""
    from distributed.security import Security

    return Security()
