"""Backups (`flask --app wsgi backup PATH`): a consistent online copy of a SQLite database,
private to its owner; on PostgreSQL, how to use pg_dump instead.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from pathlib import Path

from partner_api import db
from partner_api.errors import DomainError

BUSY_TIMEOUT_SECONDS = 30  # a copy waits this long for a writer's checkpoint, as the app does
PG_DUMP_ADVICE = (
    "on PostgreSQL, back up with pg_dump: "
    'pg_dump --format=custom --file=partner-api.dump "$DATABASE_URL" '
    "(restore into a new, empty database with "
    'pg_restore --no-owner --dbname="$NEW_DATABASE_URL" partner-api.dump)'
)


def back_up(target: str) -> dict:
    """Copy the bound database to `target`; returns {"path", "bytes"}. Refuses to overwrite."""
    return db.by_backend(sqlite=_back_up_sqlite, postgres=_refuse_on_postgres)(Path(target))


def _refuse_on_postgres(target: Path) -> dict:
    # The URL is not repeated: it may hold a password.
    raise DomainError("backup_use_pg_dump", PG_DUMP_ADVICE)


def _back_up_sqlite(target: Path) -> dict:
    """SQLite's online backup API, in one step: one read transaction, so the copy is the
    database at one moment while the API and the dispatcher go on writing (WAL readers do not
    block writers)."""
    source = Path(db.database.database)
    if not source.exists():
        raise DomainError("database_missing", f"there is no database at {source} to back up")
    if not target.parent.is_dir():
        raise DomainError(
            "backup_directory_missing", f"the directory {target.parent} does not exist"
        )
    try:
        # O_EXCL: never overwrite, not even a file that appears meanwhile; 0600 from the start,
        # since the copy holds every signing secret.
        descriptor = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise DomainError(
            "backup_target_exists", f"{target} already exists: a backup never overwrites a file"
        ) from None
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    os.fchmod(descriptor, 0o600)  # whatever the umask
    os.close(descriptor)
    try:
        _copy(source, target)
    except OSError as exc:  # a full disk, a read-only filesystem
        target.unlink(missing_ok=True)
        raise _cannot_write(target, exc) from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return {"path": str(target.resolve()), "bytes": target.stat().st_size}


def _cannot_write(target: Path, exc: OSError) -> DomainError:
    return DomainError("backup_failed", f"cannot write {target}: {exc.strerror or exc}")


def _copy(source: Path, target: Path) -> None:
    # mode=rw: the source must exist; a plain connect would create an empty one.
    uri = f"file:{urllib.parse.quote(str(source))}?mode=rw"
    with (
        contextlib.closing(sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS)) as reader,
        contextlib.closing(sqlite3.connect(target)) as writer,
    ):
        reader.backup(writer)  # pages=-1: every page in one step
        # A single file: a copy in WAL mode would need its -wal beside it when moved.
        writer.execute("PRAGMA journal_mode=DELETE")
