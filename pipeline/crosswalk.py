"""``anonpipe-crosswalk``: the honest broker's table, original -> replacement, from a store.

Why a command: the store records every replacement a de-identification run made (old UID ->
new UID, identifier -> pseudonym, per-patient date offsets: ``pipeline.plan.record_mapping``)
but in an internal layout.  The crosswalk is the one supported way out, as CSV rows
``id_old,id_new,kind``: the first two columns are the ``id_old,id_new`` layout of
identifier-mapping answer keys (as the MIDI-B benchmark's scorer reads them for UIDs and
Patient IDs); ``kind`` says what the row maps, and ``--kind`` keeps some kinds only (e.g.
``--kind uid`` for every UID, ``--kind PatientID``).

``--midi-b FOLDER`` writes the two files that scorer reads instead (its configuration's
``uid_mapping_file`` and ``patid_mapping_file``): ``uid_mapping.csv`` with every replaced
UID and ``patid_mapping.csv`` with every Patient ID, each exactly the columns
``id_old,id_new``, one row per original value.

The files link patients to their pseudonyms, so they are written 0600, or with
``--encrypt-to CERT`` as a CMS EnvelopedData (DER) for that certificate only, which
``openssl cms -decrypt -inform DER -inkey KEY`` opens.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tasks.errors import AnonpipeError, UsageError

#: kind of row -> what it maps (PS3.3 attribute keywords; DateOffsetDays: Patient ID -> days)
KINDS = {
    "PatientID": "Patient ID (0010,0020) -> pseudonym",
    "PatientName": "Patient's Name (0010,0010) -> pseudonym",
    "AccessionNumber": "Accession Number (0008,0050) -> replacement (empty: emptied/removed)",
    "StudyID": "Study ID (0020,0010) -> pseudonym",
    "StudyInstanceUID": "Study Instance UID (0020,000D) -> new UID",
    "SeriesInstanceUID": "Series Instance UID (0020,000E) -> new UID",
    "SOPInstanceUID": "SOP Instance UID (0008,0018) -> new UID",
    "UID": "any other replaced UID -> new UID",
    "DateOffsetDays": "Patient ID -> days added to its dates (Retain Longitudinal Modified "
                      "Dates)",
}
#: --kind shorthands
GROUPS = {"uid": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "UID"),
          "patient": ("PatientID", "PatientName", "DateOffsetDays")}
_ROLE_KIND = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID",
              "sop": "SOPInstanceUID", "other": "UID"}
HEADER = ("id_old", "id_new", "kind")
#: --midi-b: file name -> the kinds it maps (the scorer's UID and Patient ID answer keys)
MIDI_B_FILES = {"uid_mapping.csv": GROUPS["uid"], "patid_mapping.csv": ("PatientID",)}
MIDI_B_HEADER = ("id_old", "id_new")


def crosswalk_rows(store: object) -> Iterator[tuple[str, str, str]]:
    """(id_old, id_new, kind) of every replacement the store records."""
    from pipeline.store import Store

    assert isinstance(store, Store)
    for key, new in store.rows("ids"):
        label, _, old = key.partition(":")
        if label in KINDS:
            yield old, str(new), label
    for role, old, new in store.uid_roles():
        yield old, str(new), _ROLE_KIND[role]
    for pid, row in store.rows("patients"):
        if isinstance(row, dict) and row.get("date_offset_days") is not None:
            yield pid, str(row["date_offset_days"]), "DateOffsetDays"


STUDY_HEADER = ("patient_id_old", "patient_id_new", "accession_old", "accession_new",
                "study_uid_new", "files", "written")


def study_rows(store: object) -> Iterator[tuple[str, ...]]:
    """One row per study, like dicognito's summary: old and new Patient ID and accession,
    the new Study Instance UID, files found and written (links old and new: 0600 or -D)."""
    from pipeline.store import Store

    assert isinstance(store, Store)
    chunk: list[tuple[str, str | None, str | None, int, int]] = []

    def flush() -> Iterator[tuple[str, ...]]:
        ids = store.get_many("ids", [f"PatientID:{c[1]}" for c in chunk]
                             + [f"AccessionNumber:{c[2]}" for c in chunk])
        uids = store.get_many("uids", [c[0] for c in chunk])
        for study, pid, accession, files, written in chunk:
            yield (pid or "", str(ids.get(f"PatientID:{pid}", pid or "")), accession or "",
                   str(ids.get(f"AccessionNumber:{accession}", accession or "")),
                   str(uids.get(study, study)), str(files), str(written))

    for row in store.studies():
        chunk.append(row)
        if len(chunk) >= 200:
            yield from flush()
            chunk = []
    yield from flush()


def store_of(place: Path) -> Path:
    """A store file, or the store of the output folder ``place`` (its default location)."""
    from pipeline.store import job_store_path

    if place.is_dir():
        store = job_store_path(place)
        if not store.is_file():
            raise UsageError(f"{place} is a folder with no store of a run (give the --store "
                             "file the run used)")
        return store
    if not place.is_file():
        raise UsageError(f"store {place} not found")
    return place


def _kinds(chosen: Sequence[str]) -> set[str]:
    kinds: set[str] = set()
    for name in chosen:
        if name in GROUPS:
            kinds.update(GROUPS[name])
        elif name in KINDS:
            kinds.add(name)
        else:
            raise UsageError(f"--kind {name}: not one of {', '.join([*GROUPS, *KINDS])}")
    return kinds or set(KINDS)


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8", "surrogateescape")


def midi_b_tables(rows: Iterable[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    """The rows of each ``--midi-b`` file: (id_old, id_new), the first row of each
    original value only (an original maps to one replacement), none for an empty one."""
    tables: dict[str, dict[str, str]] = {name: {} for name in MIDI_B_FILES}
    for old, new, kind in rows:
        for name, kinds in MIDI_B_FILES.items():
            if kind in kinds and old:
                tables[name].setdefault(old, new)
    return {name: list(table.items()) for name, table in tables.items()}


def write_private(path: Path, data: bytes) -> None:
    """``data`` to ``path``, mode 0600, atomically (a temp file renamed over it)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anonpipe-crosswalk",
        description="Export the original -> replacement table of a de-identification run "
        "(Patient ID, name, accession, Study/Series/SOP Instance UIDs, date offsets) as CSV "
        "rows id_old,id_new,kind.  The file links patients to pseudonyms: it is written "
        "0600, or encrypted for one certificate.",
        epilog="kinds: " + "; ".join(f"{k}: {v}" for k, v in KINDS.items())
        + ".  examples:  anonpipe-crosswalk out/ --csv crosswalk.csv;  "
        "anonpipe-crosswalk out/ --midi-b mappings/;  "
        "anonpipe-crosswalk run.sqlite --csv uids.csv --kind uid;  "
        "anonpipe-crosswalk run.sqlite --csv crosswalk.cms --encrypt-to broker_cert.pem",
        allow_abbrev=False,
    )
    parser.add_argument("store", metavar="STORE_OR_OUT",
                        help="the run's store (--store) or its output folder")
    parser.add_argument("--csv", metavar="FILE", help="where to write the CSV")
    parser.add_argument("--midi-b", metavar="FOLDER",
                        help="write FOLDER/uid_mapping.csv (every replaced UID) and "
                        "FOLDER/patid_mapping.csv (Patient IDs), columns id_old,id_new: the "
                        "files the MIDI-B de-identification benchmark's scorer reads")
    parser.add_argument("--encrypt-to", metavar="CERT",
                        help="write the CSV as CMS EnvelopedData (DER) for this certificate")
    parser.add_argument("--kind", action="append", default=[], metavar="KIND",
                        help="only rows of this kind (repeat; uid: every UID, patient: "
                        "Patient ID, name and date offset)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 written, 1 the store cannot be read, 2 usage."""
    from pipeline.store import Store

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if not (args.csv or args.midi_b):
            raise UsageError("say where to write: --csv FILE and/or --midi-b FOLDER")
        if args.midi_b and args.kind:
            raise UsageError("--midi-b writes the benchmark's two files whole: --kind goes "
                             "with --csv")
        kinds = _kinds(args.kind)
        out = Path(args.csv) if args.csv else None
        if out is not None and out.is_dir():
            raise UsageError(f"--csv {out} is a folder")
        folder = Path(args.midi_b) if args.midi_b else None
        if folder is not None and folder.exists() and not folder.is_dir():
            raise UsageError(f"--midi-b {folder} is not a folder")
        encryptor = None
        if args.encrypt_to:
            from tasks.crypto import EnvelopeEncryptor, load_certificate
            from tasks.errors import CryptoError

            try:
                cert = load_certificate(Path(args.encrypt_to))
            except CryptoError as exc:
                raise UsageError(str(exc)) from None
            encryptor = EnvelopeEncryptor(certificates=(cert,))
        store = store_of(Path(args.store))
        with Store(store, read_only=True) as opened:
            rows = list(crosswalk_rows(opened))
        files: dict[Path, tuple[bytes, int]] = {}
        if out is not None:
            chosen = [row for row in rows if row[2] in kinds]
            files[out] = csv_bytes(HEADER, chosen), len(chosen)
        if folder is not None:
            for name, table in midi_b_tables(rows).items():
                files[folder / name] = csv_bytes(MIDI_B_HEADER, table), len(table)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, (data, _) in files.items():
            write_private(path, encryptor.encrypt(data) if encryptor is not None else data)
    except UsageError as exc:
        print(f"anonpipe-crosswalk: {exc}", file=sys.stderr)
        return 2
    except (AnonpipeError, OSError) as exc:
        print(f"anonpipe-crosswalk: {exc}", file=sys.stderr)
        return 1
    how = "encrypted (CMS, DER)" if encryptor is not None else "0600"
    for path, (_, count) in files.items():
        print(f"anonpipe-crosswalk: {count:,} rows written to {path} ({how})", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
