"""Storage: schema.sql and the models agree, init-db is idempotent, backend settings."""

import os
import stat

import pytest
from playhouse.pool import PooledPostgresqlDatabase

from partner_api import db as db_module
from partner_api import ids, models
from partner_api.db import apply_schema, database

MODELS = [
    models.Org,
    models.ApiKey,
    models.RateLimitWindow,
    models.Subscription,
    models.Event,
    models.Delivery,
    models.DeliveryFailure,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.table_name)
def test_models_match_schema_sql(database_url, model):
    with database.connection_context():
        columns = {column.name for column in database.get_columns(model._meta.table_name)}
    assert columns == set(model._meta.columns)


def test_init_db_is_idempotent_and_keeps_server_secrets(database_url):
    with database.connection_context():
        secret = db_module.app_secret("cursor_signing_key")
    apply_schema()
    apply_schema()
    with database.connection_context():
        assert db_module.app_secret("cursor_signing_key") == secret
        assert "deliveries_due" in {index.name for index in database.get_indexes("deliveries")}


def test_init_db_command_runs_twice(runner):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and "database ready" in result.output


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path):
    db_module.bind(f"sqlite:///{tmp_path / 'nested' / 'x.sqlite3'}")
    with database.connection_context():
        assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert database.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_postgres_urls_get_a_connection_pool():
    assert isinstance(
        db_module.open_database("postgresql://postgres@127.0.0.1:5432/test"),
        PooledPostgresqlDatabase,
    )
    assert isinstance(
        db_module.open_database("postgres://postgres@127.0.0.1:5432/test"), PooledPostgresqlDatabase
    )


def test_ids_are_prefixed_random_and_recognisable():
    made = {ids.new_id("wh") for _ in range(1000)}
    assert len(made) == 1000
    assert all(ids.looks_like("wh", value) for value in made)
    assert not ids.looks_like("wh", "wh_short")
    assert not ids.looks_like("org", next(iter(made)))


def test_sqlite_directory_and_files_are_created_private_whatever_the_umask(tmp_path):
    path = tmp_path / "instance" / "partner_api.sqlite3"
    old_umask = os.umask(0o022)
    try:
        db_module.bind(f"sqlite:///{path}")
        apply_schema()
        with database.connection_context():
            database.execute_sql("SELECT 1")
            files = [path, *(p for p in path.parent.iterdir() if p != path)]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert f"{path.name}-wal" in modes  # WAL mode: the journal exists and copies the mode
    assert set(modes.values()) == {0o600}, modes
