# make run  — install, create the database, provision a demo key once, serve API + dispatcher
# make test — install (with dev tools and, where npm exists, the Node.js checks), lint, run the
#             whole test suite
# make bench — the benchmarks in bench/ (installs wrk and pgbouncer where missing)
# make browser — Debian's chromium for the docs test in a real browser (skipped without it)
# make nginx, make pgbouncer — Debian's nginx and pgbouncer for the tests that run them
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
NPM := $(shell command -v npm 2>/dev/null)
NODE_DEPS := tests/node/node_modules/.installed
# Wait for a dpkg lock another installer holds instead of failing at once.
APT := apt-get -o DPkg::Lock::Timeout=300

.PHONY: run test lint bench bench-tools browser clean node-deps nginx pgbouncer

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The npm Standard Webhooks verifier, installed exactly as locked; without npm its test skips.
$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node-deps: $(NODE_DEPS)

run: $(VENV)/.runtime
	PORT=$(PORT) bash scripts/run.sh

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.dev $(if $(NPM),$(NODE_DEPS)) lint
	$(PY) -m pytest -q

# wrk (Debian's package) drives the API benchmark; installed where missing (needs root or sudo).
bench-tools:
	@command -v wrk >/dev/null || $(APT) install -y wrk || ($(APT) update && $(APT) install -y wrk)

bench: $(VENV)/.dev bench-tools pgbouncer
	$(PY) -m bench.claim $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.idle $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.engine $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.first_ping $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.wake $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.metrics
	$(PY) -m bench.scrape
	$(PY) -m bench.slow_clients
	$(PY) -m bench.prune $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.delivery_log $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.slow_dns $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.api $(if $(PARTNER_API_TEST_POSTGRES_URL),--postgres $(PARTNER_API_TEST_POSTGRES_URL))
	$(PY) -m bench.api --contention
	$(if $(PARTNER_API_TEST_POSTGRES_URL),$(PY) -m bench.pgbouncer --postgres $(PARTNER_API_TEST_POSTGRES_URL))

# Debian's package lists may be missing or stale: update only when the install fails. Without a
# browser the suite still runs; the docs browser test then skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 \
		|| apt-get install -y -q chromium \
		|| { apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "make browser: chromium could not be installed; the docs browser test will skip" >&2

# Debian's nginx, for the test that runs the shipped site in front of gunicorn; without it
# that test skips and says why. Same pattern as `browser`.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx \
		|| DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends nginx; } \
		|| echo "make nginx: nginx could not be installed; the nginx test will skip" >&2

# Debian's pgbouncer, for the PostgreSQL tests and benchmark that run it in transaction pooling
# mode in front of the database; without it those skip and say why. Same pattern as `nginx`.
# The package may also start its own service on port 6432: nothing here uses that one.
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer \
		|| DEBIAN_FRONTEND=noninteractive $(APT) install -y -q --no-install-recommends pgbouncer \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			$(APT) install -y -q --no-install-recommends pgbouncer; } \
		|| echo "make pgbouncer: pgbouncer could not be installed; the PgBouncer tests will skip" >&2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis tests/node/node_modules
