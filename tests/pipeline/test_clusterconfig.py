"""Cluster configurations are dask configuration: the packaged files are the defaults of
``anonpipe.cluster``, and dask's configuration files and ``DASK_`` environment variables
merge over them; job queues fill what they leave out from dask-jobqueue's section.

Real files in a temporary ``DASK_CONFIG`` folder, read by a fresh process (as dask reads
them at import) or by ``dask.config.refresh`` in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
import yaml

from pipeline.clusterconfig import known_clusters, load_cluster_config
from pipeline.jobqueue import import_jobqueue
from tasks.errors import UsageError
from tests.conftest import REPO, run_command

PROBE = ("import json, sys; from pipeline.clusterconfig import load_cluster_config as load\n"
         "c = load(sys.argv[1])\n"
         "print(json.dumps({'kind': c.kind, 'workers': c.workers, 'options': c.options,"
         " 'driver': c.driver, 'config_name': c.config_name, 'source': str(c.source)}))\n")


def _env(folder: Path, **variables: str) -> dict[str, str]:
    return {**os.environ, "DASK_CONFIG": str(folder), "PYTHONPATH": str(REPO), **variables}


def _probe(name: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True,
                          check=True, cwd=REPO, env=env, timeout=60)
    loaded: dict[str, object] = json.loads(done.stdout)
    return loaded


@pytest.fixture
def dask_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder of YAML files this process reads as dask's own (``refresh`` with it among
    the configuration paths; the configuration as it was afterwards)."""
    folder = tmp_path / "dask"
    folder.mkdir()
    yield folder
    dask.config.refresh()


def test_packaged_defaults_without_user_configuration(tmp_path: Path) -> None:
    loaded = _probe("slurm", _env(tmp_path))
    packaged = yaml.safe_load((REPO / "configs" / "cluster" / "slurm.yaml").read_text())
    assert loaded["kind"] == "slurm" and loaded["workers"] == packaged["workers"]
    assert loaded["options"] == packaged["options"] and loaded["driver"] == packaged["driver"]
    assert loaded["config_name"] == "slurm" and loaded["source"] == "anonpipe.cluster.slurm"


def test_user_files_and_environment_merge_over_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "anonpipe:\n  cluster:\n    slurm:\n      workers: 32\n"
        "      options:\n        queue: short\n        job-extra-directives: ['--qos=low']\n")
    env = _env(tmp_path, DASK_ANONPIPE__CLUSTER__SLURM__OPTIONS__ACCOUNT="proj42",
               DASK_ANONPIPE__CLUSTER__SLURM__DRIVER__WALLTIME="48:00:00")
    loaded = _probe("slurm", env)
    options = loaded["options"]
    assert isinstance(options, dict) and isinstance(loaded["driver"], dict)
    assert loaded["workers"] == 32
    assert options["queue"] == "short" and options["account"] == "proj42"
    assert options["job_extra_directives"] == ["--qos=low"]  # one key in either spelling
    assert "job-extra-directives" not in options
    assert options["cores"] == 8 and options["memory"] == "16GiB"  # the packaged ones kept
    assert loaded["driver"] == {"cores": 2, "memory": "4GiB", "walltime": "48:00:00"}
    printed = run_command("anonpipe", "--cluster", "slurm", "--print-job-script",
                          env={"DASK_CONFIG": str(tmp_path),
                               "DASK_ANONPIPE__CLUSTER__SLURM__OPTIONS__ACCOUNT": "proj42"})
    assert printed.returncode == 0, printed.stderr
    assert "#SBATCH -p short" in printed.stdout and "#SBATCH -A proj42" in printed.stdout
    assert "#SBATCH --qos=low" in printed.stdout


def test_a_cluster_of_the_users_own_with_a_jobqueue_section(dask_folder: Path) -> None:
    """A new name in dask's configuration is a cluster; ``config_name`` points its job queue
    at a ``jobqueue`` section of the site's (what its options leave out comes from there)."""
    import_jobqueue()  # dask-jobqueue's own sections, as a site's copy would start
    section = {**dask.config.get("jobqueue.slurm"), "queue": "gpu",
               "job-extra-directives": ["--gres=gpu:1"]}
    (dask_folder / "jobqueue-site.yaml").write_text(yaml.safe_dump(
        {"jobqueue": {"site-gpu": section},
         "anonpipe": {"cluster": {"gpu": {"kind": "slurm", "config-name": "site-gpu",
                                          "workers": 2,
                                          "options": {"cores": 2, "memory": "4GiB"}}}}}))
    dask.config.refresh(paths=[*dask.config.paths, str(dask_folder)])
    assert "gpu" in known_clusters() and "slurm" in known_clusters()
    config = load_cluster_config("gpu")
    assert config.config_name == "site-gpu" and config.workers == 2
    assert config.options == {"cores": 2, "memory": "4GiB"}
    from pipeline.cluster import print_job_script

    script = print_job_script("gpu")
    assert "#SBATCH -p gpu" in script and "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH --cpus-per-task=2" in script


BAD_SETTINGS = [
    ({"anonpipe.cluster.slurm.workers": -1}, "slurm", "anonpipe.cluster.slurm: 'workers' must be"),
    ({"anonpipe.cluster.pbs.options.quue": "x"}, "pbs", r"unknown option 'quue' for pbs"),
    ({"anonpipe.cluster.local.kind": "nope"}, "local", "kind 'nope' is not one of"),
    ({"anonpipe.cluster.slurm.config-name": "nosuch"}, "slurm",
     "config_name 'nosuch': dask's configuration has no jobqueue.nosuch section"),
    ({"anonpipe.cluster.local.config_name": "slurm"}, "local",
     "'config_name' names a jobqueue section, for a job queue only"),
]


@pytest.mark.parametrize(("settings", "name", "message"), BAD_SETTINGS)
def test_a_bad_setting_names_its_key(settings: dict[str, object], name: str,
                                     message: str) -> None:
    load_cluster_config(name)  # the packaged defaults are registered
    with dask.config.set(settings), pytest.raises(UsageError, match=message):
        load_cluster_config(name)


def test_a_bad_environment_variable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_command("anonpipe", "--cluster", "slurm", "-r", "--irreversible",
                       "--secret-file", str(tmp_path / "secret"), "--new-secret",
                       str(tmp_path), str(out),
                       env={"DASK_CONFIG": str(tmp_path / "dask"),
                            "DASK_ANONPIPE__CLUSTER__SLURM__WORKERS": "-3"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "anonpipe: cluster config anonpipe.cluster.slurm: 'workers' must be a whole number >= 0"]
    assert not out.exists() and not (tmp_path / "secret").exists()
