"""The database: one peewee DatabaseProxy, transactions and row locks, the end-of-request
release, and `init-db` (the migrations themselves are partner_api/migrations.py's).

Backend differences live here: SQLite's pragmas, private file and long-lived connections;
PostgreSQL's pool and reconnection; the write lock (`write_transaction`) and row locks
(`locked`). On PostgreSQL nothing outlives a transaction on the server (no prepared statement,
`SET`, advisory lock or temporary table), so every statement works through PgBouncer in
transaction pooling mode. A statement that must differ by backend (the key lookup that also
counts the hit on PostgreSQL, the claim's lease) is written as two small functions where its
SQL belongs, and `by_backend` picks one: no other module asks which backend is in use
(tests/test_layout.py checks it).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import re
import secrets
import select
import threading
from pathlib import Path

import peewee
import psycopg2
import psycopg2.extensions
from peewee import DatabaseProxy, PostgresqlDatabase, SqliteDatabase
from playhouse import db_url
from playhouse.pool import PooledPostgresqlDatabase

from partner_api.config import ROOT, without_passwords

database = DatabaseProxy()
_bound_url: str | None = None  # what `database` was bound to, for yoyo's own connections
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=_-]*")


class _RedactSecrets(logging.Filter):
    """peewee logs each statement with its parameters at DEBUG, and the INSERT of a new
    subscription carries its signing secret: redact it so no log ever holds one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "whsec_" in message:
            record.msg, record.args = _WEBHOOK_SECRET.sub("whsec_[redacted]", message), ()
        return True


logging.getLogger("peewee").addFilter(_RedactSecrets())
SCHEMA_PATH = ROOT / "schema.sql"
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10000,
    "foreign_keys": 1,
    "synchronous": "normal",
}


class ReconnectingPostgresqlDatabase(PooledPostgresqlDatabase):
    """A pool that survives a PostgreSQL restart or `pg_terminate_backend`.

    The pool hands out no connection whose server has hung up (checked without a round trip).
    A connection lost while a statement runs fails it; that drops the connection and the idle
    ones (they went down with it), and a repeatable statement outside a transaction runs once
    more on a fresh connection: a read, or a write its caller declared safe to repeat
    (`execute_repeatable`). psycopg2 cannot tell whether a lost statement committed, so other
    writes are not repeated (the caller gets 503).
    """

    def execute_sql(self, sql, params=None):
        run = functools.partial(super().execute_sql, sql, params)
        return self._reconnecting(run, repeatable=sql.lstrip()[:6].upper() == "SELECT")

    def execute_repeatable(self, sql: str, params: tuple):
        """Run `sql`, a write whose caller accepts it running twice: outside a transaction, a
        connection lost while it ran makes it run again on a fresh one."""
        run = functools.partial(super().execute_sql, sql, params)
        return self._reconnecting(run, repeatable=True)

    def _reconnecting(self, run, repeatable: bool):
        if self.is_closed():
            # Outside the retry: a server that refuses a new connection is asked once per
            # statement, not twice (the pool never hands out a connection it has seen die).
            self.connect()
        try:
            return run()
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            # Inside a transaction the failure unwinds it first; the request's end drops the
            # connection (release_connection).
            if self.transaction_depth() > 0 or not self.connection_lost():
                raise
            self.discard_connections()
            never_sent = isinstance(exc.args[0] if exc.args else None, psycopg2.InterfaceError)
            if not (repeatable or never_sent):
                raise
            return run()

    def _is_closed(self, conn) -> bool:
        """Checked as the pool hands out a connection: also closed if the server hung up."""
        if super()._is_closed(conn):
            return True
        # A server that ended the session (a restart, pg_terminate_backend) has sent its last
        # message or closed the socket, so it is readable while no statement is in flight: a
        # check without a round trip. It keeps the first request after a restart from failing
        # its first statement, which may be a write that cannot safely be repeated. poll, not
        # select: a busy process may hold descriptors above select's limit of 1024.
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def connection_lost(self) -> bool:
        """The connection of this thread is closed or its server went away."""
        conn = self._state.conn
        if conn is None or conn.closed:
            return True
        return conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN

    def discard_connections(self) -> None:
        """Close this thread's connection without pooling it, and every idle pooled one."""
        if not self.is_closed():
            self.manual_close()
        self.close_idle()


