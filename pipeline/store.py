"""The run store: one sqlite file the driver alone writes, holding inventory, journal and mapping.

Schema (``PRAGMA user_version`` = :data:`STORE_FORMAT`; a store of another format is refused
with one line, never rewritten).  At a million files the store must stay small (<= 0.5 KB per
file), so per-file tables are columns, not JSON, and keyed ``WITHOUT ROWID`` by path (the
path is stored once per table, no rowid index beside it):

``files`` (pass 1, one row per input file; :func:`tasks.inventory.pack_row`)
    ``key`` path relative to the input, ``size``, ``mtime_ns``, ``sop`` SOP Instance UID,
    ``study`` id in ``studies`` (0: none; the work order), ``head`` id in ``heads``,
    ``uids`` the replaced UIDs no named field holds (JSON list, mostly NULL),
    ``error_kind``/``error`` when pass 1 could not read the file.
``heads`` (``id``, ``value``)
    What the files of a series share, as one JSON text stored once: patient and study
    identifiers, classes, transfer syntax, flags, kept UIDs, which of the named UIDs
    (SOP, study, series, frame of reference) the profile replaces.
``studies`` (``id``, ``uid``)
    Study Instance UIDs, so ``files_by_study`` (study id, path) orders the work by study.
``journal`` (pass 2, one row per settled file)
    ``key``, ``status``, ``op`` id in ``ops`` (the operation's fingerprint), ``bytes_in``,
    ``bytes_out``, ``src_size``/``src_mtime_ns`` (what the resume rule compares), ``output``
    (NULL: the input's path), ``error_kind``, ``error``, ``us`` (microseconds), ``extra``
    (JSON of anything else, e.g. ``pixels``; mostly NULL), ``epoch`` (NULL: the output was
    durable when journaled; else the writeback epoch that confirms it: pipeline.writeback).
``uids`` (``key`` original UID, ``value`` new UID): the recorded mapping, plain text.
``ids``, ``patients``, ``runs`` (``key``, ``value`` JSON): pseudonyms, per-patient facts,
    job identity, run records and the writeback state (few rows).

JSON, never pickle (a pickled value in a crafted database runs code, CVE-2024-35515).  The
mappings are plain tables, not ``sqlitedict.SqliteDict`` s: its writes through a thread per
table made each 1,000-UID step of pass 2's mapping 15-30x slower, and its read-only flag
is not SQLite's (docs/ARCHITECTURE.md, "Why the mappings are not a SqliteDict").  WAL
in every connection; writes go through one connection and commit per call (no connection
holds an open write transaction while another writes); reads, aggregates and ordered pages
go through a second one, so a streamed read never sees a half-written batch.  The methods
hand out rows as dicts (:func:`tasks.inventory.unpack_row`): no caller knows the layout.
Aggregates over what a series shares are computed per distinct head (a temporary table of
the heads in use with their file counts), not per file.

The file links originals to pseudonyms, so it is PHI: mode 0600 in a 0700 state folder,
never inside the output tree, and a store readable by group or others is refused.

``Store(path, read_only=True)`` (audit, status, crosswalk) reads a run's store without
writing it: one ``mode=ro`` connection.  It creates neither the store, its folder nor its
lock file (SQLite may add its ``-wal``/``-shm`` files, as any reader of a WAL database does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from pipeline.state import check_folder, open_private, state_dir
from pipeline.walk import LINK_OUTSIDE
from tasks.errors import UsageError
from tasks.inventory import Head, PackedRow, pack_row, prepare_head, unpack_row

#: the layout below; bump with any change of it
STORE_FORMAT = 3
_KV = "(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
SCHEMA = {
    "files": "(key TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sop TEXT, "
             "study INTEGER NOT NULL DEFAULT 0, head INTEGER, uids TEXT, error_kind TEXT, "
             "error TEXT) WITHOUT ROWID",
    "heads": "(id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE)",
    "studies": "(id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE)",
    "journal": "(key TEXT PRIMARY KEY, status TEXT NOT NULL, op INTEGER, bytes_in INTEGER, "
               "bytes_out INTEGER, src_size INTEGER, src_mtime_ns INTEGER, output TEXT, "
               "error_kind TEXT, error TEXT, us INTEGER, extra TEXT, epoch INTEGER) WITHOUT ROWID",
    "ops": "(id INTEGER PRIMARY KEY, op TEXT NOT NULL UNIQUE)",
    "uids": _KV,
    "ids": _KV,
    "patients": _KV,
    "runs": _KV,
}
TABLES = tuple(SCHEMA)
_KEPT_TABLES = ("files", "journal", "uids", "ids", "patients", "runs")
_JSON_TABLES = ("ids", "patients", "runs")
_JOB_KEY = "job"
_SCAN_KEY = "inventory scan"  # what the rows of the last pass 1 were made with
_MAPPING_KEY = "uid mapping"  # what the recorded UIDs were made with (secret, root)
#: what the mapping of the inventory as it stands was last recorded with, whole, and its
#: counts; deleted with every change of the inventory (pipeline.plan.mapping_steps)
_MAPPED_KEY = "inventory mapped"
_WRITEBACK_KEY = "writeback"  # boot, confirmed and next epoch (pipeline.writeback)
#: journal row fields kept as columns (the rest go to ``extra``)
_JOURNAL_COLUMNS = ("status", "op", "bytes_in", "bytes_out", "src_size", "src_mtime_ns",
                    "output", "error_kind", "error")
#: journal row fields that are columns or the key (no ``extra`` JSON for a row of these)
_JOURNAL_KNOWN = frozenset(_JOURNAL_COLUMNS) | {"source", "seconds"}
_FILE_COLUMNS = "f.key, f.size, f.mtime_ns, f.sop, f.head, f.uids, f.error_kind, f.error"
_JOURNAL_SELECT = ("j.status, o.op, j.bytes_in, j.bytes_out, j.src_size, j.src_mtime_ns, "
                   "j.output, j.error_kind, j.error, j.us, j.extra")
_JOURNAL_FROM = "journal AS j LEFT JOIN ops AS o ON o.id = j.op"
#: a file journaled done by operation ``?`` from its source as inventoried, to the
#: mirrored path (``f`` the inventory row, ``j`` its journal row)
_DONE = ("(j.status = 'done' AND j.op = ? AND j.src_size IS f.size AND "
         "j.src_mtime_ns IS f.mtime_ns AND j.output IS NULL)")
#: interned ids and decoded heads kept in memory at most (then the cache starts again;
#: files arrive series by series, so a small cache hits)
_CACHE = 2_000

Row = dict[str, Any]


def _journal_row(key: str, values: Sequence[Any]) -> Row:
    """A journal row back from its columns (:data:`_JOURNAL_SELECT`): the keys it was
    written with (``source`` is the key; ``output`` only when it differs)."""
    status, op, bytes_in, bytes_out, src_size, src_mtime, output, kind, error, us, extra = values
    row: Row = {"source": key, "status": status}
    for name, value in (("op", op), ("bytes_in", bytes_in), ("bytes_out", bytes_out),
                        ("src_size", src_size), ("src_mtime_ns", src_mtime),
                        ("error_kind", kind), ("error", error)):
        if value is not None:
            row[name] = value
    row["output"] = key if output is None else output
    if us is not None:
        row["seconds"] = us / 1e6
    if extra:
        row.update(json.loads(extra))
    return row


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
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._heads: dict[str, int] = {}
        self._studies: dict[str, int] = {}
        self._ops: dict[str, int] = {}
        self._decoded: dict[int, Head] = {}
        self._generation = 0  # bumped by every inventory write: the heads in use change
        self._listed = False  # list_outputs made temp.listed
        self._used_generation = -1
        try:
            if read_only:
                self._open_read_only()
            else:
                self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self._writer = sqlite3.connect(str(self.path), check_same_thread=False)
        try:
            tables = self._tables_of(self._writer)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"store {self.path} cannot be read: {exc}") from None
        if tables:  # checked before anything is written, the journal mode included
            self._check_format(self._writer, tables)
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=OFF")  # a lost journal row: the file is redone
        if not tables:
            for name, columns in SCHEMA.items():
                self._writer.execute(f'CREATE TABLE IF NOT EXISTS "{name}" {columns}')
            self._writer.execute(f"PRAGMA user_version = {STORE_FORMAT}")
            self._writer.commit()
        self._reader = sqlite3.connect(str(self.path), check_same_thread=False)
        self._reader.execute("PRAGMA journal_mode=WAL")

    def _open_read_only(self) -> None:
        """One ``mode=ro`` connection reads (WAL included) and stands in for the writer:
        SQLite itself refuses any write through it."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            self._reader = self._writer = sqlite3.connect(uri, uri=True,
                                                          check_same_thread=False)
            tables = self._tables_of(self._reader)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"store {self.path} cannot be read: {exc}") from None
        self._check_format(self._reader, tables)

    @staticmethod
    def _tables_of(conn: sqlite3.Connection) -> set[str]:
        return {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check_format(self, conn: sqlite3.Connection, tables: set[str]) -> None:
        if not set(_KEPT_TABLES) <= tables:  # the tables every version of the store had
            raise UsageError(f"{self.path} is not an anonpipe store")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != STORE_FORMAT or not set(TABLES) <= tables:
            raise UsageError(f"store {self.path} was written by another version of anonpipe "
                             f"(store format {version}, this one reads {STORE_FORMAT}): give "
                             "another --store, or remove this one (its journal and recorded "
                             "mapping go with it)")

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
        for name in ("_reader", "_writer"):
            conn = getattr(self, name, None)
            if conn is not None:
                conn.close()
        self._reader = self._writer = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _w(self) -> sqlite3.Connection:
        assert self._writer is not None, "store closed"
        return self._writer

    @property
    def _r(self) -> sqlite3.Connection:
        assert self._reader is not None, "store closed"
        return self._reader

    # ------------------------------------------------------------------ writes

    def _write_json(self, table: str, rows: Mapping[str, Any]) -> None:
        """Upsert JSON-encoded ``rows`` of a key/value table in one transaction."""
        if rows:
            assert table in _JSON_TABLES
            dumps = json.dumps
            self._w.executemany(f'REPLACE INTO "{table}" (key, value) VALUES (?, ?)',
                                [(key, dumps(value)) for key, value in rows.items()])
            self._w.commit()

    def _intern(self, table: str, column: str, text: str, cache: dict[str, int]) -> int:
        """The id of ``text`` in an interning table (added if new), through a bounded cache."""
        found = cache.get(text)
        if found is not None:
            return found
        writer = self._w
        cursor = writer.execute(f"INSERT OR IGNORE INTO {table} ({column}) VALUES (?)", (text,))
        if cursor.rowcount:
            found = int(cursor.lastrowid or 0)
        else:
            found = int(writer.execute(f"SELECT id FROM {table} WHERE {column} = ?",
                                       (text,)).fetchone()[0])
        if len(cache) >= _CACHE:
            cache.clear()
        cache[text] = found
        return found

    def job_identity(self) -> Row | None:
        value = self.get("runs", _JOB_KEY)
        return value if isinstance(value, dict) else None

    def set_job_identity(self, identity: Row) -> None:
        self._write_json("runs", {_JOB_KEY: identity})

    def reset_inventory(self) -> None:
        """Pass 1 rewrites the inventory; dropping the index first keeps inserts cheap."""
        writer = self._w
        writer.execute("DROP INDEX IF EXISTS files_by_study")
        for table in ("files", "heads", "studies"):
            writer.execute(f'DELETE FROM "{table}"')
        self._inventory_changed()
        writer.commit()
        self._heads.clear()
        self._studies.clear()
        self._decoded.clear()
        self._generation += 1
        self._write_json("runs", {_SCAN_KEY: None})

    def begin_inventory(self, scan_key: str) -> bool:
        """Start a pass 1 that may reuse the rows of the last one, made with ``scan_key``
        (input folder, replaced tags, row format): True when it may, and then every row
        the pass neither reuses (:meth:`mark_seen`) nor rewrites is dropped by
        :meth:`sweep_unseen`; False when the inventory was emptied instead.

        Why: a run resumed after a kill, or repeated over an archive that grew, would
        otherwise read every header again; unchanged files keep their rows.
        """
        self._w.execute("CREATE TEMP TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY) "
                        "WITHOUT ROWID")
        self._w.execute("DELETE FROM temp.seen")
        if self.get("runs", _SCAN_KEY) != scan_key:
            self.reset_inventory()
            self._write_json("runs", {_SCAN_KEY: scan_key})
            return False
        return True

    def unchanged(self, entries: Mapping[str, tuple[int, int]]) -> set[str]:
        """Those of ``entries`` (path -> (size, mtime_ns) as listed now) whose row was read
        from a file of that size and modification time, without error."""
        found: set[str] = set()
        keys = list(entries)
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self._query(
                "SELECT key, size, mtime_ns FROM files WHERE error_kind IS NULL AND key IN "
                f'({",".join("?" * len(part))})', tuple(part))
            found.update(key for key, n, t in rows if entries[key] == (n, t))
        return found

    def mark_seen(self, keys: Iterable[str]) -> None:
        """Rows this pass 1 keeps (reused, rewritten or set aside as walk errors)."""
        self._w.executemany("INSERT OR IGNORE INTO temp.seen (key) VALUES (?)",
                            ((key,) for key in keys))
        self._w.commit()

    def sweep_unseen(self) -> int:
        """Drop the rows of files this pass 1 did not list (deleted since); how many."""
        dropped = self._w.execute(
            'DELETE FROM "files" WHERE key NOT IN (SELECT key FROM temp.seen)').rowcount
        if dropped:
            self._inventory_changed()
        self._w.execute("DELETE FROM temp.seen")
        self._w.commit()
        self._generation += 1
        return int(dropped)

    def writeback(self) -> Row | None:
        """The writeback state (pipeline.writeback), None before the first local run."""
        value = self.get("runs", _WRITEBACK_KEY)
        return value if isinstance(value, dict) else None

    def set_writeback(self, state: Row) -> None:
        self._write_json("runs", {_WRITEBACK_KEY: state})

    def forget_unconfirmed(self, confirmed: int) -> int:
        """Drop the journal rows of outputs not confirmed on disk (epochs after
        ``confirmed``): the machine restarted since, so those files are written again."""
        dropped = self._w.execute("DELETE FROM journal WHERE epoch > ?", (confirmed,)).rowcount
        self._w.commit()
        return int(dropped)

    def reset_journal(self) -> None:
        self._w.execute('DELETE FROM "journal"')
        self._w.commit()

    def add_inventory(self, rows: Mapping[str, Row]) -> None:
        """Rows as :func:`tasks.inventory.scan_file` makes them."""
        self.add_packed([pack_row(key, row) for key, row in rows.items()])

    def add_packed(self, rows: Iterable[PackedRow]) -> None:
        """Rows already packed (by the scan workers): heads and studies interned here."""
        heads, studies, intern = self._heads, self._studies, self._intern
        values = []
        for key, size, mtime, sop, study, head, uids, kind, error in rows:
            values.append((
                key, size, mtime, sop,
                0 if study is None else intern("studies", "uid", study, studies),
                None if head is None else intern("heads", "value", head, heads),
                uids, kind, error))
        if values:
            self._w.executemany("REPLACE INTO files (key, size, mtime_ns, sop, study, head, "
                                "uids, error_kind, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                values)
            self._inventory_changed()
        self._w.commit()
        self._generation += 1

    def finish_inventory(self) -> None:
        """Index the work order (study, path) so pass 2 pages through it with short reads."""
        self._w.execute("CREATE INDEX IF NOT EXISTS files_by_study ON files(study, key)")
        self._w.commit()

    def journal(self, rows: Mapping[str, Row], epoch: int | None = None) -> None:
        """Record pass-2 results of one batch (one commit); ``epoch``: the writeback epoch
        whose confirmation makes its written outputs durable (None: they already are)."""
        if not rows:
            return
        values = []
        ops, intern = self._ops, self._intern
        for key, row in rows.items():
            op = row.get("op")
            output = row.get("output")
            seconds = row.get("seconds")
            extra = (None if row.keys() <= _JOURNAL_KNOWN else
                     {k: v for k, v in row.items() if k not in _JOURNAL_KNOWN})
            values.append((
                key, row.get("status"),
                None if op is None else ops.get(op) or intern("ops", "op", str(op), ops),
                row.get("bytes_in"), row.get("bytes_out"), row.get("src_size"),
                row.get("src_mtime_ns"), None if output in (None, key) else output,
                row.get("error_kind"), row.get("error"),
                None if seconds is None else round(float(seconds) * 1e6),
                json.dumps(extra, separators=(",", ":")) if extra else None,
                epoch if row.get("status") == "done" else None))
        self._w.executemany(
            "REPLACE INTO journal (key, status, op, bytes_in, bytes_out, src_size, "
            "src_mtime_ns, output, error_kind, error, us, extra, epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        self._w.commit()

    def put_uids(self, mapping: Mapping[str, str]) -> None:
        if mapping:
            self._w.executemany("REPLACE INTO uids (key, value) VALUES (?, ?)",
                                list(mapping.items()))
            self._w.commit()

    def put_ids(self, mapping: Mapping[str, str]) -> None:
        self._write_json("ids", mapping)

    def put_patients(self, rows: Mapping[str, Row]) -> None:
        self._write_json("patients", rows)

    def put_run(self, run_id: str, record: Row) -> None:
        self._write_json("runs", {run_id: record})

    # ------------------------------------------------------------------ point reads

    def _head(self, head_id: int | None) -> Head | None:
        """A head decoded (cached: a series' files share it)."""
        if head_id is None:
            return None
        head = self._decoded.get(head_id)
        if head is None:
            found = self._query("SELECT value FROM heads WHERE id = ?", (head_id,))
            head = prepare_head(json.loads(found[0][0]) if found else {})
            if len(self._decoded) >= _CACHE:
                self._decoded.clear()
            self._decoded[head_id] = head
        return head

    def _file_row(self, values: Sequence[Any]) -> tuple[str, Row]:
        """(path, row) from the columns of :data:`_FILE_COLUMNS`."""
        key, size, mtime, sop, head, uids, kind, error = values
        return key, unpack_row(size, mtime, sop, self._head(head), uids, kind, error)

    def get(self, table: str, key: str) -> Any:
        return self.get_many(table, [key]).get(key)

    def get_many(self, table: str, keys: Sequence[str]) -> dict[str, Any]:
        """key -> value for those ``keys`` in ``table``: one query per 500 (SQLite's limit
        on bound variables)."""
        assert table in TABLES
        out: dict[str, Any] = {}
        for i in range(0, len(keys), 500):
            part = tuple(keys[i:i + 500])
            marks = ",".join("?" * len(part))
            if table == "files":
                out.update(self._file_row(values) for values in self._query(
                    f"SELECT {_FILE_COLUMNS} FROM files AS f WHERE f.key IN ({marks})", part))
            elif table == "journal":
                out.update((key, _journal_row(key, values)) for key, *values in self._query(
                    f"SELECT j.key, {_JOURNAL_SELECT} FROM {_JOURNAL_FROM} "
                    f"WHERE j.key IN ({marks})", part))
            elif table == "uids":
                out.update(self._query(f"SELECT key, value FROM uids WHERE key IN ({marks})",
                                       part))
            else:
                assert table in _JSON_TABLES
                out.update((key, json.loads(value)) for key, value in self._query(
                    f'SELECT key, value FROM "{table}" WHERE key IN ({marks})', part))
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
        return self._r.execute(sql, args).fetchall()

    def _stream(self, sql: str, args: tuple[Any, ...] = (), size: int = 1000
                ) -> Iterator[tuple[Any, ...]]:
        cursor = self._r.execute(sql, args)
        try:
            while rows := cursor.fetchmany(size):
                yield from rows
        finally:
            # a stream left unfinished by an interrupted run is closed when it is
            # collected, which may be after the store: its cursor went with it
            with contextlib.suppress(sqlite3.ProgrammingError):
                cursor.close()

    def _used(self) -> str:
        """The heads in use, with their files (``n``) and readable files (``r``): a temporary
        table of the read connection, rebuilt after the inventory changed.  Aggregates over
        what a series shares read it: one JSON parse per head, not per file."""
        if self._used_generation != self._generation:
            reader = self._r
            reader.execute("CREATE TEMP TABLE IF NOT EXISTS used "
                           "(id INTEGER PRIMARY KEY, value TEXT, n INTEGER, r INTEGER)")
            reader.execute("DELETE FROM temp.used")
            reader.execute(
                "INSERT INTO temp.used SELECT h.id, h.value, g.n, g.r FROM (SELECT head, "
                "count(*) AS n, sum(error_kind IS NULL) AS r FROM files WHERE head IS NOT NULL "
                "GROUP BY head) AS g JOIN heads AS h ON h.id = g.head")
            reader.commit()
            self._used_generation = self._generation
        return "temp.used"

    def work_pages(self, page: int = 2000) -> Iterator[tuple[str, Row, Row | None]]:
        """(path, inventory row, journal row or None) in (study, path) order (studies in the
        order pass 1 first met them)."""
        for key, row, journaled in self.resume_pages(None, page):
            assert row is not None
            yield key, row, journaled

    def resume_pages(self, done_by: str | None, page: int = 2000
                     ) -> Iterator[tuple[str, Row | None, Row | None]]:
        """:meth:`work_pages`, but files journaled done by the operation ``done_by`` (its
        fingerprint) from a source of the same size and time, to the mirrored path, come as
        (path, None, {"output", "bytes_out", "size"}), unpacked no further: on a rerun of a
        million done files only their outputs are left to check.  Those whose output
        :meth:`list_outputs` found with the size the journal recorded do not come at all
        (:meth:`intact_done` counts them): the check is a join, not a stat per file.

        Keyset pages: each page is a short read transaction (a long-lived cursor would keep
        the journal's WAL from being checkpointed) that seeks the ``files_by_study`` index
        (the ``s >= ? AND (s > ? OR key > ?)`` form is what lets SQLite seek; a row-value
        comparison would scan from the start on every page).
        """
        op_id = self._op_id(done_by)
        listed = done_by is not None and self._listed
        select = (f"SELECT f.study, {_FILE_COLUMNS}, j.key, {_JOURNAL_SELECT}, {_DONE} "
                  f"FROM files AS f LEFT JOIN journal AS j ON j.key = f.key LEFT JOIN ops AS o "
                  "ON o.id = j.op " + ("LEFT JOIN temp.listed AS l ON l.rel = f.key " if listed
                                       else ""))
        # the listing is the writer's temporary table: read on that connection then
        query = self._w.execute if listed else self._r.execute
        intact = f" NOT ifnull({_DONE} AND l.size IS j.bytes_out, 0)" if listed else ""
        order = " ORDER BY f.study, f.key LIMIT ?"
        also = (op_id,) if listed else ()  # the argument of the intact clause
        rows = query(select + (" WHERE" + intact if listed else "") + order,
                     (op_id, *also, page)).fetchall()
        then = "WHERE f.study >= ? AND (f.study > ? OR f.key > ?)" + (
            " AND" + intact if listed else "")
        while rows:
            for values in rows:
                key = values[1]
                if values[-1]:
                    yield key, None, {"output": key, "bytes_out": values[13],
                                      "size": values[2]}
                    continue
                key, row = self._file_row(values[1:9])
                yield key, row, (None if values[9] is None else
                                 _journal_row(key, values[10:-1]))
            last_study, last_key = rows[-1][0], rows[-1][1]
            rows = query(select + then + order,
                         (op_id, last_study, last_study, last_key, *also, page)).fetchall()

    def intact_done(self, done_by: str) -> int:
        """How many files :meth:`resume_pages` leaves out as done with their output intact
        (none without a listing of the output)."""
        if not self._listed:
            return 0
        op_id = self._op_id(done_by)
        return int(self._w.execute(
            "SELECT count(*) FROM files AS f JOIN journal AS j ON j.key = f.key JOIN "
            f"temp.listed AS l ON l.rel = f.key WHERE {_DONE} AND l.size IS j.bytes_out",
            (op_id,)).fetchone()[0])

    def _op_id(self, op: str | None) -> int:
        if op is None:
            return -1
        found = self._query("SELECT id FROM ops WHERE op = ?", (op,))
        return int(found[0][0]) if found else -1

    def counts(self) -> Row:
        """Pass-1 findings as counts: files from the inventory, the rest per head."""
        files, errors, size = self._query(
            "SELECT count(*), count(error_kind), coalesce(sum(size), 0) FROM files")[0]
        used = self._used()
        j = "json_extract(value, '$.{}')".format
        patients, studies, series, deidentified, dicomdir, preamble = self._query(
            f"SELECT count(DISTINCT {j('patient_id')}), count(DISTINCT {j('study')}), "
            f"count(DISTINCT {j('series')}), coalesce(sum(n * {j('deidentified')}), 0), "
            f"coalesce(sum(n * {j('dicomdir')}), 0), coalesce(sum(n * {j('preamble')}), 0) "
            f"FROM {used}")[0]
        by = self._grouped("sop_class", "ts")
        by["error_kind"] = dict(self._query(
            "SELECT error_kind, count(*) AS n FROM files WHERE error_kind IS NOT NULL "
            "GROUP BY 1 ORDER BY n DESC"))
        dup_uids, dup_files = self._query(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM files "
            "WHERE sop IS NOT NULL GROUP BY sop HAVING n > 1)")[0]
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
        """field -> {value: files}, most files first, from the heads in use."""
        columns = ", ".join(f"json_extract(value, '$.{field}')" for field in fields)
        totals: dict[str, dict[str, int]] = {field: {} for field in fields}
        for *values, n in self._query(
                f"SELECT {columns}, sum(n) FROM {self._used()} "
                f"GROUP BY {', '.join(map(str, range(1, len(fields) + 1)))}"):
            for field, value in zip(fields, values, strict=True):
                if value is not None:
                    totals[field][str(value)] = totals[field].get(str(value), 0) + n
        return {field: dict(sorted(counts.items(), key=lambda kv: -kv[1]))
                for field, counts in totals.items()}

    def duplicate_sops(self, limit: int = 100) -> list[tuple[str, list[str]]]:
        """(SOP Instance UID, paths) for UIDs found in more than one file.  PHI: debug only."""
        rows = self._query(
            "SELECT sop, group_concat(key, char(10)) FROM files WHERE sop IS NOT NULL "
            "GROUP BY sop HAVING count(*) > 1 LIMIT ?", (limit,))
        return [(uid, sorted(paths.split("\n"))) for uid, paths in rows]

    def conflicting_patients(self, limit: int = 1000) -> list[tuple[str, list[str], list[str]]]:
        """Patient IDs seen with more than one name or birth date (PHI: debug output only)."""
        j = "json_extract(value, '$.{}')".format
        rows = self._query(
            f"SELECT {j('patient_id')}, group_concat(DISTINCT {j('patient_name')}), "
            f"group_concat(DISTINCT {j('birth_date')}) FROM {self._used()} "
            f"WHERE {j('patient_id')} IS NOT NULL GROUP BY 1 "
            f"HAVING count(DISTINCT {j('patient_name')}) > 1 "
            f"OR count(DISTINCT {j('birth_date')}) > 1 LIMIT ?", (limit,)
        )
        return [(pid, (names or "").split(","), (dates or "").split(","))
                for pid, names, dates in rows]

    def inventory(self) -> Iterator[tuple[str, Row]]:
        """(path, row) of every inventory row in path order (streamed)."""
        for values in self._stream(f"SELECT {_FILE_COLUMNS} FROM files AS f ORDER BY f.key"):
            yield self._file_row(values)

    def heads(self) -> Iterator[Row]:
        """What the readable files of a series share (:func:`tasks.inventory.pack_row`),
        each distinct head once (streamed): the identifiers without a pass over every file."""
        for (value,) in self._stream(f"SELECT value FROM {self._used()} WHERE r > 0"):
            head = json.loads(value)
            head.pop("replaced", None)
            yield head

    def uid_mapping_key(self) -> str | None:
        """What the recorded UID mapping was made with (a hash of secret and root), set
        when it was complete; None when unknown."""
        value = self.get("runs", _MAPPING_KEY)
        return value if isinstance(value, str) else None

    def set_uid_mapping_key(self, key: str | None) -> None:
        self._write_json("runs", {_MAPPING_KEY: key})

    def mapped_inventory(self) -> Row | None:
        """What the mapping of the inventory as it stands was recorded with, whole, and
        what it counted (``pipeline.plan.mapping_steps``); None when the inventory changed
        since, or the recording did not finish."""
        value = self.get("runs", _MAPPED_KEY)
        return value if isinstance(value, dict) else None

    def set_mapped_inventory(self, record: Row) -> None:
        self._write_json("runs", {_MAPPED_KEY: record})

    def _inventory_changed(self) -> None:
        """Forget :meth:`mapped_inventory`, in the writer's transaction that changes the
        inventory: a run killed after its commit finds the mapping to be recorded again."""
        self._w.execute('DELETE FROM "runs" WHERE key = ?', (_MAPPED_KEY,))

    def replaced_uids(self, missing_only: bool = False) -> Iterator[str]:
        """Every distinct UID the profile replaces, over the whole inventory (streamed);
        ``missing_only``: those the recorded mapping does not hold yet."""
        used = self._used()
        missing = " AND uid NOT IN (SELECT key FROM uids)" if missing_only else ""
        for (uid,) in self._stream(
            "SELECT uid FROM ("
            "SELECT f.sop AS uid FROM files AS f WHERE f.sop IS NOT NULL AND f.head IN "
            f"(SELECT u.id FROM {used} AS u, json_each(u.value, '$.replaced') AS r "
            "WHERE r.value = 'sop') "
            f"UNION SELECT json_extract(u.value, '$.' || r.value) FROM {used} AS u, "
            "json_each(u.value, '$.replaced') AS r WHERE r.value != 'sop' "
            "UNION SELECT e.value FROM files AS f, json_each(f.uids) AS e "
            "WHERE f.uids IS NOT NULL) WHERE uid IS NOT NULL" + missing
        ):
            yield uid

    def patients(self) -> Iterator[tuple[str, list[str], list[str], int]]:
        """(Patient ID, names, birth dates, studies) per patient (streamed)."""
        j = "json_extract(value, '$.{}')".format
        for pid, names, dates, studies in self._stream(
            f"SELECT {j('patient_id')}, json_group_array(DISTINCT {j('patient_name')}), "
            f"json_group_array(DISTINCT {j('birth_date')}), count(DISTINCT {j('study')}) "
            f"FROM {self._used()} WHERE {j('patient_id')} IS NOT NULL GROUP BY 1"
        ):
            yield (pid, [n for n in json.loads(names) if n],
                   [d for d in json.loads(dates) if d], studies)

    def identifiers(self, field: str) -> Iterator[str]:
        """Distinct values of one identifier field of the inventory (streamed)."""
        expr = f"json_extract(value, '$.{field}')"
        for (value,) in self._stream(
                f"SELECT DISTINCT {expr} FROM {self._used()} WHERE {expr} IS NOT NULL"):
            yield value

    def distinct_identifiers(self) -> Iterator[Row]:
        """The identifier fields of the readable inventory, each combination once (streamed):
        what output names are checked against (pipeline.names)."""
        fields = ("patient_name", "patient_id", "accession", "other_ids", "birth_date",
                  "charset")
        columns = ", ".join(f"json_extract(value, '$.{name}')" for name in fields)
        for values in self._stream(f"SELECT DISTINCT {columns} FROM {self._used()} "
                                   "WHERE r > 0"):
            row = dict(zip(fields, values, strict=True))
            if isinstance(row["other_ids"], str):
                row["other_ids"] = json.loads(row["other_ids"])
            yield row

    def output_sources(self) -> dict[str, str]:
        """Output path -> input path of the journal's outputs named otherwise than their
        input (``--output-names uid``)."""
        return {out: key for out, key in self._query(
            "SELECT output, key FROM journal WHERE output IS NOT NULL")}

    def readable_paths(self) -> Iterator[str]:
        """Paths of the readable inventory in path order (streamed)."""
        for (key,) in self._stream("SELECT key FROM files WHERE error_kind IS NULL "
                                   "ORDER BY key"):
            yield key

    def list_outputs(self, files: Iterable[tuple[str, int]]) -> int:
        """Keep ``files`` (path, size: the files found in the output folder) for
        :meth:`not_journaled_outputs` and :meth:`resume_pages`, streamed into a temporary
        table: a million paths are not held in the driver's memory through pass 2.
        Returns how many."""
        writer = self._w
        writer.execute("CREATE TEMP TABLE IF NOT EXISTS listed (rel TEXT PRIMARY KEY, "
                       "size INTEGER) WITHOUT ROWID")
        writer.execute("DELETE FROM temp.listed")
        writer.executemany("INSERT OR IGNORE INTO temp.listed VALUES (?, ?)", files)
        writer.commit()
        self._listed = True
        return int(writer.execute("SELECT count(*) FROM temp.listed").fetchone()[0])

    def not_journaled_outputs(self, op: str | None = None) -> list[str]:
        """Of the files :meth:`list_outputs` kept, those that no journal row names as a
        done output; with ``op``, as a done output of that operation (sorted)."""
        done = "j.status = 'done'" + (" AND o.op = ?" if op is not None else "")
        args = (op, op) if op is not None else ()
        rows = self._w.execute(
            "SELECT rel FROM temp.listed AS l WHERE NOT EXISTS (SELECT 1 FROM journal AS j "
            f"LEFT JOIN ops AS o ON o.id = j.op WHERE j.key = l.rel AND j.output IS NULL "
            f"AND {done}) AND rel NOT IN (SELECT j.output FROM journal AS j LEFT JOIN ops AS o "
            f"ON o.id = j.op WHERE j.output IS NOT NULL AND {done}) ORDER BY rel",
            args).fetchall()
        return [rel for (rel,) in rows]

    def journal_counts(self) -> dict[str, int]:
        return {status: n for status, n in self._query(
            "SELECT status, count(*) FROM journal GROUP BY 1")}

    def journal_errors(self, limit_per_kind: int = 1000
                       ) -> dict[str, tuple[int, list[tuple[str, str]]]]:
        """Journaled failures and reasoned skips: kind -> (count, [(path, reason)])."""
        return self._errors("journal", limit_per_kind)

    def inventory_errors(self, limit_per_kind: int = 1000
                         ) -> dict[str, tuple[int, list[tuple[str, str]]]]:
        """Files pass 1 could not read: kind -> (count, [(path, reason)])."""
        return self._errors("files", limit_per_kind)

    def _errors(self, table: str, limit: int) -> dict[str, tuple[int, list[tuple[str, str]]]]:
        out: dict[str, tuple[int, list[tuple[str, str]]]] = {}
        for name, count in self._query(
            f'SELECT error_kind, count(*) FROM "{table}" WHERE error_kind IS NOT NULL '
            "GROUP BY 1 ORDER BY 1"
        ):
            rows = self._query(f'SELECT key, error FROM "{table}" WHERE error_kind = ? '
                               "ORDER BY key LIMIT ?", (name, limit))
            out[name] = (count, [(k, r or "") for k, r in rows])
        return out

    def rows(self, table: str) -> Iterator[tuple[str, Any]]:
        """(key, value) of every row of ``table`` in key order (streamed)."""
        if table == "files":
            yield from self.inventory()
            return
        if table == "journal":
            for key, *values in self._stream(f"SELECT j.key, {_JOURNAL_SELECT} FROM "
                                              f"{_JOURNAL_FROM} ORDER BY j.key"):
                yield key, _journal_row(key, values)
            return
        assert table in _JSON_TABLES or table == "uids"
        decode = json.loads if table in _JSON_TABLES else str
        for key, value in self._stream(f'SELECT key, value FROM "{table}" ORDER BY key'):
            yield key, decode(value)

    def uid_roles(self) -> Iterator[tuple[str, str, str]]:
        """(role, old UID, new UID) of the recorded mapping: ``study``, ``series`` and
        ``sop`` for the inventory's Study/Series/SOP Instance UIDs, ``other`` for the rest."""
        used = self._used()
        roles = " UNION ".join(
            f"SELECT DISTINCT json_extract(value, '$.{role}') AS uid, '{role}' AS role "
            f"FROM {used} WHERE json_extract(value, '$.{role}') IS NOT NULL"
            for role in ("study", "series"))
        roles += " UNION SELECT DISTINCT sop AS uid, 'sop' AS role FROM files " \
                 "WHERE sop IS NOT NULL"
        for role, old, new in self._stream(
                f"SELECT r.role, u.key, u.value FROM ({roles}) AS r JOIN uids AS u ON u.key = r.uid "
                "ORDER BY r.role, u.key"):
            yield role, old, new
        for old, new in self._stream(
                f"SELECT key, value FROM uids WHERE key NOT IN (SELECT uid FROM ({roles})) "
                "ORDER BY key"):
            yield "other", old, new

    def studies(self) -> Iterator[tuple[str, str | None, str | None, int, int]]:
        """(Study Instance UID, Patient ID, Accession Number, files, files written) per
        study of the inventory (streamed; PHI: for the 0600 study list and -D only)."""
        j = "json_extract(h.value, '$.{}')".format
        for row in self._stream(
                f"SELECT {j('study')}, min({j('patient_id')}), min({j('accession')}), "
                "sum(g.n), sum(g.written) FROM (SELECT f.head, count(*) AS n, "
                "sum(jr.status = 'done') AS written FROM files AS f LEFT JOIN journal AS jr "
                "ON jr.key = f.key WHERE f.head IS NOT NULL GROUP BY f.head) AS g "
                f"JOIN heads AS h ON h.id = g.head WHERE {j('study')} IS NOT NULL "
                "GROUP BY 1 ORDER BY 2, 1"):
            study, pid, accession, files, written = row
            yield study, pid, accession, int(files), int(written or 0)

    def journal_outcomes(self) -> list[tuple[str, str | None, str | None, int]]:
        """(status, error kind, reason, files) of the journal, grouped."""
        return [(str(status), kind, reason, int(n)) for status, kind, reason, n in self._query(
            "SELECT status, error_kind, error, count(*) FROM journal GROUP BY 1, 2, 3")]

    def failed_paths(self) -> Iterator[str]:
        """Paths the journal holds as not written (failed, refused, not DICOM), sorted:
        what ``--retry-failed`` runs again."""
        for (key,) in self._stream("SELECT key FROM journal WHERE error_kind IS NOT NULL "
                                   "ORDER BY key"):
            yield key

    def count_rejected(self, deidentify: bool,
                       burned_in_classes: Sequence[str] | None = None) -> int:
        """Files pass 1 shows cannot be processed (unreadable; for -e also de-identified
        already or a DICOMDIR; with ``burned_in_classes``, burned-in annotation YES or
        absent on one of those SOP classes).  Must agree with
        :func:`pipeline.plan.rejection`."""
        # a link leading out of the input is skipped, not rejected
        rejected = int(self._query(
            "SELECT count(*) FROM files WHERE error_kind IS NOT NULL AND error_kind != ?",
            (LINK_OUTSIDE,))[0][0])
        if not deidentify:
            return rejected
        j = "json_extract(value, '$.{}')".format
        extra = f"{j('deidentified')} OR {j('dicomdir')}"
        args: tuple[str, ...] = ()
        if burned_in_classes is not None:
            marks = ",".join("?" * len(burned_in_classes)) or "NULL"
            extra += (f" OR upper(trim({j('burned_in')})) = 'YES' OR ({j('burned_in')} IS NULL"
                      f" AND {j('sop_class')} IN ({marks}))")
            args = tuple(burned_in_classes)
        return rejected + int(self._query(
            f"SELECT coalesce(sum(r), 0) FROM {self._used()} WHERE {extra}", args)[0][0])

    def table_size(self, table: str) -> int:
        """Row count (a full scan: for tests and reports, not hot paths)."""
        assert table in TABLES
        return int(self._query(f'SELECT count(*) FROM "{table}"')[0][0])

    def recorded_uids(self, candidates: Sequence[bytes]) -> set[bytes]:
        """Those of ``candidates`` (UID-shaped bytes) that are originals of the recorded
        mapping: the audit looks each file's UIDs up here instead of holding them all."""
        found: set[bytes] = set()
        for i in range(0, len(candidates), 500):
            part = tuple(c.decode("latin-1") for c in candidates[i:i + 500])
            found.update(key.encode("latin-1") for (key,) in self._query(
                f'SELECT key FROM uids WHERE key IN ({",".join("?" * len(part))})', part))
        return found
