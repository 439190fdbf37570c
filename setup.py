"""The compiled element walker (tasks/_walker.c), edit loops (tasks/_editloops.c) and pass 1's
header loop (tasks/_inventory.c), and the parsed copies of the shipped YAML in the wheel;
everything else is in pyproject.toml."""

import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

FLAGS = ["-O2", "-std=c99", "-Wall"]

HEADERS = ["tasks/_slots.h"]


class BuildWithParsedYaml(build_py):
    """Also writes the JSON copy of each shipped profile and pixel-rule file into the wheel
    (``tasks.yamlcache``), as ``make bytecode`` does in a checkout.  An installed anonpipe's
    folders are read-only to its users, and where ``PYTHONDONTWRITEBYTECODE`` is set no copy
    is written either: without the wheel's, every run imports PyYAML and parses the files
    again (~12 ms of a single file's run)."""

    def run(self) -> None:
        super().run()
        spec = importlib.util.spec_from_file_location(
            "anonpipe_build_yamlcache", Path(__file__).parent / "tasks" / "yamlcache.py")
        assert spec is not None and spec.loader is not None
        yamlcache = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(yamlcache)
        yamlcache.copy_shipped(Path(self.build_lib, "anonpipe_configs"))


setup(cmdclass={"build_py": BuildWithParsedYaml},
      ext_modules=[Extension("tasks._walker", ["tasks/_walker.c"], depends=HEADERS,
                             extra_compile_args=FLAGS),
                   Extension("tasks._editloops", ["tasks/_editloops.c"], depends=HEADERS,
                             extra_compile_args=FLAGS),
                   Extension("tasks._inventory", ["tasks/_inventory.c"], depends=HEADERS,
                             extra_compile_args=FLAGS)])