MISSING_DATABASE = "the database does not exist: run `flask --app wsgi init-db`"


class DatabaseMissing(peewee.OperationalError):
    """The SQLite file is not there: only init-db creates it."""


class DatabaseInaccessible(peewee.OperationalError):
    """The SQLite file or its directory does not allow what SQLite needs, or cannot be
    created; the message names the path and the permission."""


class ExistingSqliteDatabase(SqliteDatabase):
    """SQLite that never creates its file on connect, and says which permission is missing.

    sqlite3 creates a missing file silently, so a mistyped path or a command run from the
    wrong directory would read (and leave behind) an empty database and report plausible
    zeros. Only `apply_schema` (init-db) creates the file, private; everything else refuses.
    """

    def _connect(self):
        # A stat and two access checks per connection: connections are kept for a thread's
        # life (see kept_connection), so this is not per request.
        path = Path(self.database)
        if not path.exists():
            raise DatabaseMissing(MISSING_DATABASE)
        problem = sqlite_access_problem(path)
        if problem is not None:
            raise DatabaseInaccessible(problem)
        return super()._connect()


def sqlite_access_problem(path: Path) -> str | None:
    """Why this process cannot use the existing SQLite file at `path`, in one line, or None.

    SQLite writes beside the file (`-wal`, `-shm`) even to read it, so its directory must be
    writable as well as the file; without that sqlite3 says only "attempt to write a readonly
    database" or "unable to open database file"."""
    if path.is_dir():
        return f"the database path {path} is a directory, not a SQLite file"
    if not os.access(path, os.R_OK | os.W_OK):
        return (
            f"permission denied: the database file {path} needs read and write permission "
            f"for {_user()}"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return (
            f"permission denied: the database directory {path.parent} needs write permission "
            f"for {_user()} (SQLite writes its -wal and -shm files there)"
        )
    return None


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _cannot_create(path: Path, exc: OSError) -> DatabaseInaccessible:
    """init-db could not create the database's directory or file: which, and why."""
    failed = Path(exc.filename) if exc.filename else path
    kind = "file" if failed == path else "directory"
    if isinstance(exc, PermissionError):
        return DatabaseInaccessible(
            f"permission denied: cannot create the database {kind} {failed}: "
            f"{failed.parent} needs write permission for {_user()}"
        )
    return DatabaseInaccessible(
        f"cannot create the database {kind} {failed}: {(exc.strerror or str(exc)).lower()}"
    )


def open_database(url: str, max_connections: int = 32):
    """A peewee database for a DATABASE_URL: SQLite (WAL, busy timeout) or pooled PostgreSQL.

    Nothing is created or connected here; a missing SQLite file fails the first connection."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return ExistingSqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS)
    return ReconnectingPostgresqlDatabase(
        **db_url.parse(url), max_connections=max_connections, stale_timeout=300, timeout=10
    )


def _create_private(path: Path) -> None:
    """Create the SQLite file's directory (0700) and the file (0600) when missing.

    The file holds every signing secret; SQLite would create it with the umask (often 0644),
    and its -wal/-shm files copy the database file's mode. Existing files are left alone.
    """
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        # Not opened at all: closing any descriptor of a file drops every POSIX lock this
        # process holds on it, which SQLite's other connections rely on ("disk I/O error").
        return
    except OSError as exc:
        raise _cannot_create(path, exc) from None
    os.close(descriptor)


def bind(url: str, max_connections: int = 32) -> None:
    """Point the proxy at the database named by `url` (closing any previous one)."""
    if database.obj is not None and not database.is_closed():
        database.close()
    if database.obj is not None and hasattr(database.obj, "close_all"):
        database.obj.close_all()
    database.initialize(open_database(url, max_connections))
    global _bound_url
    _bound_url = url


def bound_url() -> str:
    """The DATABASE_URL the proxy is bound to (migrations open their own connection to it)."""
    if _bound_url is None:
        raise RuntimeError("no database is bound")
    return _bound_url


def database_file_missing() -> bool:
    """SQLite: the bound database's file does not exist yet. PostgreSQL: never (the server
    says what is there)."""
    return by_backend(sqlite=lambda: not Path(database.database).exists(), postgres=lambda: False)()


def is_postgres() -> bool:
    return isinstance(database.obj, PostgresqlDatabase)


def is_sqlite() -> bool:
    return isinstance(database.obj, SqliteDatabase)


def by_backend(*, sqlite, postgres):
    """The variant for the backend in use. A statement that differs by backend is written as
    two small functions side by side where its SQL belongs (each tested on its backend), and
    this picks one: no other module asks which backend is in use."""
    return postgres if is_postgres() else sqlite


@contextlib.contextmanager
def kept_connection():
    """The calling thread's connection, kept open between uses (opening a SQLite connection,
    and closing the last one, which checkpoints the WAL, cost more than the work itself) and
    dropped after a database error so the next use reconnects."""
    database.connect(reuse_if_open=True)
    try:
        yield
    except (peewee.DatabaseError, peewee.InterfaceError):
        with contextlib.suppress(Exception):
            database.close()
        raise


@contextlib.contextmanager
def write_transaction():
    """A transaction that takes the write lock up front on SQLite (BEGIN IMMEDIATE), so
    read-then-write sequences cannot interleave or fail late with 'database is locked'.

    What `after_commit` was given inside it runs once the outermost one has committed."""
    outermost = database.transaction_depth() == 0
    if outermost:
        _commit_hooks.pending = []
    try:
        with database.atomic("IMMEDIATE") if is_sqlite() else database.atomic():
            yield
    except BaseException:
        if outermost:
            _commit_hooks.pending = None  # rolled back: nothing of it happened
        raise
    if outermost:
        pending, _commit_hooks.pending = _commit_hooks.pending, None
        for callback in pending:
            callback()


_commit_hooks = threading.local()  # per thread: the callbacks waiting for its commit


def after_commit(callback) -> None:
    """Run `callback()` once the calling thread's write_transaction commits (at once outside
    one), and once however often it was given; never if it rolls back. A savepoint rolled
    back inside it does not withdraw it."""
    pending = getattr(_commit_hooks, "pending", None)
    if pending is None:
        callback()
    elif callback not in pending:
        pending.append(callback)


def locked(query, clause: str = "FOR UPDATE"):
    """`query`, locking the rows it reads until commit on PostgreSQL. On SQLite this is the
    query unchanged: write_transaction's BEGIN IMMEDIATE already holds the whole database."""
    return query.for_update(clause) if is_postgres() else query


