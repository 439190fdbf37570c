"""The shipped YAML files are read through their JSON copies (tasks.yamlcache): the same
data, never a stale copy, nothing written beside the user's files, and no PyYAML import
at the start of a run."""

from __future__ import annotations

import datetime
import json
import shutil
import sys
from pathlib import Path

import pytest

from tasks import yamlcache
from tasks.pixels.rules import RULES_DIR, load_rules
from tasks.profile import PROFILE_DIR, load_profile
from tasks.yamlcache import YamlError, copy_path, load, safe_yaml
from tests.conftest import REPO, modules_loaded_by

SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.fixture(autouse=True)
def _writes_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a Python that writes bytecode (the tests may run with PYTHONDONTWRITEBYTECODE)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of a shipped profile, in a folder of its own."""
    path = tmp_path / "profiles" / "basic.yaml"
    path.parent.mkdir()
    shutil.copy(REPO / "configs" / "profiles" / "basic.yaml", path)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_file_reads_the_same_through_its_copy(path: Path, tmp_path: Path
                                                            ) -> None:
    own = tmp_path / path.name
    shutil.copy(path, own)
    parsed = safe_yaml(path.read_text())
    assert load(own, shipped=True) == parsed  # parsed, and copied
    assert copy_path(own).is_file()
    assert load(own, shipped=True) == parsed  # through the copy


def test_an_edited_file_is_parsed_again_never_read_stale(shipped: Path) -> None:
    first = load(shipped, shipped=True)
    copy = copy_path(shipped)
    assert json.loads(copy.read_text())["data"] == first
    shipped.write_text(shipped.read_text().replace("name: basic", "name: edited", 1))
    assert load(shipped, shipped=True)["name"] == "edited"
    assert json.loads(copy.read_text())["data"]["name"] == "edited"  # copied anew
    for broken in ("{", "[]", '{"sha256": "0", "data": {}}', '{"data": {}}'):
        copy.write_text(broken)
        assert load(shipped, shipped=True)["name"] == "edited", broken


def test_nothing_is_written_beside_a_user_s_file(shipped: Path) -> None:
    assert load(shipped, shipped=False)["name"] == "basic"
    assert not copy_path(shipped).parent.exists()


def test_no_copy_without_bytecode_or_where_json_differs(shipped: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(sys, "dont_write_bytecode", True)
        assert load(shipped, shipped=True)["name"] == "basic"
        assert not copy_path(shipped).exists()
    odd = tmp_path / "odd.yaml"
    odd.write_text("1: one\nwhen: 2026-12-06\n")
    for _ in range(2):
        assert load(odd, shipped=True) == {1: "one", "when": datetime.date(2026, 12, 6)}
    assert not copy_path(odd).exists()
    blocked = tmp_path / "blocked" / "x.yaml"
    blocked.parent.mkdir()
    blocked.write_text("a: 1\n")
    (blocked.parent / yamlcache.CACHE_FOLDER).write_text("a file where the folder would be")
    assert load(blocked, shipped=True) == {"a": 1}


def test_bad_yaml_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  bad: [indent\n")
    for shipped in (True, False):
        with pytest.raises(YamlError):
            load(bad, shipped=shipped)
    assert not copy_path(bad).exists()


def test_a_run_s_profile_and_pixel_rules_do_not_import_pyyaml() -> None:
    """With the copies made (``make bytecode``), what every run reads at its start."""
    assert yamlcache.copy_all(PROFILE_DIR) + yamlcache.copy_all(RULES_DIR) >= 3
    loaded = modules_loaded_by(
        "from tasks.profile import get_profile\n"
        "from tasks.pixels.rules import RULES_DIR, load_rules\n"
        "get_profile('basic'); load_rules(str((RULES_DIR / 'default.yaml').resolve()))")
    assert "tasks.yamlcache" in loaded and "yaml" not in loaded
    assert load_profile("basic").name == "basic"
    assert load_rules(str((RULES_DIR / "default.yaml").resolve()))
