# The two commands a new user needs: `make demo` and `make test`. Everything else is helpers
# (`make help` lists every target).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DP_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(DP_DATA_DIR)/dagster_home
HOST ?= 127.0.0.1
UI_PORT ?= 3000
PIPELINE ?= energy_forecast
PORT ?= 5001
MLFLOW_PORT ?= 5000
# Scoring-server processes: one per core (MLflow's default is one, which leaves the others idle),
# at most four by default: each holds its own copy of MLflow and the model, about 270 MB.
WORKERS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); echo $$((n < 4 ? n : 4)))
# Only the mlflow commands below get this; the platform reads MLFLOW_TRACKING_URI itself.
MLFLOW_URI := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(DP_DATA_DIR)/mlflow.db)

.PHONY: demo test lint system-deps ui mlflow-ui serve summary checks home clean help

help:
	@echo "make demo       - install, generate sample data, materialize every asset (a line per step), print a summary"
	@echo "make test       - install, lint and run the test suite"
	@echo "make lint       - ruff check and ruff format --check"
	@echo "make summary    - dp summary: tables, rejects, open quarantine, models, failing checks"
	@echo "make checks     - dp checks: the checks whose latest evaluation failed, with the reasons"
	@echo "make ui         - dagster dev (webserver + daemon) on http://$(HOST):$(UI_PORT)"
	@echo "make mlflow-ui [MLFLOW_PORT=5000] - MLflow's UI (runs, metrics, plots, registry) on http://$(HOST):$(MLFLOW_PORT)"
	@echo "make serve PIPELINE=energy_forecast [PORT=5001] [WORKERS=n] - MLflow scoring server for the champion"
	@echo "make $(BIN)/dp - create the venv and install the project into it (the others do it first)"
	@echo "make home       - put dagster.yaml into DAGSTER_HOME ($(DAGSTER_HOME)); demo and ui do it"
	@echo "make system-deps - install chromium and postgresql with apt when root (the browser and PostgreSQL tests)"
	@echo "make clean      - remove the data dir (inbox, landing, warehouse, Dagster instance)"
	@echo "make help       - this list"

# Installs into .venv with uv (seconds) and falls back to pip if uv cannot be had. Bytecode is
# compiled at install, as pip does: uv skips it by default, and where PYTHONDONTWRITEBYTECODE is
# set (as on these machines) every process, each run, sensor tick, CLI call and test, would
# compile its ~2,000 imported modules again: ~3 s more to start each one.
$(BIN)/dp: setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv \
	  && $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]' \
	  || $(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

home:
	@mkdir -p "$(DAGSTER_HOME)"
	@cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

# Dagster's event log is long: it goes to a file, and the terminal gets a line per finished step
# (awk splits Dagster's " - "-separated lines: $$7 is the step, $$8 the event). On failure the
# output ends with the failed steps' errors and the failing checks with their reasons.
PROGRESS := awk -F' - ' '$$8 == "STEP_SUCCESS" { n++; t = $$9; sub(/.* in /, "", t); sub(/\.$$/, "", t); \
  printf "  [%2d] %-42s done in %s\n", n, $$7, t; fflush() } \
  $$8 == "STEP_FAILURE" { n++; printf "  [%2d] %-42s FAILED\n", n, $$7; fflush() }'
demo: $(BIN)/dp home
	$(BIN)/dp sample-data
	@echo "materializing every asset, a line per step (log: $(DP_DATA_DIR)/materialize.log) ..."
	@set -o pipefail; $(BIN)/dagster asset materialize -m dp_assets --select '*' 2>&1 \
	  | tee "$(DP_DATA_DIR)/materialize.log" | $(PROGRESS) \
	  || { echo "materialize failed; log: $(DP_DATA_DIR)/materialize.log. The failed steps:"; \
	       grep -hoE "(Execution of step .* failed.*|^[A-Za-z_.]*(Error|Exception|Failure): .*)" "$(DP_DATA_DIR)/materialize.log" \
	         | cut -c1-300 | awk '!seen[$$0]++' | sed 's/^/  /'; \
	       echo "The failing checks (dp checks):"; $(BIN)/dp checks; exit 1; }
	@$(BIN)/dp summary
	@echo "report (the reporting/report asset wrote it): $(DP_DATA_DIR)/reports/report.html"

summary: $(BIN)/dp
	$(BIN)/dp summary

checks: $(BIN)/dp
	$(BIN)/dp checks

# The daemon test holds a two-minute deadline: it runs alone, after the parallel tests.
test: lint system-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not serial"
	$(BIN)/python -m pytest -q -m serial

# System packages the end-to-end tests use: headless Chromium (the lineage page) and a PostgreSQL
# server (the Postgres-backed instance). Installed with apt when missing; without root those
# tests skip and say why.
MISSING_SYSTEM := $(if $(shell command -v chromium),,chromium) $(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql)
system-deps:
	@if [ -n "$(strip $(MISSING_SYSTEM))" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(strip $(MISSING_SYSTEM)) with apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(MISSING_SYSTEM) >/dev/null; \
	  else \
	    echo "missing $(strip $(MISSING_SYSTEM)) and not root: the browser and PostgreSQL tests will skip"; \
	  fi; \
	fi

lint: $(BIN)/dp
	$(BIN)/ruff check dp_assets dp_assets_tests bench
	$(BIN)/ruff format --check dp_assets dp_assets_tests bench

ui: $(BIN)/dp home
	$(BIN)/dagster dev -h $(HOST) -p $(UI_PORT)

mlflow-ui: $(BIN)/dp
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_URI)" --default-artifact-root "$(DP_DATA_DIR)/mlartifacts" -h $(HOST) -p $(MLFLOW_PORT)

# MLflow's own scoring server; it starts uvicorn from PATH, hence the venv first on it.
serve: $(BIN)/dp
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_TRACKING_URI="$(MLFLOW_URI)" \
	  $(BIN)/mlflow models serve -m "models:/$(PIPELINE)@champion" -h $(HOST) -p $(PORT) \
	  -w $(WORKERS) --env-manager local

clean:
	rm -rf "$(DP_DATA_DIR)"