def schema_statements() -> list[str]:
    """The statements of schema.sql, comments removed."""
    lines = [
        line for line in SCHEMA_PATH.read_text().splitlines() if not line.strip().startswith("--")
    ]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def apply_schema(lock_timeout: float | None = None) -> list[str]:
    """Create or upgrade the database to the newest migration, then the server secrets; safe
    to run again, and from several hosts at once. Returns the ids of the migrations applied."""
    from partner_api import migrations  # it builds on this module

    if is_sqlite():  # the one place a SQLite file is created: private, before yoyo opens it
        _create_private(Path(database.database))
    with database.connection_context():
        pass  # the pragmas (WAL mode) are set before yoyo opens its own connection
    timeout = migrations.DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    applied = migrations.migrate(bound_url(), timeout)
    with database.connection_context(), database.atomic():
        database.execute_sql(
            f"INSERT INTO app_secrets (name, value) VALUES ({database.param}, {database.param}) "
            "ON CONFLICT (name) DO NOTHING",
            ("cursor_signing_key", secrets.token_hex(32)),
        )
    return applied


def drop_tables() -> None:
    """Drop every table schema.sql creates, and the migrations' record of them: for test and
    benchmark scratch databases only."""
    from partner_api.migrations import YOYO_TABLES

    if database_file_missing():
        return  # a SQLite file not made yet has nothing to drop (and connecting would refuse)
    names = [
        re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", stmt).group(1)
        for stmt in schema_statements()
        if stmt.startswith("CREATE TABLE")
    ] + list(YOYO_TABLES)
    cascade = " CASCADE" if is_postgres() else ""
    with database.connection_context():
        for name in reversed(names):  # dependants first
            database.execute_sql(f"DROP TABLE IF EXISTS {name}{cascade}")


