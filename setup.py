"""The compiled element walker (tasks/_walker.c); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tasks._walker", ["tasks/_walker.c"],
                             extra_compile_args=["-O2", "-std=c99", "-Wall"])])
