# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')

.PHONY: run test protos lint lint-protos bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/invsaga up

test: $(STAMP)
	$(PY) -m pytest -n 3 --dist loadfile

protos: $(STAMP)
	$(PY) -m invsaga.runtime.protogen

lint: $(STAMP) lint-protos
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

lint-protos: $(STAMP)
	cd protos && ../$(VENV)/bin/buf lint

bench: $(STAMP)
	$(VENV)/bin/invsaga bench

clean:
	rm -rf $(VENV) data
