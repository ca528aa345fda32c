"""Auto-disable waits for a failure streak that lasted: when the streak began
(webhook_subscriptions.failing_since). A delivery's history survives a replay: attempt numbers
keep counting, the retry schedule starts again after deliveries.attempts_before_replay, and each
successful attempt and each replay (when, by whom) is a row of delivery_history.

Every step checks first, so running it again changes nothing. A migration is history: it reads
the connection yoyo hands it and imports nothing from partner_api.
"""

import sqlite3

from yoyo import step

__depends__ = {"0002_answers_indexes_dispatcher_polls"}

ADDED_COLUMNS = (
    ("webhook_subscriptions", "failing_since", "TIMESTAMP"),
    ("deliveries", "attempts_before_replay", "INTEGER NOT NULL DEFAULT 0"),
)


def columns(conn, table: str) -> set[str]:
    cursor = conn.cursor()
    if isinstance(conn, sqlite3.Connection):
        cursor.execute(f"PRAGMA table_info({table})")
        return {row[1] for row in cursor.fetchall()}
    cursor.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return {row[0] for row in cursor.fetchall()}


def add_columns(conn) -> None:
    """SQLite has no ADD COLUMN IF NOT EXISTS."""
    for table, column, declaration in ADDED_COLUMNS:
        if column not in columns(conn, table):
            conn.cursor().execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


steps = [
    step(add_columns),
    step(
        """
        CREATE TABLE IF NOT EXISTS delivery_history (
            id               TEXT NOT NULL PRIMARY KEY,
            delivery_id      TEXT NOT NULL REFERENCES deliveries (id),
            kind             TEXT NOT NULL,
            at               TIMESTAMP NOT NULL,
            attempt          INTEGER NOT NULL,
            response_status  INTEGER,
            duration_ms      INTEGER,
            actor            TEXT
        )
        """
    ),
    step(
        "CREATE INDEX IF NOT EXISTS delivery_history_delivery ON delivery_history (delivery_id, at)"
    ),
]
