# Two commands on a fresh Debian machine:
#   make demo   - virtualenv, install sluice, run a real campaign on the embedded SQLite default
#   make test   - install everything the tests need (Slurm, MPI, drivers), start services, run the suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml setup.py src/sluice/launcher/_spawnc.c src/sluice/launcher/spawnc_core.c \
                    src/sluice/launcher/spawnc.h
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	SLUICE=$(VENV)/bin/sluice bash examples/demo.sh demo-workspace

test: $(VENV)/.installed
	bash scripts/test-services.sh
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 2 -m "not serial" $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	@cat bench/README.md

clean:
	rm -rf $(VENV) demo-workspace build *.egg-info src/sluice/launcher/*.so
