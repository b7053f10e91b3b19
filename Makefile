# tincay: `make run` serves a demo hierarchy, `make test` runs the suite. Both install what is
# missing (Debian packages via .ci/system-deps, Python packages into .venv from setup.cfg).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_DIR ?= /tmp/tincay-pg
PG_PORT ?= 55432
export TINCAY_HOME ?= $(CURDIR)/var

.PHONY: run test test-fast bench deps venv clean

deps:
	@bash .ci/system-deps

$(BIN)/.installed: setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null
	@$(BIN)/python -m pip install -q -e '.[test,postgres]'
	@touch $@

venv: deps $(BIN)/.installed

run: venv
	$(BIN)/tincay demo
	$(BIN)/tincay serve

# The whole suite, SQLite and PostgreSQL (a throwaway server started by .ci/postgres and
# stopped again afterwards, whatever the outcome).
test: venv
	@url=$$(bash .ci/postgres start $(PG_DIR) $(PG_PORT)) && \
	TINCAY_TEST_POSTGRES_URL="$$url" $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	status=$$?; bash .ci/postgres stop $(PG_DIR); exit $$status

# SQLite only, for quick local iterations.
test-fast: venv
	$(BIN)/python -m pytest -q -x -p no:cacheprovider $(PYTEST_ARGS)

bench: venv
	@bash .ci/system-deps --bench
	@$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
