"""The store: private, JSON-encoded, WAL, one driver at a time, SQL views of the inventory."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from pipeline.state import load_or_create_secret, state_dir
from pipeline.store import Store, job_store_path
from tasks.errors import UsageError


def _row(study: str, sop: str, pid: str = "PID1", name: str = "DOE^JANE", **extra: object
         ) -> dict[str, object]:
    return {"size": 100, "mtime_ns": 1, "study": study, "series": study + ".1", "sop": sop,
            "sop_class": "1.2.840.10008.5.1.4.1.1.2", "ts": "1.2.840.10008.1.2.1",
            "patient_id": pid, "patient_name": name, "birth_date": "19700101",
            "deidentified": False, "dicomdir": False,
            "replace": [study, sop], **extra}


def test_created_private_in_wal_with_columns_and_json_heads(tmp_path: Path) -> None:
    path = tmp_path / "s" / "store.sqlite"
    with Store(path) as store:
        store.add_inventory({"a.dcm": _row("1.1", "1.1.5"), "b.dcm": _row("1.1", "1.1.6")})
        store.put_run("r", {"mode": "deidentify"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sop, head = conn.execute("SELECT sop, head FROM files WHERE key = 'a.dcm'").fetchone()
    heads = conn.execute("SELECT id, value FROM heads").fetchall()
    run = conn.execute("SELECT value FROM runs WHERE key = 'r'").fetchone()[0]
    conn.close()
    assert sop == "1.1.5" and [h for h, _ in heads] == [head]  # one head for the series
    assert json.loads(heads[0][1])["patient_id"] == "PID1"  # JSON text, not pickle
    assert json.loads(run) == {"mode": "deidentify"}


def test_rows_come_back_as_they_went_in(tmp_path: Path) -> None:
    rows = {"a": _row("1.1", "1.1.1"),
            "b": {**_row("1.1", "1.1.2"), "replace": ["1.1", "1.1.2", "1.9.9", "1.9.8"],
                  "kept_uids": ["1.2.840.10008.1.1"], "other_ids": ["X1"], "preamble": True},
            "c": {**_row("1.2", "1.2.1"), "replace": []},
            "d": {"size": 5, "mtime_ns": 7, "error_kind": "DicomFormatError", "error": "no"},
            "e": {"size": 9, "mtime_ns": 3}}
    with Store(tmp_path / "store.sqlite") as store:
        store.add_inventory(rows)
        got = dict(store.inventory())
        store.journal({"a": {"source": "a", "status": "done", "op": "x" * 24, "bytes_in": 100,
                             "bytes_out": 90, "error_kind": None, "error": None,
                             "seconds": 0.001234, "pixels": "rule", "src_size": 100,
                             "src_mtime_ns": 1, "output": "a"},
                       "d": {"source": "d", "status": "failed", "op": "y",
                             "error_kind": "DicomFormatError", "error": "no",
                             "output": "o/d"}})
        journal = dict(store.rows("journal"))
    assert {k: sorted(v["replace"]) for k, v in got.items() if "replace" in v} == \
        {k: sorted(v["replace"]) for k, v in rows.items() if "replace" in v}
    assert got == {k: {**v, "replace": sorted(v["replace"])} if "replace" in v else v
                   for k, v in rows.items()}
    assert journal["a"] == {"source": "a", "status": "done", "op": "x" * 24, "bytes_in": 100,
                            "bytes_out": 90, "seconds": 0.001234, "pixels": "rule",
                            "src_size": 100, "src_mtime_ns": 1, "output": "a"}
    assert journal["d"]["output"] == "o/d" and journal["d"]["error"] == "no"


def test_a_store_of_another_format_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    conn = sqlite3.connect(path)  # the key/value layout of earlier versions
    for table in ("files", "journal", "uids", "ids", "patients", "runs"):
        conn.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value BLOB)")
    conn.commit()
    conn.close()
    os.chmod(path, 0o600)
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(UsageError, match="written by another version of anonpipe"):
            Store(path, read_only=read_only)
    assert path.read_bytes() == before


def test_refuses_a_store_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Store(path).close()
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        Store(path)


def test_one_driver_per_store(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store(path), pytest.raises(UsageError, match="in use by another anonpipe run"):
        Store(path)
    Store(path).close()  # the lock went with the first store


def test_default_store_is_per_output_in_the_state_folder(tmp_path: Path) -> None:
    a, b = job_store_path(tmp_path / "out-a"), job_store_path(tmp_path / "out-b")
    assert a != b and a == job_store_path(tmp_path / "out-a")
    assert a.is_relative_to(state_dir()) and "out-a" not in a.name


def test_secret_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "x" / "store.sqlite.secret"
    first = load_or_create_secret(path)
    assert len(first) == 32 and load_or_create_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_findings_count_duplicates_and_conflicts(tmp_path: Path) -> None:
    with Store(tmp_path / "store.sqlite") as store:
        store.add_inventory({
            "a": _row("1.1", "1.1.1"),
            "b": _row("1.1", "1.1.1"),  # same SOP Instance UID in another file
            "c": _row("1.2", "1.2.1", name="DOE^JOHN"),  # same Patient ID, another name
            "d": _row("1.3", "1.3.1", pid="PID2", deidentified=True),
            "e": {"size": 5, "error_kind": "DicomFormatError", "error": "not a DICOM file"},
        })
        counts = store.counts()
        assert counts["files"] == 5 and counts["bytes"] == 405
        assert (counts["patients"], counts["studies"], counts["series"]) == (2, 3, 3)
        assert counts["duplicate_sop_uids"] == 1 and counts["files_with_duplicate_sop_uid"] == 2
        assert counts["conflicting_patients"] == 1 and counts["already_deidentified"] == 1
        assert counts["unreadable"] == 1
        assert counts["errors_by_kind"] == {"DicomFormatError": 1}
        assert counts["transfer_syntaxes"] == {"1.2.840.10008.1.2.1": 4}
        assert store.duplicate_sops() == [("1.1.1", ["a", "b"])]
        assert store.conflicting_patients()[0][0] == "PID1"
        assert sorted(store.replaced_uids()) == ["1.1", "1.1.1", "1.2", "1.2.1", "1.3", "1.3.1"]
        assert store.count_rejected(deidentify=True) == 2
        assert store.count_rejected(deidentify=False) == 1


def test_work_pages_follow_study_then_path_across_pages(tmp_path: Path) -> None:
    with Store(tmp_path / "store.sqlite") as store:
        rows = {f"f{i:03d}": _row(f"1.{i % 7}", f"1.{i % 7}.{i}") for i in range(50)}
        store.add_inventory(rows)
        store.finish_inventory()
        store.journal({"f010": {"status": "done"}})
        listed = list(store.work_pages(page=6))
    keys = [k for k, _, _ in listed]
    assert sorted(keys) == sorted(rows)
    assert keys == sorted(rows, key=lambda k: (rows[k]["study"], k))
    journaled = {k: j for k, _, j in listed if j}
    assert journaled == {"f010": {"source": "f010", "status": "done", "output": "f010"}}


def test_reset_inventory_drops_old_rows(tmp_path: Path) -> None:
    with Store(tmp_path / "store.sqlite") as store:
        store.add_inventory({"a": _row("1", "1.1")})
        store.finish_inventory()
        store.reset_inventory()
        store.add_inventory({"b": _row("1", "1.2")})
        store.finish_inventory()
        assert [k for k, _, _ in store.work_pages()] == ["b"]


def test_a_reader_opening_while_the_driver_writes_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store(path) as store:
        store.add_inventory({"a": _row("1", "1.1")})
        reader = sqlite3.connect(path, timeout=5)
        reader.execute("PRAGMA journal_mode=WAL")
        assert reader.execute("SELECT sop FROM files WHERE key = 'a'").fetchone() == ("1.1",)
        reader.close()


def test_work_pages_seek_the_index(tmp_path: Path) -> None:
    """Each page must seek, not scan from the start (quadratic on a million files)."""
    with Store(tmp_path / "store.sqlite") as store:
        store.add_inventory({"a": _row("1", "1.1")})
        store.finish_inventory()
        captured: list[str] = []
        store._reader.set_trace_callback(captured.append)
        list(store.work_pages(page=1))
        store._reader.set_trace_callback(None)
        seek = next(q for q in captured if "WHERE f.study" in q)
        plan = store._query("EXPLAIN QUERY PLAN " + seek)
    assert any("SEARCH f USING INDEX files_by_study" in row[3] for row in plan), plan


# --------------------------------------------------------------------------- read only


def _snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_mode


def test_read_only_never_creates_a_store(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "store.sqlite"
    with pytest.raises(UsageError, match=r"not found \(give the --store of the run\)"):
        Store(path, read_only=True)
    assert not path.parent.exists()


def test_read_only_reads_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "a dir?#%20" / "store.sqlite"  # quoted in the sqlite URI
    with Store(path) as store:
        store.add_inventory({"b": _row("1.1", "1.1.2"), "a": _row("1.1", "1.1.1")})
        store.put_uids({"1.1": "2.25.1"})
        store.set_job_identity({"mode": "deidentify"})
        store.put_run("r1", {"mode": "deidentify", "started": 1.0})
        store.put_run("r2", {"mode": "deidentify", "started": 2.0})
    path.with_name(path.name + ".lock").unlink()  # as if no run had locked it
    before = _snapshot(path)
    with Store(path, read_only=True) as ro:
        assert ro.job_identity() == {"mode": "deidentify"}
        assert ro.last_run("deidentify") == {"mode": "deidentify", "started": 2.0}
        assert ro.last_run("reidentify") is None
        assert [k for k, _ in ro.inventory()] == ["a", "b"]
        assert ro.get("files", "a")["sop"] == "1.1.1" and ro.get("files", "x") is None
        assert ro.get_many("uids", ["1.1", "9"]) == {"1.1": "2.25.1"}
        assert ro.has_rows("uids") and not ro.has_rows("journal")
        assert ro.counts()["files"] == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.add_inventory({"c": {}})
    assert _snapshot(path) == before
    assert not path.with_name(path.name + ".lock").exists()


def test_read_only_reads_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Store(path).close()
    writer = sqlite3.connect(path)  # rows left in the WAL, not yet in the file
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO files (key, sop) VALUES ('a', '1')")
    writer.commit()
    before = _snapshot(path)
    with Store(path, read_only=True) as ro:
        assert ro.get("files", "a") == {"sop": "1"}
        assert ro.counts()["files"] == 1  # its temporary aggregates need no write
    assert _snapshot(path) == before  # nor checkpointed into the file by the reader
    writer.close()


def test_read_only_refusals_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Store(path).close()
    os.chmod(path, 0o644)
    before = _snapshot(path)
    with pytest.raises(UsageError, match="chmod 600"):
        Store(path, read_only=True)
    assert _snapshot(path) == before
    os.chmod(path, 0o600)
    with Store(path), pytest.raises(UsageError, match="in use by a running anonpipe"):
        Store(path, read_only=True)
    with Store(path, read_only=True), pytest.raises(UsageError, match="in use by another"):
        Store(path)  # no run changes a store while it is read
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE files (key, value)").connection.close()
    os.chmod(other, 0o600)
    with pytest.raises(UsageError, match="is not an anonpipe store"):
        Store(other, read_only=True)
    other.write_bytes(b"not a database" * 100)
    with pytest.raises(UsageError, match="cannot be read"):
        Store(other, read_only=True)


def _secret_of(path: str) -> str:
    return load_or_create_secret(Path(path)).hex()


def test_runs_starting_together_share_one_whole_secret(tmp_path: Path) -> None:
    """Processes that create the secret at the same moment all read the same full one."""
    import multiprocessing

    for attempt in range(5):
        path = tmp_path / f"try{attempt}" / "secret"
        with multiprocessing.get_context("fork").Pool(6) as pool:
            seen = pool.map(_secret_of, [str(path)] * 24)
        assert len(set(seen)) == 1 and len(seen[0]) == 64
        assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temp left
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unusable_secret_path_is_one_clear_error(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UsageError, match=f"secret file {a_file}/secret: {a_file} is not a directory"):
        load_or_create_secret(a_file / "secret")
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(UsageError, match=f"{folder} is not a regular file: refused"):
        load_or_create_secret(folder)
