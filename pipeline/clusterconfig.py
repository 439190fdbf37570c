"""Cluster configurations: ``--cluster NAME`` (or ``PATH.yaml``) -> :class:`ClusterConfig`.

A configuration is a small YAML file: the ``kind`` of cluster, the ``workers`` to ask for,
the keyword ``options`` of its dask class (distributed.LocalCluster, or the dask-jobqueue
cluster of the kind) and, for a job queue, what the driver's own job asks for (``driver``).
The files under ``configs/cluster/`` are the packaged defaults; a file of the same name in
``$ANONPIPE_CONFIG_DIR/cluster`` or ``~/.config/anonpipe/cluster`` replaces one.

What dask already defines is not defined again here: the option names of a job queue are
dask-jobqueue's own (its ``jobqueue.<kind>`` configuration in ``dask.config``, dashes or
underscores, and its classes' keywords), and whatever a file leaves out comes from dask's configuration, as for
any dask-jobqueue cluster.  A file that does not fit is one line and exit 2, before
anything is written.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.jobqueue import JOBQUEUE_KINDS
from tasks.builtin import config_dir
from tasks.errors import UsageError

CONFIG_DIR = config_dir("cluster")  # the packaged configurations (tasks.builtin)
KINDS = ("local", "scheduler", *JOBQUEUE_KINDS)
DRIVER_KEYS = ("cores", "memory", "walltime")
KEYS = ("kind", "description", "workers", "options", "address", "driver")


@dataclass(frozen=True)
class ClusterConfig:
    """``configs/cluster/NAME.yaml``: what kind of cluster and its keyword arguments."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None  # workers to request (jobqueue scale(n=...), local n_workers)
    address: str | None = None  # kind "scheduler"
    source: Path | None = None
    driver: dict[str, Any] = field(default_factory=dict)  # the driver's own job (--driver)


def _whole(value: object) -> bool:
    return value is None or (isinstance(value, int) and value >= 0)


#: what a configuration must satisfy, in the order checked, with the line a failure gets
#: (formatted with the file's mapping)
RULES: tuple[tuple[Callable[[dict[str, Any]], bool], str], ...] = (
    (lambda d: d.get("kind") in KINDS, "kind {kind!r} is not one of " + ", ".join(KINDS)),
    (lambda d: isinstance(d.get("options") or {}, dict), "'options' must be a mapping"),
    (lambda d: _whole(d.get("workers")), "'workers' must be a whole number >= 0"),
    (lambda d: d.get("kind") != "scheduler" or bool(d.get("address")),
     "kind scheduler needs an 'address'"),
    (lambda d: not set(d) - set(KEYS), "unknown keys {unknown}"),
    (lambda d: isinstance(d.get("driver") or {}, dict)
     and not set(d.get("driver") or {}) - set(DRIVER_KEYS),
     "'driver' takes " + ", ".join(DRIVER_KEYS[:-1]) + " and " + DRIVER_KEYS[-1]),
)


def config_dirs() -> list[Path]:
    """Search order: ``$ANONPIPE_CONFIG_DIR/cluster``, the user's config, the project's."""
    dirs = []
    if os.environ.get("ANONPIPE_CONFIG_DIR"):
        dirs.append(Path(os.environ["ANONPIPE_CONFIG_DIR"]) / "cluster")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs.append(Path(base) / "anonpipe" / "cluster")
    dirs.append(CONFIG_DIR)
    return dirs


def _find(name: str) -> Path:
    if name.endswith((".yaml", ".yml")):
        if not Path(name).is_file():
            raise UsageError(f"cluster config {name} does not exist")
        return Path(name)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"invalid cluster name {name!r} (letters, digits, - and _)")
    for folder in config_dirs():
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise UsageError(f"unknown cluster {name!r}; known: {', '.join(known) or 'none'} "
                     "(or the path of a cluster config: --cluster PATH.yaml)")


def load_cluster_config(name: str) -> ClusterConfig:
    """Read and check a cluster config by name (or by path to a ``.yaml`` file)."""
    import yaml

    path = _find(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read cluster config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"cluster config {path}: expected a mapping")
    for holds, message in RULES:
        if not holds(data):
            unknown = ", ".join(sorted(set(data) - set(KEYS)))
            raise UsageError(f"cluster config {path}: "
                             + message.format(kind=data.get("kind"), unknown=unknown))
    kind, options = data["kind"], dict(data.get("options") or {})
    if kind in JOBQUEUE_KINDS:  # dask's spelling (job-extra-directives) is the keyword's
        options = {str(key).replace("-", "_"): value for key, value in options.items()}
        _check_jobqueue_options(path, kind, options)
    return ClusterConfig(name, kind, options, data.get("workers"), data.get("address"), path,
                         dict(data.get("driver") or {}))


def jobqueue_option_names(kind: str) -> frozenset[str]:
    """The options a dask-jobqueue cluster of ``kind`` takes: the names of its
    ``jobqueue.<kind>`` configuration and the keywords of its cluster and job classes."""
    import dask

    from pipeline.jobqueue import import_jobqueue

    jobqueue = import_jobqueue()
    cluster = getattr(jobqueue, JOBQUEUE_KINDS[kind])
    names = {key.replace("-", "_") for key in dask.config.get(f"jobqueue.{kind}")}
    for cls in (cluster, cluster.job_cls, jobqueue.core.Job):
        names.update(inspect.signature(cls.__init__).parameters)
    return frozenset(names - {"self", "kwargs", "job_kwargs", "base_class_kwargs"})


def _check_jobqueue_options(path: Path, kind: str, options: dict[str, Any]) -> None:
    known = jobqueue_option_names(kind)
    for option in sorted(options):
        if option not in known:
            close = difflib.get_close_matches(option, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"cluster config {path}: unknown option {option!r} for {kind}"
                             f"{hint}: options are dask-jobqueue's "
                             f"{JOBQUEUE_KINDS[kind]} keywords")
