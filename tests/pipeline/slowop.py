"""A de-identification that takes a while per file, to interrupt runs part-way in tests.

Importable by out-of-process dask workers (tests put the repository on PYTHONPATH).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify
from tasks.engine import Staged, write_staged
from tasks.model import Written
from tasks.profile import CompiledProfile


class _Wrapping:
    """What the driver reads of an operation (tasks.model.FileOperation): the inner one's."""

    __slots__ = ()
    inner: Deidentify

    @property
    def secret(self) -> bytes:
        return self.inner.secret

    @property
    def secret_fingerprint(self) -> str:
        return self.inner.secret_fingerprint

    @property
    def profile(self) -> CompiledProfile:
        return self.inner.profile

    @property
    def root_uid(self) -> str:
        return self.inner.root_uid

    @property
    def pixel_policy(self) -> str:
        return self.inner.pixel_policy

    @property
    def encryptor(self) -> EnvelopeEncryptor | None:
        return self.inner.encryptor


@dataclass(frozen=True, slots=True)
class SlowDeidentify(_Wrapping):
    inner: Deidentify
    delay: float = 0.05

    def __call__(self, src: Path | str, dst: Path | str) -> int | Written:
        return write_staged(self.prepare(src), dst)

    def prepare(self, src: Path | str) -> Staged:
        time.sleep(self.delay)
        return self.inner.prepare(src)


@dataclass(frozen=True, slots=True)
class PoisonDeidentify(_Wrapping):
    """Kills its own process on one file (as a segfault in a codec would)."""

    inner: Deidentify
    poison: str

    def __call__(self, src: Path | str, dst: Path | str) -> int | Written:
        return write_staged(self.prepare(src), dst)

    def prepare(self, src: Path | str) -> Staged:
        if os.fspath(src).endswith(self.poison):  # a batch passes str paths
            os._exit(13)
        return self.inner.prepare(src)
