"""Outputs of local runs are confirmed on disk in the background; a restart of the machine
makes the next run write the unconfirmed ones again (pipeline.writeback)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from pipeline.store import Store
from pipeline.writeback import Writeback, boot_id
from tasks.errors import OutputError
from tests.conftest import run_main
from tests.pipeline.conftest import FILES


def _run(archive: Path, out: Path, store: Path, *extra: str) -> dict:
    proc = run_main("-e", "--irreversible", "-r", "--workers", "2", "--local-pool",
                    "processes", "--store", str(store), *extra, str(archive), str(out))
    assert proc.returncode == 0, proc.stderr
    report = proc.stderr.strip().splitlines()[-1].removeprefix("report: ")
    return {"report": json.loads(Path(report).read_text()), "stderr": proc.stderr}


def _epochs(store: Path) -> list[int | None]:
    with sqlite3.connect(store) as conn:
        return [e for (e,) in conn.execute("SELECT epoch FROM journal WHERE status = 'done'")]


def _state(store: Path) -> dict:
    with Store(store, read_only=True) as opened:
        state = opened.writeback()
    assert state is not None
    return state


def test_a_local_run_journals_epochs_and_the_next_run_on_this_boot_confirms_them(
        archive: Path, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    first = _run(archive, out, store)
    assert first["report"]["counts"]["written"] == FILES
    assert first["report"]["outputs_confirmed_on_disk"] is False  # the run did not wait
    epochs = _epochs(store)
    assert len(epochs) == FILES and None not in epochs  # each row names its epoch
    state = _state(store)
    assert state["boot"] == boot_id() and state["next"] == max(epochs) + 1  # type: ignore

    second = _run(archive, out, store)
    counts = second["report"]["counts"]
    assert (counts["written"], counts["already_done"]) == (0, FILES)
    state = _state(store)
    assert state["confirmed"] >= state["next"] - 1  # one syncfs confirmed them all
    assert "restarted" not in second["stderr"]


def test_after_a_restart_the_unconfirmed_outputs_are_written_again(
        archive: Path, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    _run(archive, out, store)
    state = _state(store)
    assert state["confirmed"] < state["next"] - 1
    # the machine restarted (another boot id), its page cache lost: what the store cannot
    # tell from a real restart is the boot it recorded
    with Store(store) as opened:
        opened.set_writeback({**state, "boot": "another-boot"})
    rerun = _run(archive, out, store)
    assert f"{FILES:,} outputs written before this machine restarted" in rerun["stderr"]
    counts = rerun["report"]["counts"]
    assert (counts["written"], counts["already_done"]) == (FILES, 0)
    assert not any(p.name.startswith(".") for p in out.rglob("*"))


def test_sync_waits_for_the_disk(archive: Path, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    done = _run(archive, out, store, "--sync")
    assert done["report"]["outputs_confirmed_on_disk"] is True
    state = _state(store)
    assert state["confirmed"] >= max(e for e in _epochs(store) if e is not None)
    # a restart now loses nothing: the next run rewrites no file
    with Store(store) as opened:
        opened.set_writeback({**state, "boot": "another-boot"})
    again = _run(archive, out, store)
    assert again["report"]["counts"]["already_done"] == FILES
    assert "restarted" not in again["stderr"]


def test_an_epoch_is_confirmed_only_by_a_sync_begun_after_it(tmp_path: Path) -> None:
    synced: list[Path] = []
    writeback = Writeback(tmp_path, first_epoch=5, sync=synced.append, interval=3600)
    epoch, state = writeback.mark("boot")
    assert epoch == 5 and state == {"boot": "boot", "confirmed": 4, "next": 6}
    assert writeback.mark("boot") == (5, None)  # unchanged: nothing to record
    assert writeback.confirm() and synced == [tmp_path]
    epoch, state = writeback.mark("boot")
    assert epoch == 6 and state == {"boot": "boot", "confirmed": 5, "next": 7}
    assert writeback.stop(wait=True)
    assert writeback.final_state("boot") == {"boot": "boot", "confirmed": 6, "next": 7}


def test_a_failed_sync_leaves_the_epoch_unconfirmed(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        raise OutputError("cannot make outputs durable: Input/output error")

    writeback = Writeback(tmp_path, first_epoch=1, sync=broken, interval=3600)
    writeback.mark("boot")
    assert not writeback.confirm()
    assert writeback.error is not None and "Input/output error" in writeback.error
    assert writeback.final_state("boot") == {"boot": "boot", "confirmed": 0, "next": 2}
