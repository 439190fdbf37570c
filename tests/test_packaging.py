"""A wheel carries everything the tool reads at run time: the built-in profiles and cluster
definitions (top-level ``configs/`` as the data package ``anonpipe_configs``) and the IOD
tables, and an unpacked wheel finds them without the checkout beside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def _source_copy(target: Path) -> Path:
    """The project's files (tracked, or new and not ignored) copied to ``target``: the
    build then neither writes into the checkout nor walks its ``build/`` archives."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)
    return target


def test_the_wheel_ships_and_finds_the_built_in_configs(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                           check=True, capture_output=True, text=True, cwd=tmp_path)
    assert "Warning" not in built.stderr, built.stderr  # make install and make demo stay quiet
    (wheel,) = (tmp_path / "dist").glob("anonpipe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    expected = {f"anonpipe_configs/profiles/{n}.yaml" for n in ("basic", "gdcmanon", "strict",
                                                                 "site-example")}
    expected |= {f"anonpipe_configs/cluster/{n}.yaml" for n in ("local", "scheduler", "slurm",
                                                                "pbs")}
    expected |= {"tasks/data/iod_types.json", "tasks/_profile_table.py", "tasks/py.typed"}
    # the parsed copies (tasks.yamlcache): an installed anonpipe never parses its own YAML
    expected |= {f"anonpipe_configs/profiles/__pycache__/{n}.yaml.json"
                 for n in ("basic", "gdcmanon", "strict", "site-example")}
    expected |= {"anonpipe_configs/pixels/__pycache__/default.yaml.json"}
    assert expected <= names
    for compiled in ("_walker", "_editloops", "_inventory"):
        assert any(n.startswith(f"tasks/{compiled}.") and n.endswith(".so") for n in names)
    probe = (
        "import tasks, tasks.builtin as b, tasks.profile as p, pipeline.clusterconfig as c\n"
        "print(tasks.__file__); print(b.config_dir('profiles'))\n"
        "print(p.get_profile('gdcmanon').spec.name, p.get_profile('basic').spec.name)\n"
        "print(c.load_cluster_config('local').kind)\n"
        "import tasks.dicomio as d; print(d._WALKER.__file__.startswith(tasks.__path__[0]))\n"
        "import tasks.edit as e; print(e.LOOPS.__file__.startswith(tasks.__path__[0]))\n"
    )
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=tmp_path, env={"PYTHONPATH": str(site),
                                                         "PATH": "/usr/bin:/bin"})
    lines = done.stdout.splitlines()
    assert lines[0].startswith(str(site)), "the unpacked wheel, not the checkout, was imported"
    assert lines[1] == str(site / "anonpipe_configs" / "profiles")
    # the wheel's compiled walker and loops
    assert lines[2:] == ["gdcmanon basic", "local", "True", "True"]
    parsed = ("import sys, tasks.profile as p, tasks.pixels.rules as r\n"
              "p.get_profile('basic'); p.get_profile('gdcmanon')\n"
              "r.load_rules(str(r.resolve_rule_file(r.DEFAULT_RULES)))\n"
              "print('yaml' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", parsed], capture_output=True, text=True,
                          check=True, cwd=tmp_path, env={"PYTHONPATH": str(site),
                                                         "PATH": "/usr/bin:/bin",
                                                         "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.stdout == "False\n"  # read from the wheel's copies: PyYAML not even imported


def test_the_venv_is_made_with_a_python_that_can_build_the_project() -> None:
    """``make install``'s interpreter (scripts/venv-python): the distribution's python3 when
    it is 3.11+ with venv and headers, else python3 from the PATH; either makes a venv."""
    chosen = subprocess.run(["sh", str(REPO / "scripts" / "venv-python")], check=True,
                            capture_output=True, text=True).stdout.strip()
    probe = ("import os, sys, sysconfig, ensurepip\n"
             "print(sys.version_info >= (3, 11) and os.path.exists(os.path.join("
             "sysconfig.get_paths()['include'], 'Python.h')))")
    system = Path("/usr/bin/python3")
    usable = system.exists() and subprocess.run(
        [str(system), "-c", probe], check=False, capture_output=True,
        text=True).stdout.strip() == "True"
    assert chosen == (str(system) if usable else "python3")
    new_enough = subprocess.run(
        [chosen, "-c", "import sys, venv; print(sys.version_info >= (3, 11))"],
        check=True, capture_output=True, text=True).stdout.strip()
    assert new_enough == "True"
