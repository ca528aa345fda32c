"""Storage: schema.sql and the models agree (names, types, NULLs), init-db is idempotent."""

import os
import stat

import peewee
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
    models.DeliveryHistory,
    models.DueWork,
    models.DispatcherPoll,
]


# Type families of the declared column types: SQLite reports the type as written in schema.sql,
# PostgreSQL its information_schema `data_type`. A type outside these tables is its own family,
# so a drift (say to `timestamp with time zone`) fails the comparison instead of passing.
SQLITE_TYPE_FAMILIES = {
    "TEXT": "text",
    "TIMESTAMP": "timestamp",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "BOOLEAN": "boolean",
}
POSTGRES_TYPE_FAMILIES = {
    "text": "text",
    "timestamp without time zone": "timestamp",
    "integer": "integer",
    "bigint": "bigint",
    "boolean": "boolean",
}
# Most specific first: BigIntegerField is an IntegerField.
FIELD_TYPE_FAMILIES = (
    (peewee.BooleanField, "boolean"),
    (peewee.BigIntegerField, "bigint"),
    (peewee.IntegerField, "integer"),
    (peewee.DateTimeField, "timestamp"),
    (peewee.TextField, "text"),
)


def column_type_family(declared: str) -> str:
    families = POSTGRES_TYPE_FAMILIES if db_module.is_postgres() else SQLITE_TYPE_FAMILIES
    return families.get(declared, f"unknown type {declared!r}")


def field_type_family(field: peewee.Field) -> str:
    if isinstance(field, peewee.ForeignKeyField):
        field = field.rel_field  # the column holds the referenced key
    for field_class, family in FIELD_TYPE_FAMILIES:
        if isinstance(field, field_class):
            return family
    return f"unknown field {type(field).__name__}"


def schema_columns(table: str) -> dict[str, tuple[str, bool, bool]]:
    """column → (type family, nullable, primary key), as the database reports schema.sql."""
    with database.connection_context():
        return {
            column.name: (
                column_type_family(column.data_type),
                # SQLite lets a non-INTEGER primary key hold NULL unless it says NOT NULL, so
                # it reports every `id TEXT PRIMARY KEY` as nullable;
                # test_primary_keys_refuse_null covers that separately.
                column.null and not column.primary_key,
                column.primary_key,
            )
            for column in database.get_columns(table)
        }


def model_columns(model) -> dict[str, tuple[str, bool, bool]]:
    """column → (type family, nullable, primary key), as the peewee model declares it."""
    return {
        name: (field_type_family(field), field.null, field.primary_key)
        for name, field in model._meta.columns.items()
    }


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.table_name)
def test_models_match_schema_sql(database_url, model):
    assert schema_columns(model._meta.table_name) == model_columns(model)


def test_type_and_nullability_drift_is_caught(database_url):
    """The comparison sees more than names: orgs with a zoned timestamp and a nullable name."""
    (create_orgs,) = [
        stmt
        for stmt in db_module.schema_statements()
        if stmt.startswith("CREATE TABLE IF NOT EXISTS orgs (")
    ]
    drifted = (
        create_orgs.replace(" orgs (", " orgs_drifted (")
        .replace("name        TEXT NOT NULL", "name        TEXT")
        .replace("created_at  TIMESTAMP NOT NULL", "created_at  TIMESTAMP WITH TIME ZONE NOT NULL")
    )
    assert drifted.count("orgs_drifted") == 1 and "WITH TIME ZONE" in drifted
    with database.connection_context():
        database.execute_sql(drifted)
    try:
        declared, expected = schema_columns("orgs_drifted"), model_columns(models.Org)
    finally:
        with database.connection_context():
            database.execute_sql("DROP TABLE orgs_drifted")
    assert set(declared) == set(expected)
    assert {name for name in expected if declared[name] != expected[name]} == {
        "name",
        "created_at",
    }
    assert declared["name"] == ("text", True, False)
    assert declared["created_at"][0].startswith("unknown type")


# Rows complete but for their key, in tables without foreign keys (a dangling reference would
# be refused for that reason instead). Every table's key is declared the same way.
ROWS_WITHOUT_KEY = {
    "orgs": {"id": None, "name": "Acme", "created_at": "2026-11-27 12:00:00"},
    "app_secrets": {"name": None, "value": "x"},
}


@pytest.mark.parametrize("table", ROWS_WITHOUT_KEY)
def test_primary_keys_refuse_null(database_url, table):
    # SQLite lets a TEXT PRIMARY KEY hold NULL unless it is declared NOT NULL as well.
    row = ROWS_WITHOUT_KEY[table]
    placeholders = ", ".join([database.param] * len(row))
    # Table and column names come from ROWS_WITHOUT_KEY above; the values are parameters.
    insert = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({placeholders})"  # noqa: S608
    count = f"SELECT COUNT(*) FROM {table}"  # noqa: S608
    with database.connection_context():
        before = database.execute_sql(count).fetchone()[0]
        with pytest.raises(peewee.IntegrityError), database.atomic():
            database.execute_sql(insert, tuple(row.values()))
        assert database.execute_sql(count).fetchone()[0] == before


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
    apply_schema()  # creates the file: connecting never does
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
