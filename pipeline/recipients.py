"""Which certificates a de-identified file's payload was encrypted for.

Why: with the wrong key, ``-d`` fails every file alike; naming the certificate the files
need (its issuer and serial number, which the CMS KeyTransRecipientInfo carries, RFC 5652
6.2.1) tells the user which key to fetch.  Issuer and serial identify a certificate, not a
patient, so they may be shown at any verbosity.
"""

from __future__ import annotations

from pathlib import Path

from tasks.tags import (
    ENCRYPTED_ATTRIBUTES,
    ENCRYPTED_CONTENT,
)


def recipients_of(path: Path) -> list[str]:
    """``issuer ..., serial N`` per certificate recipient of the file's (0400,0500)
    payload; a password recipient as ``a password``; empty when there is none."""
    import pydicom
    from asn1crypto import cms

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[ENCRYPTED_ATTRIBUTES])
        blob = ds[ENCRYPTED_ATTRIBUTES].value[0][ENCRYPTED_CONTENT].value
        info = cms.ContentInfo.load(bytes(blob))
        found = []
        for recipient in info["content"]["recipient_infos"]:
            if recipient.name == "ktri":
                rid = recipient.chosen["rid"]
                if rid.name == "issuer_and_serial_number":
                    issuer = rid.chosen["issuer"].human_friendly
                    found.append(f"issuer {issuer}, serial {rid.chosen['serial_number'].native}")
                else:
                    found.append(f"subject key identifier {rid.chosen.native.hex()}")
            elif recipient.name == "pwri":
                found.append("a password")
        return found
    except Exception:  # noqa: BLE001 - a hint only: a damaged payload has no answer
        return []
