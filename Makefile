# make run  — install, create the database, provision a demo key once, serve API + dispatcher
# make test — install (with dev tools), lint, run the whole test suite
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: run test lint bench clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	PORT=$(PORT) bash scripts/run.sh

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.dev lint
	$(PY) -m pytest -q

bench: $(VENV)/.dev
	$(PY) bench/claim_bench.py $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) bench/dispatch_bench.py $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
