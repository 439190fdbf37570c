"""The compiled element walker (tasks/_walker.c) and edit loops (tasks/_editloops.c);
everything else is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c99", "-Wall"]

setup(ext_modules=[Extension("tasks._walker", ["tasks/_walker.c"], extra_compile_args=FLAGS),
                   Extension("tasks._editloops", ["tasks/_editloops.c"],
                             extra_compile_args=FLAGS)])
