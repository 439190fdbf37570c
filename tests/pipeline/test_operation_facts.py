"""What the driver needs of an operation it reads from the operation itself, typed.

``tasks.model.FileOperation`` names it: the secret, its fingerprint, the profile, the root
UID, the pixel policy and the encryptor.  The pipeline asks for them by name and never
reaches into an operation's settings with ``getattr``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.plan import burned_in_check
from pipeline.scan import worker_modules
from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import Deidentify, DeidentifySettings
from tasks.dumb import IRREVERSIBLE_OPS, DumbEdit, DumbSettings
from tasks.reidentify import Reidentify, ReidentifySettings
from tests.conftest import REPO, SECRET
from tests.pipeline.conftest import deid_job


def test_deidentify_says_its_pixel_policy_and_encryptor(encryptor: EnvelopeEncryptor) -> None:
    reversible = Deidentify(DeidentifySettings(secret=SECRET, encryptor=encryptor,
                                               pixels="refuse"))
    assert reversible.encryptor is encryptor and reversible.pixel_policy == "refuse"
    allowed = Deidentify(DeidentifySettings(secret=SECRET, pixels="refuse", allow_burned_in=True))
    assert allowed.encryptor is None and allowed.pixel_policy == "keep"


def test_reidentify_and_dumb_neither_encrypt_nor_look_at_pixels(
        reid: ReidentifySettings) -> None:
    for operation in (Reidentify(reid), DumbEdit(DumbSettings(IRREVERSIBLE_OPS))):
        assert operation.encryptor is None and operation.pixel_policy == "keep"


def test_the_driver_reads_the_facts(tmp_path: Path, encryptor: EnvelopeEncryptor) -> None:
    refusing = Deidentify(DeidentifySettings(secret=SECRET, encryptor=encryptor,
                                             pixels="refuse"))
    job = deid_job(tmp_path, tmp_path / "out", operation=refusing)
    assert "tasks.crypto" in worker_modules(job)
    assert burned_in_check(job) is not None
    plain = deid_job(tmp_path, tmp_path / "out")  # irreversible, pixels cleaned
    assert "tasks.crypto" not in worker_modules(plain)
    assert burned_in_check(plain) is None


def test_no_pipeline_module_fishes_in_an_operation() -> None:
    fishing = []
    for path in sorted((REPO / "pipeline").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "getattr" and node.args
                    and "operation" in ast.unparse(node.args[0])):
                fishing.append(f"{path.name}:{node.lineno}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "getattr" and len(node.args) > 1
                    and ast.unparse(node.args[1]) in ("'settings'", "'encryptor'",
                                                      "'pixel_policy'", "'secret'")):
                fishing.append(f"{path.name}:{node.lineno}")
    assert fishing == []
