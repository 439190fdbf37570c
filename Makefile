# The README's two commands: `make demo` and `make test`.  CI calls `make test` (.ci/run).
# the distribution's CPython when it can make the venv (faster: scripts/venv-python says why)
PYTHON ?= $(shell sh scripts/venv-python)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= build/demo

.PHONY: install bytecode lint demo test system-deps bench bench-journaled bench-scale fuzz tables notebooks clean

install: $(STAMP)

# pip builds the compiled element walker, edit loops and pass 1's header loop (tasks/_walker.c,
# tasks/_editloops.c, tasks/_inventory.c) into tasks/ with the system's C compiler and
# Python's headers.
$(STAMP): pyproject.toml setup.py tasks/_walker.c tasks/_editloops.c tasks/_inventory.c \
		tasks/_slots.h
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# -qq: errors only (a machine's pip configuration may name extra indexes that lack
	@# some packages: a warning per such package and index otherwise)
	$(BIN)/python -m pip install -qq --upgrade pip
	@# PYTHONWARNINGS reaches the build backend: setuptools warns that an editable install
	@# of a mapped package (configs/ as anonpipe_configs) may import a same-named folder
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -qq -e '.[test]'
	$(MAKE) -s bytecode
	touch $(STAMP)

# The editable install's bytecode, written once: where PYTHONDONTWRITEBYTECODE is set,
# every process (the driver and each worker) would otherwise compile ~80 modules at start
# (~0.12 s of CPU each).  Stale files are ignored by Python (it compares the source).  The
# shipped profiles and pixel rules get their JSON copies likewise (tasks.yamlcache: no
# PyYAML import at start; a copy whose YAML changed is ignored).
bytecode:
	$(BIN)/python -m compileall -q pipeline tasks configs
	$(BIN)/python -m tasks.yamlcache configs

# Debian tools the build and the tests need (gcc for the compiled walker and loops;
# gdcmanon, dcmtk, dciodvfy, openssl, a single-node SLURM with munge, tesseract): apt-get
# when root, its output kept in build/apt.log and shown only when it fails.
system-deps:
	@missing=""; \
	command -v gcc      >/dev/null || missing="$$missing gcc"; \
	command -v gdcmanon >/dev/null || missing="$$missing libgdcm-tools"; \
	command -v dcmdump  >/dev/null || missing="$$missing dcmtk"; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	command -v openssl  >/dev/null || missing="$$missing openssl"; \
	command -v slurmctld >/dev/null || missing="$$missing slurmctld slurmd slurm-client"; \
	command -v munged   >/dev/null || missing="$$missing munge"; \
	command -v tesseract >/dev/null || missing="$$missing tesseract-ocr tesseract-ocr-eng"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    mkdir -p build; echo "installing Debian packages:$$missing (log: build/apt.log)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    } >build/apt.log 2>&1 || { cat build/apt.log; exit 1; }; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; fi; \
	fi

demo: install
	bash scripts/demo.sh $(DEMO)

# notebooks/run_report.executed.ipynb: the run-report notebook with its outputs, for reading
notebooks: install
	$(BIN)/python scripts/execute_notebook.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install system-deps lint
	$(BIN)/python -m pytest

bench: install system-deps bytecode
	$(BIN)/python benchmarks/run.py

# make bench with the outputs on a journaled ext4 (an image on a loop device; root only):
# on an ext4 without a journal, as this VM's disk, creating files soon after deleting
# others costs up to ~0.3 ms each unless the page cache is dropped (benchmarks/README.md)
bench-journaled: install system-deps bytecode
	$(BIN)/python benchmarks/journaled.py $(BIN)/python benchmarks/run.py

# a million tiny files (SCALE_FILES=N for another size): gdcmanon, anonpipe, a no-op rerun,
# the audit; driver memory and store size per file
bench-scale: install system-deps bytecode
	$(BIN)/python benchmarks/scale.py

fuzz: install
	ANONPIPE_FUZZ_SECONDS=$${ANONPIPE_FUZZ_SECONDS:-600} $(BIN)/python -m pytest tests/fuzz -q

# Regenerate tasks/_profile_table.py and tasks/data/iod_types.json from the PS3.15 tables in
# scripts/standard (STANDARD=...) and highdicom's copy of PS3.3 (the wheel, not installed),
# and tasks/_datadict_table.py from the installed pydicom's copy of PS3.6.
HIGHDICOM ?= 0.28.2
STANDARD  ?= scripts/standard
tables: install
	mkdir -p build/tables
	$(BIN)/python -m pip download -q --no-deps -d build/tables highdicom==$(HIGHDICOM)
	$(BIN)/python scripts/gen_profile_table.py --standard $(STANDARD) \
	  --highdicom-wheel build/tables/highdicom-$(HIGHDICOM)-py3-none-any.whl
	$(BIN)/python scripts/gen_datadict_table.py

clean:
	rm -rf build .pytest_cache
