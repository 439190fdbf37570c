"""YAML read once: the data of a shipped YAML file (a built-in profile, the pixel rules) kept
as JSON beside it, as Python keeps a module's bytecode.

Why: ``import yaml`` alone costs ~13 ms, and every run reads a profile and its pixel rules
before it can start its workers (a single-file run takes ~0.13 s in all).  The copy,
``__pycache__/NAME.yaml.json`` in the file's folder, holds the SHA-256 of the text it was
made from and is used only while the text is the same: an edited file is parsed again,
never read stale.  It is written when the file is parsed, unless Python writes no bytecode
(``sys.dont_write_bytecode``) or the folder is read-only, and only for data that JSON gives
back equal (no dates, no keys that are not strings).  A file the user names (a site profile)
is always parsed: nothing is written beside the user's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

CACHE_FOLDER = "__pycache__"


class YamlError(ValueError):
    """The file is not valid YAML (the parser's message)."""


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml's parser where PyYAML was built with it (the same
    data, about ten times faster: the default pixel rules parse in 1 ms, not 10), else
    through PyYAML's own; a parse error is a :class:`YamlError`."""
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise YamlError(str(exc)) from None


def load(path: Path, shipped: bool) -> Any:
    """The data of the YAML file ``path`` (OSError when it cannot be read, YamlError when it
    is not YAML); through its copy when ``shipped`` (anonpipe's own file) and the copy is of
    the same text."""
    text = path.read_text()
    if not shipped:
        return safe_yaml(text)
    digest = _digest(text)
    copy = copy_path(path)
    try:
        kept = json.loads(copy.read_bytes())
        if isinstance(kept, dict) and kept.get("sha256") == digest and "data" in kept:
            return kept["data"]
    except (OSError, ValueError):
        pass  # no copy, or a broken one: parsed again below (and copied anew)
    data = safe_yaml(text)
    if not sys.dont_write_bytecode:
        write_copy(copy, digest, data)
    return data


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def copy_path(path: Path) -> Path:
    return path.parent / CACHE_FOLDER / f"{path.name}.json"


def write_copy(copy: Path, digest: str, data: Any) -> bool:
    """Keep ``data`` as ``copy`` (atomically: a reader sees the old copy or the new one),
    when JSON gives it back equal; whether it was written."""
    try:
        encoded = json.dumps({"sha256": digest, "data": data}, sort_keys=True)
    except (TypeError, ValueError):
        return False  # a date, bytes...: not JSON
    if json.loads(encoded)["data"] != data:
        return False  # int keys, tuples...: JSON would give other data back
    temp = copy.with_name(f".{copy.name}.{os.getpid()}")
    try:
        copy.parent.mkdir(exist_ok=True)
        temp.write_text(encoded)
        os.replace(temp, copy)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        return False
    return True


#: the folders of the configuration package whose YAML every run reads (the built-in
#: profiles, the pixel rules): their copies are made ahead, by ``make bytecode`` in a
#: checkout and by ``setup.py`` in the wheel, whose installed folders a run cannot write
SHIPPED = ("profiles", "pixels")


def copy_shipped(configs: Path) -> int:
    """Make the copies of the :data:`SHIPPED` folders under ``configs`` (``configs/`` in a
    checkout, ``anonpipe_configs/`` in a build); how many."""
    return sum(copy_all(configs / folder) for folder in SHIPPED)


def copy_all(folder: Path) -> int:
    """Make the copy of every YAML file under ``folder`` (``make bytecode``); how many."""
    made = 0
    for path in sorted(folder.rglob("*.yaml")):
        text = path.read_text()
        made += write_copy(copy_path(path), _digest(text), safe_yaml(text))
    return made


if __name__ == "__main__":  # pragma: no cover - make bytecode
    for argument in sys.argv[1:]:
        copy_shipped(Path(argument))
