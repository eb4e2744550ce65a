# Two commands: `make demo` and `make test`. Both bootstrap everything they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCENARIO ?= scenarios/quick.toml
PYTEST_ARGS ?=

.PHONY: demo test unit e2e lint bootstrap system clean

demo: bootstrap system
	$(BIN)/connbench run $(SCENARIO)

test: bootstrap system lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: bootstrap
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

e2e: bootstrap system
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

lint: bootstrap
	$(BIN)/ruff check connbench analysis target_app locustfiles tests scripts examples
	$(BIN)/lint-imports --no-cache
	@$(BIN)/python scripts/check_sizes.py

bootstrap: $(STAMP)

# Reinstalls only when pyproject.toml changes, so a second `make` is fast.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# PgBouncer, Debian's postgresql (server = "system") and Chromium (the report's browser test), from Debian when root and missing.
system:
	@bash scripts/ensure-system.sh

clean:
	rm -rf $(VENV) *.egg-info
