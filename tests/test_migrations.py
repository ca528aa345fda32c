"""Versioned migrations: a fresh database at head is schema.sql, `db status` reads without
writing, hosts racing init-db apply each migration once, a stale lock is cleared by a named
command, and a database with pending or unknown migrations is refused by every process."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import nullcontext

import pytest
from yoyo.migrations import get_migration_hash

from dispatcher.transport import AttemptResult
from harness.pgbouncer import PgBouncer, pgbouncer_binary
from partner_api import db as db_module
from partner_api import migrations
from partner_api.config import ROOT, describe_database_url
from partner_api.db import apply_schema, bind, database, drop_tables

from .conftest import POSTGRES_URL, after_database_line
from .test_storage import column_type_family

NEWEST = migrations.known_migration_ids()[-1]
_OK = AttemptResult(True, 200, None, None, None, 5)
FUTURE = "0999_from_a_newer_release"


def structure() -> dict:
    """table → (columns: name → (type family, nullable, primary key), index names), for every
    table but yoyo's own."""
    with database.connection_context():
        tables = set(database.get_tables()) - set(migrations.YOYO_TABLES)
        return {
            table: (
                {
                    c.name: (column_type_family(c.data_type), c.null, c.primary_key)
                    for c in database.get_columns(table)
                },
                {index.name for index in database.get_indexes(table)},
            )
            for table in sorted(tables)
        }


def test_a_fresh_database_migrated_to_head_is_exactly_schema_sql(database_url):
    migrated = structure()
    drop_tables()
    with database.connection_context():
        for statement in db_module.schema_statements():
            database.execute_sql(statement)
    from_schema_sql = structure()
    assert migrated == from_schema_sql
    assert (
        "dispatcher_polls" in migrated
        and "deliveries_subscription_due" in migrated["deliveries"][1]
    )


def sql(statement: str, params: tuple = ()) -> list[tuple]:
    with database.connection_context():
        cursor = database.execute_sql(statement.replace("?", database.param), params)
        return cursor.fetchall() if cursor.description else []


def applied_rows() -> list[tuple]:
    return sql("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")


def mark_applied(migration_id: str) -> None:
    sql(
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) "
        "VALUES (?, ?, ?)",
        (get_migration_hash(migration_id), migration_id, dt.datetime(2030, 1, 1)),
    )


def forget(migration_id: str) -> None:
    sql("DELETE FROM _yoyo_migration WHERE migration_id = ?", (migration_id,))


