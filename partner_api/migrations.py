"""Versioned schema migrations (yoyo-migrations, files in migrations/): which exist, which a
database has applied, applying the pending ones under a lock, and the refusals around them.

yoyo records what it applied in `_yoyo_migration` (and every run in `_yoyo_log`); `yoyo_lock`
holds one row while a host migrates, so several hosts running init-db at once apply each
migration once. Reading the status goes through peewee and never writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import sqlite3

from yoyo import exceptions as yoyo_exceptions
from yoyo import read_migrations
from yoyo.backends import PostgresqlBackend, SQLiteBackend
from yoyo.connections import parse_uri
from yoyo.migrations import default_migration_table

from partner_api import db
from partner_api.config import ROOT
from partner_api.errors import DomainError

MIGRATIONS_DIR = ROOT / "migrations"
MIGRATION_TABLE = default_migration_table
# yoyo's own tables: the test and benchmark scratch databases drop them with ours.
YOYO_TABLES = (MIGRATION_TABLE, "_yoyo_log", "_yoyo_version", "yoyo_lock")
DEFAULT_LOCK_TIMEOUT = 60  # seconds init-db waits for another host's migration to finish
BREAK_LOCK_COMMAND = "flask --app wsgi db break-lock"
INIT_DB_COMMAND = "flask --app wsgi init-db"

# init-db says which migrations it applied; yoyo's line per step would bury that.
logging.getLogger("yoyo").setLevel(logging.WARNING)
# The registries yoyo's SQLite backend changes (see _SQLiteBackend), as they are at import.
_SQLITE_ADAPTERS = sqlite3.adapters
_SQLITE_CONVERTERS = sqlite3.converters


class MigrationError(DomainError):
    """A refusal to migrate, or to run on a schema that is not the code's."""


@dataclasses.dataclass(frozen=True)
class AppliedMigration:
    id: str
    applied_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class MigrationStatus:
    """What a database has applied, what this code would apply, and what it does not know."""

    applied: tuple[AppliedMigration, ...]
    pending: tuple[str, ...]
    unknown: tuple[str, ...]  # applied by a newer release of the code

    def problem(self) -> MigrationError | None:
        """Why the code cannot run on this database, or None when the schema is at its head."""
        if self.unknown:
            return newer_than_code(self.unknown)
        if self.pending:
            return MigrationError(
                "migrations_pending",
                f"the database schema is behind this code ({len(self.pending)} migration(s) "
                f"pending: {', '.join(self.pending)}): run `{INIT_DB_COMMAND}`",
            )
        return None


def newer_than_code(unknown) -> MigrationError:
    return MigrationError(
        "database_newer_than_code",
        "the database is newer than this code: it has migration(s) "
        f"{', '.join(unknown)} that this release does not know; run the release that applied "
        "them (a downgrade is not supported: restore a backup taken before the upgrade instead)",
    )


@functools.cache
def known_migration_ids() -> tuple[str, ...]:
    """The ids of migrations/ in the order they apply (the files do not change while we run)."""
    return tuple(migration.id for migration in read_migrations(str(MIGRATIONS_DIR)))


def migration_status() -> MigrationStatus:
    """Read-only: the bound database's migrations (inside a connection; writes nothing)."""
    applied = _applied_migrations()
    applied_ids = {migration.id for migration in applied}
    known = known_migration_ids()
    return MigrationStatus(
        applied=tuple(applied),
        pending=tuple(mid for mid in known if mid not in applied_ids),
        unknown=tuple(m.id for m in applied if m.id not in known),
    )


def _applied_migrations() -> list[AppliedMigration]:
    if not db.database.table_exists(MIGRATION_TABLE):
        return []  # never migrated: a new database, or one made before migrations existed
    cursor = db.database.execute_sql(
        f"SELECT migration_id, applied_at_utc FROM {MIGRATION_TABLE} "  # noqa: S608 (a constant)
        "ORDER BY applied_at_utc, migration_id"
    )
    return [AppliedMigration(mid, _timestamp(at)) for mid, at in cursor.fetchall()]


