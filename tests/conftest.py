"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL when configured), the app,
a controllable clock, and helpers to provision keys."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import pytest
from werkzeug.serving import make_server

from harness.dns import FakeResolver
from harness.net import ME_PATH
from harness.servers import start_gunicorn
from partner_api import clock as clock_module
from partner_api import create_app, ids, provisioning
from partner_api.config import Config
from partner_api.db import apply_schema, bind, database, drop_tables
from partner_api.delivery.subscriptions import create_subscription
from partner_api.models import Delivery, DeliveryFailure, Event, Subscription

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


@contextlib.contextmanager
def gunicorn_server(database_url: str, workers: int = 1, env: dict | None = None):
    """`wsgi:app` under real gunicorn worker processes; yields the base URL once it answers.

    gunicorn runs with its own defaults, not deploy/gunicorn.conf.py, as many do: its log
    lines must still format ("--- Logging error ---" is a line logging could not write)."""
    with tempfile.TemporaryDirectory() as scratch:
        server = start_gunicorn(
            {"DATABASE_URL": database_url, **(env or {})},
            Path(scratch) / "gunicorn.log",
            workers=workers,
            config=None,
            probe=ME_PATH,
        )
        with server:
            yield server.base
        logged = server.log()
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


@pytest.fixture
def subscribe(config):
    """Create a subscription the way POST /webhooks does (the same work function, with the
    test's resolver and loopback allowance); returns the Subscription row: `id`, `secret`,
    `org_id`, `url`, ... Tests of the endpoint itself post to it instead."""

    def make(org_id: str, url: str = "http://127.0.0.1:9/hook", events=None, description=""):
        with database.connection_context():
            return create_subscription(org_id, url, events, description, config)[0]

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


# --- the webhook subscriptions API (tests/test_webhooks_*.py) ---------------------------------
# Every storage test runs on SQLite and PostgreSQL. DNS never leaves the process: the resolver
# makes `hooks.example.com` public and `internal.example.com` private.

WEBHOOKS = "/api/v1/partner/webhooks"
GOOD_URL = "https://hooks.example.com/partner-api"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SUBSCRIPTION_FIELDS = {
    "id",
    "url",
    "events",
    "description",
    "status",
    "disabled_reason",
    "disabled_at",
    "consecutive_failures",
    "failing_since",
    "created_at",
}
FAILURE_FIELDS = {
    "id",
    "delivery_id",
    "event_id",
    "event_type",
    "attempt",
    "attempted_at",
    "duration_ms",
    "error_kind",
    "error_message",
    "response_status",
    "response_excerpt",
    "next_attempt_at",
    "dead_lettered",
}


@pytest.fixture
def make_client(make_app):
    """A client of another app on the same database, with some settings replaced."""

    def make(**overrides):
        return make_app(**overrides).test_client()

    return make


@pytest.fixture
def strict_client(make_client):
    """The production SSRF policy: https only and no exempt networks."""
    return make_client(webhook_allow_cidrs=(), allow_http_webhooks=False)


def create(client, token, **body):
    body.setdefault("url", GOOD_URL)
    return client.post(WEBHOOKS, json=body, headers=bearer(token))


def created(client, token, **body) -> dict:
    response = create(client, token, **body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def count(model, *conditions) -> int:
    with database.connection_context():
        query = model.select()
        if conditions:
            query = query.where(*conditions)
        return query.count()


def listed_ids(client, token, path=WEBHOOKS) -> list[str]:
    response = client.get(path, headers=bearer(token), query_string={"limit": 100})
    assert response.status_code == 200, response.get_data(as_text=True)
    return [item["id"] for item in response.get_json()["data"]]


def walk(client, token, path, limit, between_pages=None, **filters) -> list[str]:
    """Every id of a list (with these query `filters`), page by page; checks the envelope of
    every page on the way."""
    seen, cursor, pages = [], None, 0
    while True:
        query = {**filters, "limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        response = client.get(path, headers=bearer(token), query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        assert set(page) == {"data", "has_more", "next_cursor"}
        assert len(page["data"]) <= limit
        seen.extend(item["id"] for item in page["data"])
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return seen
        assert len(page["data"]) == limit and isinstance(page["next_cursor"], str)
        cursor = page["next_cursor"]
        if between_pages is not None and pages == 1:
            between_pages()


def first_cursor(client, token, path=WEBHOOKS) -> str:
    response = client.get(path, headers=bearer(token), query_string={"limit": 1})
    cursor = response.get_json()["next_cursor"]
    assert cursor, "the list needs at least two items"
    return cursor


def flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def add_failures(subscription_id: str, clock, how_many: int, *, step=60, dead_letter_last=False):
    """One event and delivery with `how_many` failed attempts, `step` seconds apart."""
    with database.connection_context():
        subscription = Subscription.get_by_id(subscription_id)
        event = Event.create(
            id=ids.new_id("evt"),
            org=subscription.org_id,
            type="vc.test.ping",
            data={"n": how_many},
            occurred_at=clock.current,
        )
        delivery = Delivery.create(
            id=ids.new_id("dlv"),
            event=event,
            subscription=subscription,
            status="pending",
            attempts=0,
            next_attempt_at=clock.current,
            created_at=clock.current,
        )
        failures = []
        for attempt in range(1, how_many + 1):
            clock.advance(step)
            last = dead_letter_last and attempt == how_many
            failures.append(
                DeliveryFailure.create(
                    id=ids.new_id("att"),
                    delivery=delivery,
                    subscription=subscription,
                    event=event,
                    event_type=event.type,
                    attempt=attempt,
                    attempted_at=clock.current,
                    duration_ms=100 + attempt,
                    error_kind="timeout" if last else "http_status",
                    error_message="timed out" if last else f"receiver answered 500 ({attempt})",
                    response_status=None if last else 500,
                    response_excerpt=None if last else "internal error",
                    next_attempt_at=None if last else clock.current + dt.timedelta(minutes=5),
                    dead_lettered=1 if last else 0,
                )
            )
    return failures


def delivery_row(delivery_id):
    """The delivery as stored now."""
    from partner_api.models import Delivery

    with database.connection_context():
        return Delivery.get_by_id(delivery_id)


def failure_audit(delivery_id) -> list:
    """The delivery's failed attempts as stored now, oldest first."""
    from partner_api.models import DeliveryFailure

    with database.connection_context():
        return list(
            DeliveryFailure.select()
            .where(DeliveryFailure.delivery == delivery_id)
            .order_by(DeliveryFailure.attempted_at, DeliveryFailure.attempt)
        )


def after_database_line(stderr: str) -> str:
    """An admin command's stderr without its first line, which names the database it uses."""
    first, _, rest = stderr.partition("\n")
    assert first.startswith("database: "), stderr
    return rest
