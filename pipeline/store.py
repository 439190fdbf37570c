"""The run store: one sqlite file the driver alone writes, holding inventory, journal and mapping.

Why sqlitedict with these settings (FACTS.md): JSON encoding because a pickled value in a
crafted database runs code (CVE-2024-35515); ``journal_mode="WAL"`` in every opener because a
reader opening a WAL file with another journal mode hangs; ``outer_stack=False`` because it
costs 4x per insert; commits per batch, never autocommit.  sqlitedict creates the tables and
serves point reads; the writes (inventory, journal, mapping: many rows per call) go through
one plain sqlite3 connection with the same JSON encoding, because sqlitedict hands every row
of an ``update`` to its thread through a queue (measured: the largest driver cost at 20,000
files).  Every write method commits before returning: no connection holds an open write
transaction while another writes.

Aggregates and ordered pages (pass-1 findings, the pass-2 work list) are plain SQL on a
separate read connection over the same tables (``json_extract``): the inventory is never
loaded into the driver's memory.

The file links originals to pseudonyms, so it is PHI: mode 0600 in a 0700 state folder,
never inside the output tree, and a store readable by group or others is refused.

``Store(path, read_only=True)`` (the audit) reads a run's store without writing it: one
``mode=ro`` connection and no sqlitedict, whose read-write connections would checkpoint the
WAL into the file on close.  It creates neither the store, its folder nor its lock file (SQLite
may add its ``-wal``/``-shm`` files, as any reader of a WAL database does).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from sqlitedict import SqliteDict

from pipeline.state import check_folder, open_private, state_dir
from pipeline.walk import LINK_OUTSIDE
from tasks.errors import UsageError

TABLES = ("files", "journal", "uids", "ids", "patients", "runs")
_JOB_KEY = "job"
_SCAN_KEY = "inventory scan"  # what the rows of the last pass 1 were made with

Row = dict[str, Any]


# --------------------------------------------------------------------------- locations


def job_store_path(output: Path) -> Path:
    """The default store of a job writing to ``output``: the same command finds it again.

    One store per output folder (inventory and journal are per job), in the state folder
    (never inside the output), named by a hash because the folder's name may carry PHI.
    The secret is not per store: ``pipeline.state`` keeps one per user unless ``--store`` or
    ``--secret-file`` says otherwise, so jobs agree on replacements by default.
    """
    digest = hashlib.sha256(str(output.resolve()).encode("utf-8", "surrogateescape"))
    return state_dir() / "stores" / f"store-{digest.hexdigest()[:16]}.sqlite"


# --------------------------------------------------------------------------- the store


class Store:
    """The driver's handle on one store file.  Not shared with workers.

    ``read_only``: open an existing store for reading only (see the module docstring);
    ``wait=False`` with it takes no lock, so a run in progress may be read while it writes
    (``anonpipe-status``: each query sees the batches committed so far).
    """

    def __init__(self, path: Path, *, read_only: bool = False, wait: bool = True) -> None:
        self.path, self.read_only, self._wait = path, read_only, wait
        if read_only:
            if not os.path.lexists(path):
                raise UsageError(f"store {path} not found (give the --store of the run)")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise UsageError(f"cannot use the store {path}: {exc.strerror}") from None
        check_folder(path.parent, "store's folder")
        # no link followed, the user's own, private: then no one else can swap it, since
        # no one else can write its folder (sqlite opens the same name next)
        os.close(open_private(path, os.O_RDONLY if read_only else os.O_RDWR | os.O_CREAT))
        self._lock_fd = self._lock()
        self._tables: dict[str, SqliteDict] = {}
        try:
            if read_only:
                self._open_read_only()
                return
            for name in TABLES:
                self._tables[name] = SqliteDict(
                    str(path), tablename=name, flag="c", autocommit=False,
                    journal_mode="WAL", encode=json.dumps, decode=json.loads,
                    outer_stack=False,
                )
            self._reader = sqlite3.connect(str(path), check_same_thread=False)
            self._reader.execute("PRAGMA journal_mode=WAL")
            # bulk writes: one plain connection (sqlitedict's executemany queues every row
            # to its thread, ~3 us a row: at 20k files the driver's largest cost)
            self._writer = sqlite3.connect(str(path), check_same_thread=False)
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=OFF")  # as sqlitedict sets it
        except BaseException:
            self.close()
            raise

    def _open_read_only(self) -> None:
        """One ``mode=ro`` connection reads (WAL included) and stands in for the writer:
        SQLite itself refuses any write through it."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            self._reader = self._writer = sqlite3.connect(uri, uri=True,
                                                          check_same_thread=False)
            tables = {name for (name,) in self._query(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"store {self.path} cannot be read: {exc}") from None
        if not set(TABLES) <= tables:
            raise UsageError(f"{self.path} is not an anonpipe store")

    def _lock(self) -> int:
        """One driver per store: a second run would interleave journals (flock dies with us).

        A reader takes a shared lock, so no run changes the store while it reads; a store
        without a lock file was never opened by a run and gets none (creating it would write).
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        if self.read_only and not self._wait:
            return -1
        if self.read_only:
            try:
                fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return -1
            how, busy = fcntl.LOCK_SH, ("is in use by a running anonpipe: audit the output "
                                        "when the run has finished")
        else:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            how, busy = fcntl.LOCK_EX, "is in use by another anonpipe run"
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"store {self.path} {busy}") from None
        return fd

    def close(self) -> None:
        for table in self._tables.values():
            table.close()
        self._tables.clear()
        for name in ("_reader", "_writer"):
            conn = getattr(self, name, None)
            if conn is not None:
                conn.close()
                setattr(self, name, None)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def _write(self, table: str, rows: Mapping[str, Any]) -> None:
        """Upsert JSON-encoded ``rows`` (as sqlitedict stores them) in one transaction."""
        if rows:
            assert table in self._tables
            dumps = json.dumps
            self._writer.executemany(f'REPLACE INTO "{table}" (key, value) VALUES (?, ?)',
                                     [(key, dumps(value)) for key, value in rows.items()])
            self._writer.commit()

    def _sql_write(self, table: str, sql: str) -> None:
        assert table in self._tables
        self._writer.execute(sql)
        self._writer.commit()

    def job_identity(self) -> Row | None:
        value = self.get("runs", _JOB_KEY)
        return value if isinstance(value, dict) else None

    def set_job_identity(self, identity: Row) -> None:
        self._write("runs", {_JOB_KEY: identity})

    def reset_inventory(self) -> None:
        """Pass 1 rewrites the inventory; dropping the index first keeps inserts cheap."""
        self._sql_write("files", "DROP INDEX IF EXISTS files_by_study")
        self._sql_write("files", 'DELETE FROM "files"')
        self._write("runs", {_SCAN_KEY: None})

    def begin_inventory(self, scan_key: str) -> bool:
        """Start a pass 1 that may reuse the rows of the last one, made with ``scan_key``
        (input folder, replaced tags, row format): True when it may, and then every row
        the pass neither reuses (:meth:`mark_seen`) nor rewrites is dropped by
        :meth:`sweep_unseen`; False when the inventory was emptied instead.

        Why: a run resumed after a kill, or repeated over an archive that grew, would
        otherwise read every header again; unchanged files keep their rows.
        """
        self._writer.execute("CREATE TEMP TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY)")
        self._writer.execute("DELETE FROM temp.seen")
        if self.get("runs", _SCAN_KEY) != scan_key:
            self.reset_inventory()
            self._write("runs", {_SCAN_KEY: scan_key})
            return False
        return True

    def unchanged(self, entries: Mapping[str, tuple[int, int]]) -> set[str]:
        """Those of ``entries`` (path -> (size, mtime_ns) as listed now) whose row was read
        from a file of that size and modification time, without error."""
        found: set[str] = set()
        keys = list(entries)
        size, mtime, error = (f"json_extract(value, '$.{name}')"
                              for name in ("size", "mtime_ns", "error_kind"))
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self._query(
                f'SELECT key, {size}, {mtime} FROM "files" WHERE {error} IS NULL AND key IN '
                f'({",".join("?" * len(part))})', tuple(part))
            found.update(key for key, n, t in rows if entries[key] == (n, t))
        return found

    def mark_seen(self, keys: Iterable[str]) -> None:
        """Rows this pass 1 keeps (reused, rewritten or set aside as walk errors)."""
        self._writer.executemany("INSERT OR IGNORE INTO temp.seen (key) VALUES (?)",
                                 ((key,) for key in keys))
        self._writer.commit()

    def sweep_unseen(self) -> int:
        """Drop the rows of files this pass 1 did not list (deleted since); how many."""
        dropped = self._writer.execute(
            'DELETE FROM "files" WHERE key NOT IN (SELECT key FROM temp.seen)').rowcount
        self._writer.execute("DELETE FROM temp.seen")
        self._writer.commit()
        return int(dropped)

    def reset_journal(self) -> None:
        self._sql_write("journal", 'DELETE FROM "journal"')

    def add_inventory(self, rows: Mapping[str, Row]) -> None:
        self._write("files", rows)

    def add_inventory_json(self, rows: Mapping[str, str]) -> None:
        """Rows already JSON-encoded (by the scan workers): stored as they are."""
        if rows:
            self._writer.executemany('REPLACE INTO "files" (key, value) VALUES (?, ?)',
                                     list(rows.items()))
            self._writer.commit()

    def finish_inventory(self) -> None:
        """Index the work order (study, path) so pass 2 pages through it with short reads."""
        self._sql_write(
            "files",
            "CREATE INDEX IF NOT EXISTS files_by_study ON files("
            "coalesce(json_extract(value, '$.study'), ''), key)",
        )

    def journal(self, rows: Mapping[str, Row]) -> None:
        """Record pass-2 results of one batch (one commit)."""
        self._write("journal", rows)

    def put_uids(self, mapping: Mapping[str, str]) -> None:
        self._write("uids", mapping)

    def put_ids(self, mapping: Mapping[str, str]) -> None:
        self._write("ids", mapping)

    def put_patients(self, rows: Mapping[str, Row]) -> None:
        self._write("patients", rows)

    def put_run(self, run_id: str, record: Row) -> None:
        self._write("runs", {run_id: record})

    # ------------------------------------------------------------------ point reads

    def get(self, table: str, key: str) -> Any:
        if self.read_only:  # no sqlitedict (see the module docstring)
            return self.get_many(table, [key]).get(key)
        return self._tables[table].get(key)

    def get_many(self, table: str, keys: Sequence[str]) -> dict[str, Any]:
        """key -> value for those ``keys`` in ``table``: one query per 500 (SQLite's limit
        on bound variables), where sqlitedict would make one per key."""
        assert table in TABLES
        out: dict[str, Any] = {}
        for i in range(0, len(keys), 500):
            part = tuple(keys[i:i + 500])
            out.update((key, json.loads(value)) for key, value in self._query(
                f'SELECT key, value FROM "{table}" WHERE key IN ({",".join("?" * len(part))})',
                part))
        return out

    def has_rows(self, table: str) -> bool:
        """Whether ``table`` holds any row (without counting them all)."""
        assert table in TABLES
        return bool(self._query(f'SELECT 1 FROM "{table}" LIMIT 1'))

    def last_run(self, mode: str) -> Row | None:
        """The record of the latest run (by start) in ``mode``; the job identity is no run,
        and a run refused before it wrote anything (status "refused") is none either."""
        best: Row | None = None
        for key, value in self._query('SELECT key, value FROM "runs"'):
            record = json.loads(value)
            if key == _JOB_KEY or not isinstance(record, dict) or record.get("mode") != mode \
                    or record.get("status") == "refused":
                continue
            started = float(record.get("started") or 0)
            if best is None or started >= float(best.get("started") or 0):
                best = record
        return best

    # ------------------------------------------------------------------ SQL reads

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._reader.execute(sql, args).fetchall()

    def _stream(self, sql: str, args: tuple[Any, ...] = (), size: int = 1000
                ) -> Iterator[tuple[Any, ...]]:
        cursor = self._reader.execute(sql, args)
        try:
            while rows := cursor.fetchmany(size):
                yield from rows
        finally:
            cursor.close()

    def work_pages(self, page: int = 2000) -> Iterator[tuple[str, Row, Row | None]]:
        """(path, inventory row, journal row or None) in (study, path) order.

        Keyset pages: each page is a short read transaction (a long-lived cursor would keep
        the journal's WAL from being checkpointed) that seeks the ``files_by_study`` index
        (the ``s >= ? AND (s > ? OR key > ?)`` form is what lets SQLite seek; a row-value
        comparison would scan from the start on every page).
        """
        study = "coalesce(json_extract(f.value, '$.study'), '')"
        select = (f"SELECT {study}, f.key, f.value, j.value FROM files AS f "
                  "LEFT JOIN journal AS j ON j.key = f.key ")
        order = f" ORDER BY {study}, f.key LIMIT ?"
        rows = self._query(select + order, (page,))
        while rows:
            for _study, key, value, journaled in rows:
                yield key, json.loads(value), (json.loads(journaled) if journaled else None)
            last_study, last_key = rows[-1][0], rows[-1][1]
            rows = self._query(
                select + f"WHERE {study} >= ? AND ({study} > ? OR f.key > ?)" + order,
                (last_study, last_study, last_key, page))

    def counts(self) -> Row:
        """Pass-1 findings as counts, from one scan of the inventory plus a few group-bys."""
        j = "json_extract(value, '$.{}')".format
        (files, errors, size, patients, studies, series, deidentified, dicomdir,
         preamble) = self._query(
            f"SELECT count(*), count({j('error_kind')}), coalesce(sum({j('size')}), 0), "
            f"count(DISTINCT {j('patient_id')}), count(DISTINCT {j('study')}), "
            f"count(DISTINCT {j('series')}), coalesce(sum({j('deidentified')}), 0), "
            f"coalesce(sum({j('dicomdir')}), 0), coalesce(sum({j('preamble')}), 0) FROM files"
        )[0]
        by = self._grouped("sop_class", "ts", "error_kind")
        dup_uids, dup_files = self._query(
            f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM files "
            f"WHERE {j('sop')} IS NOT NULL GROUP BY {j('sop')} HAVING n > 1)"
        )[0]
        return {
            "files": files,
            "bytes": size,
            "patients": patients,
            "studies": studies,
            "series": series,
            "sop_classes": by["sop_class"],
            "transfer_syntaxes": by["ts"],
            "unreadable": errors,
            "errors_by_kind": by["error_kind"],
            "already_deidentified": deidentified,
            "dicomdir": dicomdir,
            "preamble_data": preamble,
            "duplicate_sop_uids": dup_uids,
            "files_with_duplicate_sop_uid": dup_files,
            "conflicting_patients": len(self.conflicting_patients()),
        }

    def _grouped(self, *fields: str) -> dict[str, dict[str, int]]:
        """field -> {value: files}, most files first, from one scan of the inventory (one
        query per field would parse every row's JSON once per field)."""
        columns = ", ".join(f"json_extract(value, '$.{field}')" for field in fields)
        totals: dict[str, dict[str, int]] = {field: {} for field in fields}
        for *values, n in self._query(f"SELECT {columns}, count(*) FROM files "
                                      f"GROUP BY {', '.join(map(str, range(1, len(fields) + 1)))}"):
            for field, value in zip(fields, values, strict=True):
                if value is not None:
                    totals[field][str(value)] = totals[field].get(str(value), 0) + n
        return {field: dict(sorted(counts.items(), key=lambda kv: -kv[1]))
                for field, counts in totals.items()}

    def duplicate_sops(self, limit: int = 100) -> list[tuple[str, list[str]]]:
        """(SOP Instance UID, paths) for UIDs found in more than one file.  PHI: debug only."""
        j = "json_extract(value, '$.sop')"
        rows = self._query(
            f"SELECT {j}, group_concat(key, char(10)) FROM files WHERE {j} IS NOT NULL "
            f"GROUP BY {j} HAVING count(*) > 1 LIMIT ?", (limit,)
        )
        return [(uid, paths.split("\n")) for uid, paths in rows]

    def conflicting_patients(self, limit: int = 1000) -> list[tuple[str, list[str], list[str]]]:
        """Patient IDs seen with more than one name or birth date (PHI: debug output only)."""
        j = "json_extract(value, '$.{}')".format
        rows = self._query(
            f"SELECT {j('patient_id')}, group_concat(DISTINCT {j('patient_name')}), "
            f"group_concat(DISTINCT {j('birth_date')}) FROM files "
            f"WHERE {j('patient_id')} IS NOT NULL GROUP BY 1 "
            f"HAVING count(DISTINCT {j('patient_name')}) > 1 "
            f"OR count(DISTINCT {j('birth_date')}) > 1 LIMIT ?", (limit,)
        )
        return [(pid, (names or "").split(","), (dates or "").split(","))
                for pid, names, dates in rows]

    def inventory(self) -> Iterator[tuple[str, Row]]:
        """(path, row) of every inventory row in path order (streamed)."""
        for key, value in self._stream('SELECT key, value FROM "files" ORDER BY key'):
            yield key, json.loads(value)

    def replaced_uids(self) -> Iterator[str]:
        """Every distinct UID the profile replaces, over the whole inventory (streamed)."""
        for (uid,) in self._stream(
            "SELECT DISTINCT u.value FROM files, json_each(files.value, '$.replace') AS u"
        ):
            yield uid

    def patients(self) -> Iterator[tuple[str, list[str], list[str], int]]:
        """(Patient ID, names, birth dates, studies) per patient (streamed)."""
        j = "json_extract(value, '$.{}')".format
        for pid, names, dates, studies in self._stream(
            f"SELECT {j('patient_id')}, json_group_array(DISTINCT {j('patient_name')}), "
            f"json_group_array(DISTINCT {j('birth_date')}), count(DISTINCT {j('study')}) "
            f"FROM files WHERE {j('patient_id')} IS NOT NULL GROUP BY 1"
        ):
            yield (pid, [n for n in json.loads(names) if n],
                   [d for d in json.loads(dates) if d], studies)

    def identifiers(self, field: str) -> Iterator[str]:
        """Distinct values of one identifier field of the inventory (streamed)."""
        expr = f"json_extract(value, '$.{field}')"
        for (value,) in self._stream(f"SELECT DISTINCT {expr} FROM files WHERE {expr} IS NOT NULL"):
            yield value

    def distinct_identifiers(self) -> Iterator[Row]:
        """The identifier fields of the readable inventory, each combination once (streamed):
        what output names are checked against (pipeline.names)."""
        fields = ("patient_name", "patient_id", "accession", "other_ids", "birth_date",
                  "charset")
        columns = ", ".join(f"json_extract(value, '$.{name}')" for name in fields)
        for values in self._stream(f"SELECT DISTINCT {columns} FROM files "
                                   "WHERE json_extract(value, '$.error_kind') IS NULL"):
            row = dict(zip(fields, values, strict=True))
            if isinstance(row["other_ids"], str):
                row["other_ids"] = json.loads(row["other_ids"])
            yield row

    def output_sources(self) -> dict[str, str]:
        """Output path -> input path of the journal's outputs named otherwise than their
        input (``--output-names uid``)."""
        output = "json_extract(value, '$.output')"
        return {out: key for out, key in self._query(
            f"SELECT {output}, key FROM journal WHERE {output} IS NOT NULL AND {output} != key")}

    def readable_paths(self) -> Iterator[str]:
        """Paths of the readable inventory in path order (streamed)."""
        for (key,) in self._stream("SELECT key FROM files WHERE "
                                   "json_extract(value, '$.error_kind') IS NULL ORDER BY key"):
            yield key

    def not_journaled_outputs(self, rels: Iterable[str], op: str | None = None) -> list[str]:
        """Of ``rels`` (files found in the output folder), those that no journal row names
        as a done output; with ``op``, as a done output of that operation."""
        writer = self._writer
        writer.execute("CREATE TEMP TABLE IF NOT EXISTS listed (rel TEXT PRIMARY KEY)")
        writer.execute("DELETE FROM listed")
        writer.executemany("INSERT OR IGNORE INTO listed VALUES (?)", ((r,) for r in rels))
        j = "json_extract(value, '$.{}')".format
        where = f"{j('status')} = 'done'" + (f" AND {j('op')} = ?" if op is not None else "")
        rows = writer.execute(
            "SELECT rel FROM listed WHERE rel NOT IN (SELECT "
            f"coalesce({j('output')}, key) FROM journal WHERE {where}) ORDER BY rel",
            (op,) if op is not None else ()).fetchall()
        writer.execute("DELETE FROM listed")
        writer.commit()
        return [rel for (rel,) in rows]

    def journal_counts(self) -> dict[str, int]:
        return {status: n for status, n in self._query(
            "SELECT json_extract(value, '$.status'), count(*) FROM journal GROUP BY 1")}

    def journal_errors(self, limit_per_kind: int = 1000
                       ) -> dict[str, tuple[int, list[tuple[str, str]]]]:
        """Journaled failures and reasoned skips: kind -> (count, [(path, reason)])."""
        return self._errors("journal", limit_per_kind)

    def inventory_errors(self, limit_per_kind: int = 1000
                         ) -> dict[str, tuple[int, list[tuple[str, str]]]]:
        """Files pass 1 could not read: kind -> (count, [(path, reason)])."""
        return self._errors("files", limit_per_kind)

    def _errors(self, table: str, limit: int) -> dict[str, tuple[int, list[tuple[str, str]]]]:
        kind = "json_extract(value, '$.error_kind')"
        out: dict[str, tuple[int, list[tuple[str, str]]]] = {}
        for name, count in self._query(
            f'SELECT {kind}, count(*) FROM "{table}" WHERE {kind} IS NOT NULL GROUP BY 1 ORDER BY 1'
        ):
            rows = self._query(
                f"SELECT key, json_extract(value, '$.error') FROM \"{table}\" "
                f"WHERE {kind} = ? ORDER BY key LIMIT ?", (name, limit))
            out[name] = (count, [(k, r or "") for k, r in rows])
        return out

    def rows(self, table: str) -> Iterator[tuple[str, Any]]:
        """(key, value) of every row of ``table`` in key order (streamed)."""
        assert table in TABLES
        for key, value in self._stream(f'SELECT key, value FROM "{table}" ORDER BY key'):
            yield key, json.loads(value)

    def uid_roles(self) -> Iterator[tuple[str, str, str]]:
        """(role, old UID, new UID) of the recorded mapping: ``study``, ``series`` and
        ``sop`` for the inventory's Study/Series/SOP Instance UIDs, ``other`` for the rest."""
        j = "json_extract(value, '$.{}')".format
        roles = " UNION ".join(f"SELECT DISTINCT {j(role)} AS uid, '{role}' AS role FROM files "
                               f"WHERE {j(role)} IS NOT NULL" for role in ("study", "series", "sop"))
        for role, old, new in self._stream(
                f"SELECT r.role, u.key, u.value FROM ({roles}) AS r JOIN uids AS u ON u.key = r.uid "
                "ORDER BY r.role, u.key"):
            yield role, old, json.loads(new)
        for old, new in self._stream(
                f"SELECT key, value FROM uids WHERE key NOT IN (SELECT uid FROM ({roles})) "
                "ORDER BY key"):
            yield "other", old, json.loads(new)

    def studies(self) -> Iterator[tuple[str, str | None, str | None, int, int]]:
        """(Study Instance UID, Patient ID, Accession Number, files, files written) per
        study of the inventory (streamed; PHI: for the 0600 study list and -D only)."""
        j = "json_extract(f.value, '$.{}')".format
        for row in self._stream(
                f"SELECT {j('study')}, min({j('patient_id')}), min({j('accession')}), count(*), "
                "sum(json_extract(jr.value, '$.status') = 'done') FROM files AS f "
                f"LEFT JOIN journal AS jr ON jr.key = f.key WHERE {j('study')} IS NOT NULL "
                "GROUP BY 1 ORDER BY 2, 1"):
            study, pid, accession, files, written = row
            yield study, pid, accession, int(files), int(written or 0)

    def journal_outcomes(self) -> list[tuple[str, str | None, str | None, int]]:
        """(status, error kind, reason, files) of the journal, grouped."""
        j = "json_extract(value, '$.{}')".format
        return [(str(status), kind, reason, int(n)) for status, kind, reason, n in self._query(
            f"SELECT {j('status')}, {j('error_kind')}, {j('error')}, count(*) FROM journal "
            "GROUP BY 1, 2, 3")]

    def failed_paths(self) -> Iterator[str]:
        """Paths the journal holds as not written (failed, refused, not DICOM), sorted:
        what ``--retry-failed`` runs again."""
        for (key,) in self._stream("SELECT key FROM journal WHERE "
                                   "json_extract(value, '$.error_kind') IS NOT NULL ORDER BY key"):
            yield key

    def count_rejected(self, deidentify: bool,
                       burned_in_classes: Sequence[str] | None = None) -> int:
        """Files pass 1 shows cannot be processed (unreadable; for -e also de-identified
        already or a DICOMDIR; with ``burned_in_classes``, burned-in annotation YES or
        absent on one of those SOP classes).  Must agree with
        :func:`pipeline.plan.rejection`."""
        j = "json_extract(value, '$.{}')".format
        extra = f" OR {j('deidentified')} OR {j('dicomdir')}" if deidentify else ""
        kind = j("error_kind")  # a link leading out of the input is skipped, not rejected
        args: tuple[str, ...] = ()
        if burned_in_classes is not None:
            marks = ",".join("?" * len(burned_in_classes)) or "NULL"
            extra += (f" OR upper(trim({j('burned_in')})) = 'YES' OR ({j('burned_in')} IS NULL"
                      f" AND {j('sop_class')} IN ({marks}))")
            args = tuple(burned_in_classes)
        return int(self._query(
            f"SELECT count(*) FROM files WHERE ({kind} IS NOT NULL AND {kind} != "
            f"'{LINK_OUTSIDE}'){extra}", args)[0][0])

    def table_size(self, table: str) -> int:
        """Row count (a full scan: for tests and reports, not hot paths)."""
        return int(self._query(f'SELECT count(*) FROM "{table}"')[0][0])
