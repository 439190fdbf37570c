"""Cluster configurations: ``--cluster NAME`` (or ``PATH.yaml``) -> :class:`ClusterConfig`.

A configuration says the ``kind`` of cluster, the ``workers`` to ask for, the keyword
``options`` of its dask class (distributed.LocalCluster, or the dask-jobqueue cluster of the
kind) and, for a job queue, what the driver's own job asks for (``driver``).

Named configurations are dask configuration, under ``anonpipe.cluster.NAME``: the files under
``configs/cluster/`` are its packaged defaults (``dask.config.update_defaults``), and what a
user puts in dask's configuration files (``~/.config/dask/*.yaml``, ``$DASK_CONFIG``) or in
``DASK_ANONPIPE__CLUSTER__NAME__...`` environment variables merges over them key by key, as
over dask's own defaults; a new NAME there is a new cluster.  ``--cluster PATH.yaml`` reads
a file of the same form.

What dask already defines is not defined again here: the option names of a job queue are
dask-jobqueue's own (the keys of its ``jobqueue.<config_name>`` section, dashes or
underscores, and its classes' keywords), and whatever the options leave out comes from that
section (``config_name``, default: the kind), as for any dask-jobqueue cluster.  A
configuration that does not fit is one line naming the key, and exit 2, before anything is
written.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.jobqueue import JOBQUEUE_KINDS
from tasks.builtin import config_dir
from tasks.errors import UsageError

CONFIG_DIR = config_dir("cluster")  # the packaged configurations (tasks.builtin)
SECTION = "anonpipe.cluster"  # where dask's configuration holds the named ones
KINDS = ("local", "scheduler", *JOBQUEUE_KINDS)
DRIVER_KEYS = ("cores", "memory", "walltime")
KEYS = ("kind", "description", "workers", "options", "address", "driver", "config_name")


@dataclass(frozen=True)
class ClusterConfig:
    """``configs/cluster/NAME.yaml``: what kind of cluster and its keyword arguments."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None  # workers to request (jobqueue scale(n=...), local n_workers)
    address: str | None = None  # kind "scheduler"
    source: Path | str | None = None  # the file, or the dask configuration key
    driver: dict[str, Any] = field(default_factory=dict)  # the driver's own job (--driver)
    #: the ``jobqueue.<config_name>`` section that fills what ``options`` leave out
    config_name: str | None = None


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
    (lambda d: d.get("config_name") is None or (d.get("kind") in JOBQUEUE_KINDS
                                                and isinstance(d["config_name"], str)),
     "'config_name' names a jobqueue section, for a job queue only"),
    (lambda d: isinstance(d.get("driver") or {}, dict)
     and not set(d.get("driver") or {}) - set(DRIVER_KEYS),
     "'driver' takes " + ", ".join(DRIVER_KEYS[:-1]) + " and " + DRIVER_KEYS[-1]),
)


@functools.cache
def register_defaults() -> None:
    """The packaged configurations become the defaults of ``anonpipe.cluster`` in dask's
    configuration (once per process; they survive ``dask.config.refresh``)."""
    import dask.config
    import yaml

    packaged = {path.stem: yaml.safe_load(path.read_text()) or {}
                for path in sorted(CONFIG_DIR.glob("*.yaml"))}
    dask.config.update_defaults({"anonpipe": {"cluster": packaged}})


def known_clusters() -> list[str]:
    """The names ``--cluster`` takes: packaged or in the user's dask configuration."""
    import dask.config

    register_defaults()
    return sorted(dask.config.get(SECTION, default=None) or {})


def _named(name: str) -> tuple[Any, str]:
    """The configuration of ``name`` in dask's configuration, and the key it is under."""
    import dask.config

    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"invalid cluster name {name!r} (letters, digits, - and _)")
    register_defaults()
    data = dask.config.get(f"{SECTION}.{name}", default=None)
    if data is None:
        raise UsageError(f"unknown cluster {name!r}; known: {', '.join(known_clusters()) or 'none'}"
                         " (or the path of a cluster config: --cluster PATH.yaml)")
    return copy.deepcopy(data), f"{SECTION}.{name}"


def _file(name: str) -> tuple[Any, Path]:
    import yaml

    path = Path(name)
    if not path.is_file():
        raise UsageError(f"cluster config {name} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}, path
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read cluster config {path}: {exc}") from None


def load_cluster_config(name: str) -> ClusterConfig:
    """Read and check a cluster config by name (or by path to a ``.yaml`` file)."""
    data, source = _file(name) if name.endswith((".yaml", ".yml")) else _named(name)
    if not isinstance(data, dict):
        raise UsageError(f"cluster config {source}: expected a mapping")
    data = {str(key).replace("-", "_"): value for key, value in data.items()}
    for holds, message in RULES:
        if not holds(data):
            unknown = ", ".join(sorted(set(data) - set(KEYS)))
            raise UsageError(f"cluster config {source}: "
                             + message.format(kind=data.get("kind"), unknown=unknown))
    kind, options = data["kind"], dict(data.get("options") or {})
    config_name = None
    if kind in JOBQUEUE_KINDS:  # dask's spelling (job-extra-directives) is the keyword's
        options = {str(key).replace("-", "_"): value for key, value in options.items()}
        config_name = data.get("config_name") or kind
        _check_jobqueue_options(source, kind, config_name, options)
    return ClusterConfig(name, kind, options, data.get("workers"), data.get("address"), source,
                         dict(data.get("driver") or {}), config_name)


def jobqueue_option_names(kind: str, config_name: str | None = None) -> frozenset[str]:
    """The options a dask-jobqueue cluster of ``kind`` takes: the names of its
    ``jobqueue.<config_name>`` configuration and the keywords of its cluster and job
    classes."""
    import dask.config

    from pipeline.jobqueue import import_jobqueue

    jobqueue = import_jobqueue()
    cluster = getattr(jobqueue, JOBQUEUE_KINDS[kind])
    names = {key.replace("-", "_")
             for key in dask.config.get(f"jobqueue.{config_name or kind}")}
    for cls in (cluster, cluster.job_cls, jobqueue.core.Job):
        names.update(inspect.signature(cls.__init__).parameters)
    return frozenset(names - {"self", "kwargs", "job_kwargs", "base_class_kwargs"})


def _check_jobqueue_options(source: Path | str, kind: str, config_name: str,
                            options: dict[str, Any]) -> None:
    import dask.config

    from pipeline.jobqueue import import_jobqueue

    import_jobqueue()  # its defaults (the jobqueue sections) come with the package
    if not isinstance(dask.config.get(f"jobqueue.{config_name}", default=None), dict):
        raise UsageError(f"cluster config {source}: config_name {config_name!r}: dask's "
                         f"configuration has no jobqueue.{config_name} section")
    known = jobqueue_option_names(kind, config_name)
    for option in sorted(options):
        if option not in known:
            close = difflib.get_close_matches(option, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"cluster config {source}: unknown option {option!r} for {kind}"
                             f"{hint}: options are dask-jobqueue's "
                             f"{JOBQUEUE_KINDS[kind]} keywords")
