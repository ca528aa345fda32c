"""Upgrading a database made by the first release (tests/fixtures/release_1_0_0, written by that
release's own code) to head: every row intact, the new columns there, the queue's invariants
true, and init-db a no-op the second time. SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from dispatcher.dispatch import Dispatcher
from harness.dns import FakeResolver
from harness.receivers import Receiver
from partner_api import clock as clock_module
from partner_api import create_app, migrations
from partner_api.config import Config
from partner_api.db import bind, database, drop_tables

from .conftest import DNS, LOOPBACK, POSTGRES_URL, FakeClock

FIXTURES = Path(__file__).parent / "fixtures" / "release_1_0_0"
RELEASE_TABLES = (
    "orgs",
    "api_keys",
    "rate_limit_windows",
    "app_secrets",
    "webhook_subscriptions",
    "events",
    "deliveries",
    "delivery_failures",
)
# After the fixture was made and before the retrying delivery's next attempt (an hour later).
UPGRADE_TIME = dt.datetime(2026, 12, 3, 8, 30)


@pytest.fixture(params=["sqlite", "postgres"])
def release_database(request, tmp_path):
    """The URL of a database exactly as the first release left it."""
    if request.param == "postgres":
        if not POSTGRES_URL:
            pytest.skip("PARTNER_API_TEST_POSTGRES_URL is not set")
        if shutil.which("psql") is None:
            pytest.skip("psql is not installed (it loads the pg_dump fixture)")
        bind(POSTGRES_URL)
        drop_tables()
        database.close()
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(FIXTURES / "postgres.sql")]
            + [POSTGRES_URL],
            check=True,
            capture_output=True,
        )
        yield POSTGRES_URL
    else:
        path = tmp_path / "release.sqlite3"
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.executescript((FIXTURES / "sqlite.sql").read_text())
        yield f"sqlite:///{path}"
    if database.obj is not None and not database.is_closed():
        database.close()


@contextlib.contextmanager
def raw_connection(url: str):
    """A connection of the driver's own, outside the app (it must see what is stored)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
    else:
        conn = psycopg2.connect(url)
    try:
        yield conn
    finally:
        conn.close()


def every_row(url: str) -> dict[str, dict[str, dict]]:
    """table → first column (the key) → the row as a dict, for the first release's tables."""
    found = {}
    with raw_connection(url) as conn:
        for table in RELEASE_TABLES:
            cursor = conn.cursor()
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 (names from the list above)
            names = [column[0] for column in cursor.description]
            found[table] = {row[0]: dict(zip(names, row, strict=True)) for row in cursor}
    return found


@pytest.fixture
def upgraded(release_database):
    """(url, rows before, app, runner) once init-db has run on the release's database."""
    before = every_row(release_database)
    config = Config(
        database_url=release_database,
        webhook_allow_cidrs=LOOPBACK,
        allow_http_webhooks=True,
        resolver=FakeResolver(DNS),
    )
    app = create_app({"PARTNER_API": config, "TESTING": True})
    runner = app.test_cli_runner()
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        *(f"applied migration {mid}" for mid in migrations.known_migration_ids()),
        "database ready",
    ]
    return release_database, before, config, runner


def cli_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_row_of_the_first_release_survives_the_upgrade(upgraded):
    url, before, _, runner = upgraded
    after = every_row(url)
    assert sum(len(rows) for rows in before.values()) > 30
    for table, rows in before.items():
        assert set(after[table]) == set(rows), table
        for key, row in rows.items():
            # Column by column, for the columns the release had; dead_lettered was 0/1 and is
            # a boolean on PostgreSQL now (0 == False, 1 == True).
            assert {name: after[table][key][name] for name in row} == row, (table, key)
    assert {row["response_status"] for row in after["deliveries"].values()} == {None}
    assert {row["duration_ms"] for row in after["deliveries"].values()} == {None}
    with raw_connection(url) as conn:
        conn.cursor().execute("SELECT dispatcher_id, last_poll_at FROM dispatcher_polls")
    assert cli_json(runner, "db", "status")["pending"] == []


def test_init_db_again_after_the_upgrade_changes_nothing(upgraded):
    url, _, _, runner = upgraded
    rows = every_row(url)
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and result.stdout == "database ready\n"
    assert every_row(url) == rows


def test_the_upgraded_queue_keeps_its_invariants_and_delivers(upgraded):
    url, before, config, runner = upgraded
    deliveries = before["deliveries"]
    count = {
        status: sum(d["status"] == status for d in deliveries.values())
        for status in ("pending", "held", "dead_lettered")
    }
    clock_module.set_clock(FakeClock(UPGRADE_TIME))
    try:
        stats = cli_json(runner, "stats")
        assert (stats["pending"], stats["held"], stats["dead_lettered"]) == (
            count["pending"],
            count["held"],
            count["dead_lettered"],
        )
        assert stats["disabled_subscriptions"] == 1
        # Keys: every one listed (never a token), the revoked one still revoked. Their tokens
        # are not in the fixture; what authenticates a token is its hash, which is unchanged.
        keys = {key["id"]: key for key in cli_json(runner, "keys", "list")}
        assert set(keys) == set(before["api_keys"])
        for key_id, row in before["api_keys"].items():
            assert keys[key_id]["prefix"] == row["prefix"]
            assert (keys[key_id]["revoked_at"] is None) == (row["revoked_at"] is None)

        (fresh,) = [
            d for d in deliveries.values() if d["status"] == "pending" and not d["attempts"]
        ]
        port = urlsplit(before["webhook_subscriptions"][fresh["subscription_id"]]["url"]).port
        received = _dispatch_with_a_receiver_on(port, config)
    finally:
        clock_module.reset_clock()

    after = every_row(url)["deliveries"]
    if received is None:  # the URL's port is taken on this machine: it was tried and failed
        assert after[fresh["id"]]["attempts"] == 1 and after[fresh["id"]]["status"] == "pending"
    else:
        assert [r["headers"]["webhook-id"] for r in received] == [fresh["event_id"]]
        assert after[fresh["id"]]["status"] == "delivered"
        assert after[fresh["id"]]["response_status"] == 200
    for delivery_id, row in deliveries.items():
        if delivery_id != fresh["id"]:
            assert after[delivery_id]["status"] == row["status"], delivery_id  # held stay held


def _dispatch_with_a_receiver_on(port: int, config: Config):
    """Run the dispatcher until idle with a receiver on `port`; its requests, or None when
    the port is taken (the dispatcher then runs against nothing there)."""
    try:
        receiver = Receiver(port=port)
    except OSError:
        receiver = None
    with receiver or contextlib.nullcontext():
        dispatcher = Dispatcher(config)
        try:
            dispatcher.run_until_idle()
        finally:
            dispatcher.close()
    return None if receiver is None else receiver.requests
