# Two commands: `make demo` and `make test`. Both bootstrap everything they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt
UV_LOCK := requirements-bootstrap.txt
LOCKED := $(VENV)/.locked
SCENARIO ?= scenarios/quick.toml
PYTEST_ARGS ?=

.PHONY: demo test unit e2e lint bootstrap system clean lock

demo: bootstrap system
	$(BIN)/connbench run $(SCENARIO)

test: bootstrap system lint
	$(UNIT) $(PYTEST_ARGS)
	$(E2E)

# The e2e tests that measure run one at a time: on two cores, anything beside them moves their numbers.
# Those that only check what the harness does (beside_others: files, exit codes, counts, states reached by a
# deadline) run three at a time, a module per process: their time is mostly the scenarios' own timers.
# (pytest's exit 5, nothing selected, is not a failure here: PYTEST_ARGS may pick tests from one half only.)
E2E = for half in '-m "not beside_others" --durations=15' '-m beside_others -n 3 --dist loadfile --durations=10'; do \
	eval $(BIN)/pytest tests/e2e $$half $(PYTEST_ARGS); rc=$$?; [ $$rc = 0 ] || [ $$rc = 5 ] || exit $$rc; done

# The unit tests, two at a time (pytest-xdist). In-process, they import the locustfiles only for their
# functions: gevent's monkey-patching would break xdist's own threads, so it is skipped there (never in e2e,
# where Locust runs as it does for users).
UNIT = LOCUST_SKIP_MONKEY_PATCH=1 $(BIN)/pytest tests/unit -n 2

unit: bootstrap
	$(UNIT) $(PYTEST_ARGS)

e2e: bootstrap system
	$(E2E)

lint: bootstrap
	$(BIN)/ruff check connbench analysis target_app locustfiles tests scripts examples
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/python scripts/gen_docs.py --check
	@$(BIN)/python scripts/check_sizes.py

bootstrap: $(STAMP)

# The venv is made from the lock, hash-checked, so every machine measures with the same versions:
# pip installs uv (itself hash-pinned), and uv installs the lock exactly (seconds, not a minute), compiled
# to bytecode: with PYTHONDONTWRITEBYTECODE set (CI's machine sets it) nothing is compiled later, and every
# process the harness starts (gunicorn, Locust, the sampler) would import from source, 2.5 s each.
# A changed lock makes a new venv (nothing stale stays behind); an unchanged one installs nothing.
$(LOCKED): $(LOCK) $(UV_LOCK)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r $(UV_LOCK)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes --compile-bytecode $(LOCK)
	touch $@

# connbench itself, editable and without dependencies (the lock has them): again only when pyproject.toml changes.
$(STAMP): $(LOCKED) pyproject.toml
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

# Regenerates both locks from pyproject.toml's ranges; commit the result (the next `make` then makes a new venv).
lock: $(LOCKED)
	$(BIN)/uv pip compile pyproject.toml --extra test $(LOCK_FLAGS) -o $(LOCK)
	echo uv | $(BIN)/uv pip compile - $(LOCK_FLAGS) -o $(UV_LOCK)

LOCK_FLAGS := --generate-hashes --no-header --quiet --python-version 3.11 --python-platform x86_64-unknown-linux-gnu

# PgBouncer, Debian's postgresql (server = "system") and Chromium (the report's browser test), from Debian when root and missing.
system:
	@bash scripts/ensure-system.sh

clean:
	rm -rf $(VENV) *.egg-info
