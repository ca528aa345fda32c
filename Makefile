# make run  — install, create the database, provision a demo key once, serve API + dispatcher
# make test — install (with dev tools), lint, run the whole test suite
# make browser — Debian's chromium for the docs test in a real browser (skipped without it)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: run test lint bench browser clean

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

# Debian's package lists may be missing or stale: update only when the install fails. Without a
# browser the suite still runs; the docs browser test then skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 \
		|| apt-get install -y -q chromium \
		|| { apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "make browser: chromium could not be installed; the docs browser test will skip" >&2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
