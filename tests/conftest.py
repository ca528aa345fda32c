"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL when configured), the app,
a controllable clock, and helpers to provision keys."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import NamedTuple

import pytest
from werkzeug.serving import make_server

from partner_api import clock as clock_module
from partner_api import create_app, provisioning
from partner_api.config import ROOT, Config
from partner_api.db import apply_schema, bind, database, drop_tables

from .skip_summary import pytest_terminal_summary  # noqa: F401 (a hook: one line a reason)

# pytester runs pytest on small generated test files (tests/test_skip_summary.py).
pytest_plugins = ["pytester"]
POSTGRES_URL = os.environ.get("PARTNER_API_TEST_POSTGRES_URL")
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
# What the injected resolver answers: public names, private ones, and local receivers.
DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "other.example.com": ["93.184.216.35"],
    "internal.example.com": ["10.0.0.5"],
    "mixed.example.com": ["93.184.216.34", "10.0.0.5"],
    "receiver.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
}


class FakeResolver:
    """Injectable DNS: a mutable name → addresses table; other names do not exist."""

    def __init__(self, table):
        self.table = dict(table)

    def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """A fresh, initialised database URL for each backend."""
    if request.param == "postgres":
        if not POSTGRES_URL:
            pytest.skip("PARTNER_API_TEST_POSTGRES_URL is not set")
        bind(POSTGRES_URL)
        drop_tables()
        url = POSTGRES_URL
    else:
        url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    bind(url)
    apply_schema()
    yield url
    if not database.is_closed():
        database.close()


@pytest.fixture
def resolver():
    """The DNS every app and dispatcher of a test resolves webhook hosts with."""
    return FakeResolver(DNS)


@pytest.fixture
def config(database_url, resolver):
    return Config(
        database_url=database_url,
        webhook_allow_cidrs=LOOPBACK,
        allow_http_webhooks=True,
        resolver=resolver,
    )


@pytest.fixture
def make_app(config):
    """Another app on the same database, with some settings replaced."""

    def make(**overrides):
        return create_app(
            {"PARTNER_API": dataclasses.replace(config, **overrides), "TESTING": True}
        )

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def live_server(app):
    """The app behind a real HTTP server (werkzeug, threaded) on an ephemeral loopback port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn_server(database_url: str, workers: int = 1, env: dict | None = None):
    """`wsgi:app` under real gunicorn worker processes; yields the base URL once it answers.

    gunicorn runs with its own defaults, not deploy/gunicorn.conf.py, as many do: its log
    lines must still format ("--- Logging error ---" is a line logging could not write)."""
    port = free_port()
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--no-control-socket", "--workers", str(workers)]
        + ["--bind", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": database_url, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/api/v1/partner/me", timeout=1)
            except urllib.error.HTTPError:
                break  # 401: up and answering
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not start")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        stderr.seek(0)
        logged = stderr.read().decode("utf-8", "replace")
        stderr.close()
    assert "Logging error" not in logged, logged


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime):
        self.current = start

    def __call__(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock():
    fake = FakeClock(dt.datetime(2026, 11, 27, 12, 0, 30))
    clock_module.set_clock(fake)
    yield fake
    clock_module.reset_clock()


@pytest.fixture
def db(app):
    """An open connection for work functions called outside a request."""
    with database.connection_context():
        yield database


class ProvisionedKey(NamedTuple):
    org: object
    key: object
    token: str


@pytest.fixture
def make_key(app):
    """Provision an org (or reuse one) and a key; returns ProvisionedKey(org, key, token)."""

    def make(scopes=("webhooks:manage",), rate_limit=None, org=None, org_name="Acme"):
        with database.connection_context():
            org = org or provisioning.create_org(org_name)
            key, token = provisioning.create_key(org.id, "test", scopes, rate_limit)
        return ProvisionedKey(org, key, token)

    return make


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status, code):
    """The answer is a problem+json error with this status and code; returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == "about:blank" and body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body