def app_secret(name: str) -> str:
    """A server secret created by init-db."""
    cursor = database.execute_sql(
        f"SELECT value FROM app_secrets WHERE name = {database.param}",
        (name,),
    )
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the database is not initialised: run `flask --app wsgi init-db`")
    return row[0]


def error_line(exc: Exception) -> str:
    """The first line of a database error's message, never with the database's password (a
    driver may repeat its connection settings)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return without_passwords(text, _bound_url) if _bound_url else text


def database_problem(exc: Exception) -> str:
    """One line for an operator about a database failure."""
    if isinstance(exc, DatabaseMissing | DatabaseInaccessible):
        return str(exc)
    text = error_line(exc)
    if "no such column" in text or ("column" in text and "does not exist" in text):
        return "the database schema is behind this code: run `flask --app wsgi init-db`"
    if "no such table" in text or "does not exist" in text:
        return "the database is not initialised: run `flask --app wsgi init-db`"
    return f"database error: {text}"


def check_schema() -> None:
    """Raise RuntimeError (one clear line) unless the schema is the one this code expects:
    every migration it knows applied, none it does not know, and init-db's secrets there."""
    from partner_api import migrations  # it builds on this module

    if database_file_missing():
        raise RuntimeError(MISSING_DATABASE)
    try:
        with database.connection_context():
            status = migrations.migration_status()
            if not status.applied:  # nothing ever ran here: not an older schema, none at all
                raise RuntimeError(
                    f"the database is not initialised: run `{migrations.INIT_DB_COMMAND}`"
                )
            problem = status.problem()
            if problem is None:
                app_secret("cursor_signing_key")
    except peewee.DatabaseError as exc:
        raise RuntimeError(database_problem(exc)) from None
    if problem is not None:
        raise RuntimeError(problem.message)


def release_connection() -> None:
    """End of a request: give a PostgreSQL connection back to the pool; keep SQLite's open.

    Closing the last SQLite connection to a WAL database checkpoints it, and the next request
    would open one and set its pragmas again: together most of a small request's time. The
    connection is the thread's own, in autocommit mode, so it carries no state between requests
    unless a transaction was left open, which is rolled back here.
    """
    db = database.obj  # once: every attribute read through the proxy costs a call
    if db is None or db.is_closed():
        return
    if isinstance(db, SqliteDatabase):
        if db.connection().in_transaction:
            db.rollback()
        return
    if db.connection_lost():
        db.discard_connections()
    else:
        db.close()


def init_app(app) -> None:
    """Release each request's connection at its end (the admin CLI adds `init-db`).

    No hook connects up front: peewee connects on a request's first statement (from the pool on
    PostgreSQL; SQLite's stays open), so a request that reads nothing, like a health check or a
    scrape, takes no connection, and a database that does not answer fails that statement,
    which the error handlers turn into 503."""

    @app.teardown_appcontext
    def _release(exc):
        release_connection()
