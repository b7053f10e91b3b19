# tincay: `make run` serves a demo hierarchy, `make test` runs the suite. Both install what is
# missing (Debian packages via .ci/system-deps, Python packages into .venv from setup.cfg).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# tsp-client, an outside TSA client of tests/clients, lives in a venv of its own inside .venv:
# it pins pyOpenSSL<24, so cryptography<42, which tincay and pyHanko cannot share
TSP_CLIENT := $(VENV)/tsp-client
PG_DIR ?= /tmp/tincay-pg
PG_PORT ?= 55432
export TINCAY_HOME ?= $(CURDIR)/var

.PHONY: run test test-fast bench deps test-deps venv clean

deps:
	@bash .ci/system-deps

# the outside clients of tests/clients (a JDK, Bouncy Castle, NSS tools, Go) and tsp-client
test-deps: venv $(TSP_CLIENT)/.installed
	@bash .ci/system-deps --test

$(BIN)/.installed: setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null
	@$(BIN)/python -m pip install -q -e '.[test,postgres]'
	@touch $@

$(TSP_CLIENT)/.installed: tests/clients/tsp-client.txt
	@test -x $(TSP_CLIENT)/bin/python || $(PYTHON) -m venv $(TSP_CLIENT)
	@$(TSP_CLIENT)/bin/python -m pip install -q -r tests/clients/tsp-client.txt
	@touch $@

venv: deps $(BIN)/.installed

run: venv
	$(BIN)/tincay demo
	$(BIN)/tincay serve

# The whole suite, SQLite and PostgreSQL (a throwaway server started by .ci/postgres and
# stopped again afterwards, whatever the outcome).
test: test-deps
	@url=$$(bash .ci/postgres start $(PG_DIR) $(PG_PORT)) && \
	TINCAY_TEST_POSTGRES_URL="$$url" $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	status=$$?; bash .ci/postgres stop $(PG_DIR); exit $$status

# SQLite only, for quick local iterations.
test-fast: test-deps
	$(BIN)/python -m pytest -q -x -p no:cacheprovider $(PYTEST_ARGS)

bench: venv
	@bash .ci/system-deps --bench
	@$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
