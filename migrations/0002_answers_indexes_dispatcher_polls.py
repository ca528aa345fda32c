"""From the first release's schema to 1.1's: a delivery keeps the answer that delivered it,
dead_lettered is declared BOOLEAN, indexes for the claim, retention and `stats`, and the
dispatcher_polls table.

Databases upgraded by init-db before migrations existed already have some of this, so every
step checks first. A migration is history: it reads the connection yoyo hands it and imports
nothing from partner_api, whose code will have moved on by the time an old database upgrades.
"""

import sqlite3

from yoyo import step

__depends__ = {"0001_first_release"}

# Columns schema.sql gained after the first release: (table, column, type).
ADDED_COLUMNS = (
    ("deliveries", "response_status", "INTEGER"),
    ("deliveries", "duration_ms", "INTEGER"),
)

# delivery_failures as schema.sql declares it now (SQLite rebuilds the table into this).
DELIVERY_FAILURES = """
    CREATE TABLE delivery_failures (
        id                 TEXT NOT NULL PRIMARY KEY,
        delivery_id        TEXT NOT NULL REFERENCES deliveries (id),
        subscription_id    TEXT NOT NULL REFERENCES webhook_subscriptions (id),
        event_id           TEXT NOT NULL REFERENCES events (id),
        event_type         TEXT NOT NULL,
        attempt            INTEGER NOT NULL,
        attempted_at       TIMESTAMP NOT NULL,
        duration_ms        INTEGER NOT NULL,
        error_kind         TEXT NOT NULL,
        error_message      TEXT NOT NULL,
        response_status    INTEGER,
        response_excerpt   TEXT,
        next_attempt_at    TIMESTAMP,
        dead_lettered      BOOLEAN NOT NULL
    )
"""
DELIVERY_FAILURES_COLUMNS = (
    "id, delivery_id, subscription_id, event_id, event_type, attempt, attempted_at, "
    "duration_ms, error_kind, error_message, response_status, response_excerpt, "
    "next_attempt_at, dead_lettered"
)


def column_types(conn, table: str) -> dict[str, str]:
    """column → declared type (lower case) of `table`, on a DB-API connection of either kind."""
    cursor = conn.cursor()
    if isinstance(conn, sqlite3.Connection):
        cursor.execute(f"PRAGMA table_info({table})")
        return {row[1]: row[2].lower() for row in cursor.fetchall()}
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return dict(cursor.fetchall())


def add_delivery_answer_columns(conn) -> None:
    """The answer to the attempt that delivered it (SQLite has no ADD COLUMN IF NOT EXISTS)."""
    for table, column, kind in ADDED_COLUMNS:
        if column not in column_types(conn, table):
            conn.cursor().execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def make_dead_lettered_boolean(conn) -> None:
    """dead_lettered was declared INTEGER. PostgreSQL changes the type in place; SQLite (which
    stores 0/1 either way) cannot change a declared type, so the table is rebuilt as schema.sql
    declares it, which also makes its key NOT NULL there."""
    if column_types(conn, "delivery_failures")["dead_lettered"] != "integer":
        return
    cursor = conn.cursor()
    if not isinstance(conn, sqlite3.Connection):
        cursor.execute(
            "ALTER TABLE delivery_failures ALTER COLUMN dead_lettered TYPE BOOLEAN "
            "USING dead_lettered <> 0"
        )
        return
    # SQLite's documented way to change a column: copy into a new table, swap the names.
    # No table refers to delivery_failures, so dropping the old one breaks no reference.
    cursor.execute(DELIVERY_FAILURES.replace("delivery_failures", "delivery_failures_new", 1))
    cursor.execute(
        f"INSERT INTO delivery_failures_new ({DELIVERY_FAILURES_COLUMNS}) "  # noqa: S608
        f"SELECT {DELIVERY_FAILURES_COLUMNS} FROM delivery_failures"
    )
    cursor.execute("DROP TABLE delivery_failures")
    cursor.execute("ALTER TABLE delivery_failures_new RENAME TO delivery_failures")
    cursor.execute(
        "CREATE INDEX IF NOT EXISTS delivery_failures_subscription_time "
        "ON delivery_failures (subscription_id, attempted_at, id)"
    )


steps = [
    step(add_delivery_answer_columns),
    step(make_dead_lettered_boolean),
    step("CREATE INDEX IF NOT EXISTS events_occurred ON events (occurred_at, id)"),
    # The claim's per-subscription probe needs next_attempt_at too: the wider index replaces it.
    step("DROP INDEX IF EXISTS deliveries_subscription"),
    step(
        "CREATE INDEX IF NOT EXISTS deliveries_subscription_due "
        "ON deliveries (subscription_id, status, next_attempt_at)"
    ),
    step("CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id)"),
    step(
        "CREATE INDEX IF NOT EXISTS delivery_failures_delivery ON delivery_failures (delivery_id)"
    ),
    step("CREATE INDEX IF NOT EXISTS delivery_failures_event ON delivery_failures (event_id)"),
    step("CREATE INDEX IF NOT EXISTS delivery_failures_time ON delivery_failures (attempted_at)"),
    step(
        """
        CREATE TABLE IF NOT EXISTS dispatcher_polls (
            dispatcher_id  TEXT PRIMARY KEY,
            hostname       TEXT NOT NULL,
            pid            INTEGER NOT NULL,
            started_at     TIMESTAMP NOT NULL,
            last_poll_at   TIMESTAMP NOT NULL
        )
        """
    ),
    step("CREATE INDEX IF NOT EXISTS dispatcher_polls_last ON dispatcher_polls (last_poll_at)"),
]
