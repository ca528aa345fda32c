"""`flask --app wsgi backup PATH`: a consistent copy taken while events are published, restored
into a fresh deployment that finds everything and delivers it; and the refusals."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading

import pytest

from harness.dns import FakeResolver
from harness.receivers import Receiver
from partner_api import create_app, provisioning
from partner_api.config import ROOT, Config, describe_database_url
from partner_api.db import apply_schema, bind, database
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import create_subscription

from .conftest import DNS, LOOPBACK, after_database_line
from .test_dispatcher_processes import dispatcher_env

PUBLISHED_BEFORE_BACKUP = 30
PUBLISHED_DURING_BACKUP = 10


def app_on(url: str):
    """An app on `url` (binding the proxy to it)."""
    config = Config(
        database_url=url,
        webhook_allow_cidrs=LOOPBACK,
        allow_http_webhooks=True,
        resolver=FakeResolver(DNS),
    )
    return create_app({"PARTNER_API": config, "TESTING": True})


@pytest.fixture
def sqlite_app(tmp_path):
    """An app on a fresh SQLite database (the backup command is SQLite's)."""
    app = app_on(f"sqlite:///{tmp_path / 'live.sqlite3'}")
    apply_schema()
    yield app
    if not database.is_closed():
        database.close()


class Publisher(threading.Thread):
    """Publishes events one after another, each on its own transaction, until stopped."""

    def __init__(self, org_id: str):
        super().__init__(daemon=True)
        self.org_id = org_id
        self.published: list[str] = []
        self.stop = threading.Event()
        self.reached = collections.defaultdict(threading.Event)

    def run(self):
        with database.connection_context():
            while not self.stop.is_set():
                event, _ = publish_event(self.org_id, "vc.test.ping", {"n": len(self.published)})
                self.published.append(event.id)
                self.reached[len(self.published)].set()


def rows(path, query: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


def ids(path, table: str, where: str = "1 = 1") -> set[str]:
    return {row[0] for row in rows(path, f"SELECT id FROM {table} WHERE {where}")}  # noqa: S608


# Long: one scenario, read top to bottom: load, copy under writes, check the copy, deliver it.
def test_a_backup_under_write_load_restores_into_a_deployment_that_delivers(sqlite_app, tmp_path):
    live = tmp_path / "live.sqlite3"
    copy = tmp_path / "backups" / "partner-api.sqlite3"
    copy.parent.mkdir()
    with Receiver() as receiver:
        policy = Config(allow_http_webhooks=True, webhook_allow_cidrs=LOOPBACK)
        with database.connection_context():
            org = provisioning.create_org("Acme")
            provisioning.create_key(org.id, "main", ["webhooks:manage"])
            for description in ("first", "second"):
                create_subscription(org.id, receiver.url(), None, description, policy)
        publisher = Publisher(org.id)
        publisher.start()
        try:
            assert publisher.reached[PUBLISHED_BEFORE_BACKUP].wait(timeout=60)
            before = {table: ids(live, table) for table in ("webhook_subscriptions", "api_keys")}
            pending_before = ids(live, "deliveries", "status = 'pending'")
            result = sqlite_app.test_cli_runner().invoke(args=["backup", str(copy), "--json"])
            more = len(publisher.published) + PUBLISHED_DURING_BACKUP
            assert publisher.reached[more].wait(timeout=60)  # writes went on around it
        finally:
            publisher.stop.set()
            publisher.join(timeout=30)

        assert result.exit_code == 0, result.output
        made = json.loads(result.stdout)
        assert made == {
            "path": str(copy),
            "bytes": copy.stat().st_size,
            "database": describe_database_url(sqlite_app.config["PARTNER_API"].database_url),
        }
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert rows(copy, "PRAGMA integrity_check") == [("ok",)]
        assert {p.name for p in copy.parent.iterdir()} == {copy.name}  # one file, no -wal

        # Everything there before the copy began is in it, and it is one moment's state:
        # every event it holds has both its deliveries (they are written together).
        for table, found in before.items():
            assert found <= ids(copy, table), table
        assert pending_before <= ids(copy, "deliveries", "status = 'pending'")
        per_event = rows(
            copy,
            "SELECT e.id, COUNT(d.id) FROM events e "
            "LEFT JOIN deliveries d ON d.event_id = e.id GROUP BY e.id",
        )
        assert {count for _, count in per_event} == {2}
        copied_events = {event_id for event_id, _ in per_event}
        assert len(copied_events) >= PUBLISHED_BEFORE_BACKUP

        # A fresh deployment on the copy: the dispatcher --once delivers all of it.
        restored = subprocess.run(
            [sys.executable, "-m", "dispatcher", "--once"],
            cwd=ROOT,
            env=dispatcher_env(f"sqlite:///{copy}"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert restored.returncode == 0, restored.stderr
    received = collections.Counter(json.loads(r["body"])["id"] for r in receiver.requests)
    assert received == {event_id: 2 for event_id in copied_events}
    assert ids(copy, "deliveries", "status <> 'delivered'") == set()


def test_a_backup_never_overwrites_an_existing_file(sqlite_app, tmp_path):
    existing = tmp_path / "keep.sqlite3"
    existing.write_bytes(b"an older backup")
    result = sqlite_app.test_cli_runner().invoke(args=["backup", str(existing)])
    assert result.exit_code != 0
    assert after_database_line(result.stderr) == (
        f"error: {existing} already exists: a backup never overwrites a file\n"
    )
    assert existing.read_bytes() == b"an older backup"


def test_a_backup_where_no_file_can_be_written_is_one_line(sqlite_app):
    result = sqlite_app.test_cli_runner().invoke(args=["backup", "/proc/partner-api.sqlite3"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    error = after_database_line(result.stderr)
    assert error.startswith("error: cannot write /proc/partner-api.sqlite3: ")
    assert error.count("\n") == 1


def test_a_backup_into_a_missing_directory_is_refused(sqlite_app, tmp_path):
    target = tmp_path / "no-such-dir" / "copy.sqlite3"
    result = sqlite_app.test_cli_runner().invoke(args=["backup", str(target)])
    assert result.exit_code != 0
    error = after_database_line(result.stderr)
    assert error.startswith("error: the directory") and error.count("\n") == 1
    assert not target.parent.exists()


def test_on_postgresql_backup_says_how_to_use_pg_dump_without_the_password(tmp_path):
    # No connection is made: the command only says what to run instead.
    app = app_on("postgresql://partner:s3cret-pw@127.0.0.1:1/partner")
    target = tmp_path / "copy.dump"
    result = app.test_cli_runner().invoke(args=["backup", str(target), "--json"])
    bind(f"sqlite:///{tmp_path / 'unbound.sqlite3'}")  # nothing of this test stays bound
    assert result.exit_code != 0 and result.stdout == ""
    (line,) = after_database_line(result.stderr).splitlines()
    assert line.startswith("error: on PostgreSQL, back up with pg_dump: ")
    assert 'pg_dump --format=custom --file=partner-api.dump "$DATABASE_URL"' in line
    assert "pg_restore" in line and "s3cret" not in result.output
    assert not target.exists()


def test_backup_of_a_missing_sqlite_database_creates_nothing(tmp_path):
    missing = tmp_path / "none.sqlite3"
    app = app_on(f"sqlite:///{missing}")
    target = tmp_path / "copy.sqlite3"
    result = app.test_cli_runner().invoke(args=["backup", str(target)])
    assert result.exit_code != 0 and "no database at" in result.stderr
    assert not missing.exists() and not target.exists()
    assert os.listdir(tmp_path) == []