def one_error_line(result) -> str:
    assert result.exit_code != 0, result.output
    lines = after_database_line(result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_init_db_applies_nothing_on_a_database_at_head(runner, database_url):
    url = database_url
    before = applied_rows()
    result = runner.invoke(args=["init-db", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"applied": [], "database": describe_database_url(url)}
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and result.stdout == "database ready\n"
    assert applied_rows() == before == [(mid,) for mid in migrations.known_migration_ids()]


def test_db_status_lists_applied_with_when_and_pending(runner):
    result = runner.invoke(args=["db", "status", "--json"])
    assert result.exit_code == 0
    status = json.loads(result.stdout)
    assert [m["id"] for m in status["applied"]] == list(migrations.known_migration_ids())
    assert all(m["applied_at"].endswith("Z") for m in status["applied"])
    assert status["pending"] == [] and status["unknown"] == []
    assert runner.invoke(args=["db", "status"]).stdout.strip().endswith("up to date")

    forget(NEWEST)
    status = json.loads(runner.invoke(args=["db", "status", "--json"]).stdout)
    assert status["pending"] == [NEWEST] and NEWEST not in [m["id"] for m in status["applied"]]
    text = runner.invoke(args=["db", "status"]).stdout
    assert re.search(rf"^{NEWEST} +pending", text, re.MULTILINE)
    assert "run `flask --app wsgi init-db`" in text


def test_db_status_never_creates_a_database_file(make_app, tmp_path):
    missing = tmp_path / "state" / "none.sqlite3"
    runner = make_app(database_url=f"sqlite:///{missing}").test_cli_runner()
    result = runner.invoke(args=["db", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pending"] == list(migrations.known_migration_ids())
    assert not missing.exists() and not missing.parent.exists()


def test_pending_migrations_are_refused_at_start_until_init_db_applies_them(
    runner, client, database_url
):
    forget(NEWEST)  # as if the code were upgraded and init-db not yet run
    with pytest.raises(RuntimeError, match=r"pending: .*run `flask --app wsgi init-db`"):
        db_module.check_schema()
    body = client.get("/readyz").get_json()
    assert body["code"] == "schema_not_current" and "init-db" in body["detail"]
    # The newest migration runs again on a database that already has all it makes.
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and f"applied migration {NEWEST}" in result.stdout
    db_module.check_schema()
    assert client.get("/readyz").status_code == 200


def test_a_database_newer_than_the_code_is_refused_by_init_db_readyz_and_the_dispatcher(
    runner, client, database_url
):
    mark_applied(FUTURE)
    before = applied_rows()
    line = one_error_line(runner.invoke(args=["init-db"]))
    assert "newer than this code" in line and FUTURE in line
    assert applied_rows() == before
    with pytest.raises(RuntimeError, match="newer than this code"):
        db_module.check_schema()
    body = client.get("/readyz").get_json()
    assert body["status"] == 503 and body["code"] == "schema_not_current"
    assert "newer than this code" in body["detail"]
    status = json.loads(runner.invoke(args=["db", "status", "--json"]).stdout)
    assert status["unknown"] == [FUTURE]

    dispatcher = subprocess.run(
        [sys.executable, "-m", "dispatcher", "--once"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dispatcher.returncode != 0
    assert len(dispatcher.stderr.strip().splitlines()) == 1, dispatcher.stderr
    assert "newer than this code" in dispatcher.stderr and "Traceback" not in dispatcher.stderr


def test_a_stale_lock_fails_init_db_in_one_line_naming_break_lock(runner, database_url):
    forget(NEWEST)
    sql(
        "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, ?, ?)",
        (dt.datetime(2026, 11, 27, 12, 0), 4242),
    )
    line = one_error_line(runner.invoke(args=["init-db", "--lock-timeout", "0.2"]))
    assert "process 4242" in line and "`flask --app wsgi db break-lock`" in line
    assert NEWEST not in {row[0] for row in applied_rows()}  # nothing applied meanwhile

    result = runner.invoke(args=["db", "break-lock", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["cleared"] is True
    assert runner.invoke(args=["db", "break-lock"]).stdout == "no migration lock was held\n"
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert NEWEST in {row[0] for row in applied_rows()}


@pytest.fixture(params=["sqlite", "postgres", "pgbouncer"])
def empty_database_url(request, tmp_path):
    """A database URL with nothing in it yet; `pgbouncer`: PostgreSQL's, through PgBouncer in
    transaction pooling mode (yoyo's lock is a row, so it holds there too)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'race.sqlite3'}"
    else:
        if not POSTGRES_URL:
            pytest.skip("PARTNER_API_TEST_POSTGRES_URL is not set")
        if request.param == "pgbouncer" and pgbouncer_binary() is None:
            pytest.skip("pgbouncer is not installed (make pgbouncer)")
        bind(POSTGRES_URL)
        drop_tables()
        direct = nullcontext(POSTGRES_URL)
        with PgBouncer(POSTGRES_URL) if request.param == "pgbouncer" else direct as url:
            yield url
            database.close()
    if database.obj is not None and not database.is_closed():
        database.close()


def test_hosts_racing_init_db_apply_every_migration_once(empty_database_url):
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": empty_database_url}
    hosts = [
        subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(host.wait(timeout=120), *host.communicate()) for host in hosts]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], outcomes
    assert all(out.endswith("database ready\n") for _, out, _ in outcomes)
    bind(empty_database_url)
    applies = sql("SELECT migration_id FROM _yoyo_log WHERE operation = 'apply'")
    assert sorted(row[0] for row in applies) == list(migrations.known_migration_ids())
    assert applied_rows() == [(mid,) for mid in migrations.known_migration_ids()]
    assert sql("SELECT COUNT(*) FROM app_secrets") == [(1,)]
    # Each migration was reported applied by exactly one host.
    reported = [line for _, out, _ in outcomes for line in out.splitlines() if "applied" in line]
    assert sorted(reported) == [f"applied migration {m}" for m in migrations.known_migration_ids()]


def test_apply_schema_leaves_sqlite_timestamps_in_peewees_format(database_url):
    """yoyo registers its own datetime adapter while it migrates; ours must survive it."""
    apply_schema()
    forget(NEWEST)
    apply_schema()
    stored = sql("SELECT ?", (dt.datetime(2026, 11, 27, 12, 0, 30),))[0][0]
    assert stored in ("2026-11-27 12:00:30", dt.datetime(2026, 11, 27, 12, 0, 30))


def test_migration_0007_gives_each_subscription_with_pending_deliveries_its_due_work_row(
    database_url, clock, subscribe, make_key, config
):
    """The backfill: one row per subscription with pending deliveries, due at the earliest of
    them (a leased one at its lease's end); none for one with only held or finished ones."""
    from partner_api.delivery import lifecycle
    from partner_api.delivery.claims import claim_due_deliveries
    from partner_api.delivery.outbox import publish_event
    from partner_api.delivery.subscriptions import disable_subscription
    from partner_api.models import DueWork

    org = make_key().org.id
    waiting, leased, held, done = (subscribe(org) for _ in range(4))
    start = clock.current
    with database.connection_context():
        for sub in (leased, held, done):
            publish_event(org, "vc.test.ping", {}, subscription_id=sub.id)
        disable_subscription(held.id)
        claims = claim_due_deliveries(10, 600)
        lifecycle.record_outcomes(
            [(c, _OK) for c in claims if c.subscription_id == done.id], config
        )
        for _ in range(2):
            clock.advance(5)
            publish_event(org, "vc.test.ping", {}, subscription_id=waiting.id)
        database.execute_sql("DROP TABLE due_work")
    forget("0007_due_work")
    apply_schema()
    with database.connection_context():
        rows = {row.subscription_id: row.due_at for row in DueWork.select()}
    second = dt.timedelta(seconds=1)
    assert rows == {waiting.id: start + 5 * second, leased.id: start + 600 * second}


def test_connecting_to_an_existing_sqlite_file_never_opens_a_descriptor_of_it(
    tmp_path, monkeypatch
):
    """Only init-db creates the file; a connection to an existing one may open and close no
    descriptor of it, since closing any drops the process's SQLite locks on the file."""
    path = tmp_path / "existing.sqlite3"
    bind(f"sqlite:///{path}")
    apply_schema()
    opened = []
    real_open = os.open

    def spy(file, flags, *args):
        descriptor = real_open(file, flags, *args)  # raises for an existing file with O_EXCL
        opened.append(file)
        return descriptor

    monkeypatch.setattr(db_module.os, "open", spy)
    with database.connection_context():
        database.execute_sql("SELECT 1")
    assert opened == []


def test_break_lock_on_a_database_never_migrated_changes_nothing(make_app, tmp_path):
    path = tmp_path / "empty.sqlite3"
    path.touch()  # a file, but no schema and no migration lock table
    runner = make_app(database_url=f"sqlite:///{path}").test_cli_runner()
    result = runner.invoke(args=["db", "break-lock", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cleared"] is False
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
