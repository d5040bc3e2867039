# Two entry points for a fresh machine with Python 3.11+:
#   make run    the whole main job on the embedded PostgreSQL (http://127.0.0.1:5001)
#   make test   every test, against a real PostgreSQL and a real Kafka broker
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export STLDATA_HOME ?= $(CURDIR)/var

.PHONY: install run test lint kafka kafka-stop bench-ingest clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,kafka]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/stldata up

test: install
	bash scripts/test.sh

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

kafka:
	@bash scripts/kafka.sh start

kafka-stop:
	@bash scripts/kafka.sh stop

bench-ingest: install
	$(BIN)/python bench/ingest/run.py

clean:
	rm -rf $(VENV) var
