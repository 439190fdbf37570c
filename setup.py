"""The compiled element walker (tasks/_walker.c) and edit loops (tasks/_editloops.c);
everything else is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c99", "-Wall"]

HEADERS = ["tasks/_slots.h"]

setup(ext_modules=[Extension("tasks._walker", ["tasks/_walker.c"], depends=HEADERS,
                             extra_compile_args=FLAGS),
                   Extension("tasks._editloops", ["tasks/_editloops.c"], depends=HEADERS,
                             extra_compile_args=FLAGS)])