def _timestamp(value) -> dt.datetime:
    """yoyo stores ISO 8601 text on SQLite and a TIMESTAMP on PostgreSQL."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


class _SQLiteBackend(SQLiteBackend):
    """yoyo's SQLite backend, leaving sqlite3's adapters and converters as it found them.

    While a migration runs, yoyo registers its own datetime adapter (ISO 8601 with a `T`) for
    the whole process, and on leaving rebinds `sqlite3.adapters` to a copy instead of undoing
    the registration: peewee's connections in the same process (tests, benchmarks) would then
    store timestamps in another format, which sorts differently. Put the registries back.
    """

    def __enter__(self):
        self._saved_registries = (dict(_SQLITE_ADAPTERS), dict(_SQLITE_CONVERTERS))
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            return super().__exit__(exc_type, exc_value, traceback)
        finally:
            for live, saved in zip(
                (_SQLITE_ADAPTERS, _SQLITE_CONVERTERS), self._saved_registries, strict=True
            ):
                live.clear()
                live.update(saved)
            sqlite3.adapters, sqlite3.converters = _SQLITE_ADAPTERS, _SQLITE_CONVERTERS


def _open_backend(url: str):
    """A yoyo backend on its own connection to the database at `url` (the bound one)."""
    backend_class = db.by_backend(sqlite=_SQLiteBackend, postgres=PostgresqlBackend)
    backend = backend_class(parse_uri(url), MIGRATION_TABLE)
    backend.init_database()  # creates yoyo_lock if missing
    return backend


def migrate(url: str, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> list[str]:
    """Apply the pending migrations to the database at `url`; returns the ids applied.

    Under yoyo's lock, so a second host waits and then finds nothing to do. A database that
    has applied a migration this code does not know is refused and left unchanged."""
    with _open_backend(url) as backend:
        try:
            with backend.lock(lock_timeout):
                migrations = read_migrations(str(MIGRATIONS_DIR))
                known = {migration.hash for migration in migrations}
                applied = _applied_ids(backend)
                unknown = [mid for mid_hash, mid in applied if mid_hash not in known]
                if unknown:
                    raise newer_than_code(unknown)
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
                return [migration.id for migration in pending]
        except yoyo_exceptions.LockTimeout:
            raise _lock_held(backend, lock_timeout) from None


def _applied_ids(backend) -> list[tuple[str, str]]:
    """(hash, id) of every migration the database has applied, read through yoyo."""
    backend.ensure_internal_schema_updated()
    cursor = backend.execute(
        f"SELECT migration_hash, migration_id FROM {backend.migration_table_quoted}"  # noqa: S608
    )
    return list(cursor.fetchall())


def _lock_held(backend, lock_timeout: float) -> MigrationError:
    lock_row = f"SELECT pid, ctime FROM {backend.lock_table_quoted}"  # noqa: S608 (yoyo's name)
    row = backend.execute(lock_row).fetchone()
    holder = f" (process {row[0]}, since {row[1]} UTC)" if row else ""
    return MigrationError(
        "migration_lock_held",
        f"another init-db holds the migration lock{holder} and did not finish within "
        f"{lock_timeout:g} s; if none is running on any host, a killed one left it: clear it "
        f"with `{BREAK_LOCK_COMMAND}` and run init-db again",
    )


def break_lock(url: str) -> bool:
    """Remove a migration lock left by a killed init-db; True when there was one."""
    with db.database.connection_context():
        migrated = db.database.table_exists("yoyo_lock")
    if not migrated:
        return False  # never migrated here: there is no lock to clear, and none is made
    with _open_backend(url) as backend:
        count = f"SELECT COUNT(*) FROM {backend.lock_table_quoted}"  # noqa: S608 (yoyo's name)
        held = backend.execute(count).fetchone()[0]
        backend.break_lock()
        return bool(held)
