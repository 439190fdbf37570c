"""CPU per file of the per-file engine alone (no I/O, no pipeline), for the README's figures.

Usage: ``.venv/bin/python benchmarks/engine.py [N]`` - de-identifies pydicom's CT_small and
MR_small N times in memory (AES-256 + RSA-2048 envelope, both profiles) and re-identifies.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

from tasks.crypto import EnvelopeEncryptor, load_certificate
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.reidentify import ReidentifySettings, reidentify_bytes


def per_call_ms(fn, data: bytes, settings: object, n: int) -> float:  # type: ignore[no-untyped-def]
    fn(data, settings)  # warm caches (compiled profile, recipient)
    started = time.process_time()
    for _ in range(n):
        fn(data, settings)
    return (time.process_time() - started) * 1000 / n


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    folder = Path(tempfile.mkdtemp())
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=bench", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    encryptor = EnvelopeEncryptor(certificates=(load_certificate(cert),))
    reid = ReidentifySettings(key_pem=key.read_bytes())
    files = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in ("CT_small.dcm", "MR_small.dcm"):
        data = (files / name).read_bytes()
        for profile in ("gdcmanon", "basic"):
            settings = DeidentifySettings(secret=b"s" * 32, profile=profile, encryptor=encryptor)
            deid = per_call_ms(deidentify_bytes, data, settings, n)
            out = deidentify_bytes(data, settings)
            back = per_call_ms(reidentify_bytes, out, reid, max(n // 10, 1))
            print(f"{name:13} {profile:9} de-identify {deid:.3f} ms  re-identify {back:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
