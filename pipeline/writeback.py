"""Outputs on disk: when a run's outputs are known to be durable, and what a restart undoes.

A file written by a worker on this machine sits in this machine's page cache until the
kernel writes it out.  A killed process does not lose it; only a restart of the machine
(power loss, kernel crash) can.  So a run whose workers share the driver's machine (the
process pool, a local dask cluster, inline) journals each file as soon as it is written,
which keeps the resume after a kill exact, and never waits for the disk per batch (that
wait was most of the wall time of an archive of large files on a disk).  Instead:

* each journal row of a written file carries an *epoch*; a thread of the driver calls
  ``syncfs(2)`` on the output's file system every :data:`INTERVAL` seconds, and when the
  call returns, every epoch handed out before it began is *confirmed* on disk.  The store
  keeps the confirmed epoch, the next one and this boot's id
  (``/proc/sys/kernel/random/boot_id``);
* a later run on the same boot confirms what is left with one ``syncfs``; a run after a
  restart drops the journal rows of the unconfirmed epochs, and writes those files again;
* ``--sync`` makes the run wait at its end until every output is on disk (as a
  ``sync`` after ``cp -r`` would).

Workers on other machines (an existing scheduler, job-queue workers) make each batch durable
before returning it (:func:`tasks.batch.run_batch`): this machine's boot says nothing of
theirs, so their rows carry no epoch.  Where the boot cannot be identified (no
``/proc``), every batch is made durable the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tasks.errors import OutputError
from tasks.fileio import sync_file_system

#: seconds between two background ``syncfs`` calls: the kernel writes dirty pages back
#: after 30 s (``vm.dirty_expire_centisecs``), so a restart loses at most this much work
INTERVAL = 10.0
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    """This boot of the machine (Linux), or None where it cannot be told."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


class Recovery(NamedTuple):
    """What :func:`recover` did with the epochs an earlier run left unconfirmed."""

    confirmed: bool = False  # same boot: one syncfs confirmed them
    forgotten: int = 0  # after a restart: journal rows dropped (those files are redone)


def recover(store: Any, output: Path) -> Recovery:
    """Settle the epochs an earlier run left unconfirmed (module docstring)."""
    state = store.writeback()
    if state is None or int(state["next"]) - 1 <= int(state["confirmed"]):
        return Recovery()
    if state.get("boot") is not None and state.get("boot") == boot_id():
        try:
            sync_file_system(output)
        except OutputError:
            pass  # confirmed by this run's own syncs instead; the rows stay unconfirmed
        else:
            store.set_writeback({**state, "confirmed": int(state["next"]) - 1})
            return Recovery(confirmed=True)
        return Recovery()
    forgotten = store.forget_unconfirmed(int(state["confirmed"]))
    store.set_writeback({**state, "confirmed": int(state["next"]) - 1})
    return Recovery(forgotten=forgotten)


class Writeback:
    """The driver's side of a local run: epochs for journal rows, confirmed by ``syncfs``
    in a background thread (module docstring).  Thread-safe; the store is written by the
    driver thread only (:meth:`changed`)."""

    def __init__(self, output: Path, first_epoch: int, confirmed: int | None = None,
                 interval: float = INTERVAL,
                 sync: Callable[[Path], None] = sync_file_system) -> None:
        self.output = output
        self.interval = interval
        self._sync = sync
        self._lock = threading.Lock()
        self._epoch = first_epoch
        #: epochs up to this one are on disk (an earlier run's may still be pending)
        self._confirmed = first_epoch - 1 if confirmed is None else confirmed
        self._recorded: tuple[int, int] | None = None
        self._used = first_epoch - 1  # the last epoch rows were journaled with
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None  # the last syncfs failure (the rows stay unconfirmed)

    def mark(self, boot: str | None) -> tuple[int, dict[str, Any] | None]:
        """The epoch for rows journaled now, and the state to record in the store first
        when it moved since the last call (None: unchanged).  One snapshot, so the rows
        never carry an epoch the recorded state does not cover."""
        with self._lock:
            epoch, confirmed = self._epoch, self._confirmed
        self._used = max(self._used, epoch)
        if (epoch, confirmed) == self._recorded:
            return epoch, None
        self._recorded = (epoch, confirmed)
        return epoch, {"boot": boot, "confirmed": confirmed, "next": self._used + 1}

    def final_state(self, boot: str | None) -> dict[str, Any]:
        """The state to record at the end of the run (the thread stopped)."""
        with self._lock:
            return {"boot": boot, "confirmed": self._confirmed, "next": self._used + 1}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="anonpipe-writeback")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.confirm()

    def confirm(self) -> bool:
        """One ``syncfs``: every epoch handed out before it is confirmed."""
        with self._lock:
            cut = self._epoch
            self._epoch += 1
        try:
            if self.output.is_dir():  # else nothing was written
                self._sync(self.output)
        except OutputError as exc:
            self.error = str(exc)
            return False
        with self._lock:
            self._confirmed = max(self._confirmed, cut)
        return True

    def stop(self, wait: bool) -> bool:
        """Stop the thread; with ``wait``, return once every output is on disk."""
        self._stop.set()
        if not wait:
            return False
        if self._thread is not None:
            self._thread.join()
        return self.confirm()


def share_this_machine(scheduler: str | None, cluster_kind: str | None) -> bool:
    """Whether the run's workers write through this machine's page cache: no scheduler
    named and no job queue (a local cluster, the process pool, inline)."""
    return scheduler is None and cluster_kind in (None, "local") and boot_id() is not None

