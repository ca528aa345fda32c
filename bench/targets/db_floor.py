"""A second baseline: the bare route plus the very statements `GET /me` runs for its key, sent
with the database driver directly (no auth parsing, no Flask extension, no log line, no metric).

What it serves per second is the most any `/me` that looks its key up and counts the hit in the
database can reach on this machine: `bench/api.py` prints its ratio to the bare route
beside `/me`'s. Reads BENCH_DATABASE_URL and BENCH_TOKEN_HASH; one connection per worker.
"""

import os
import sqlite3
import time

import psycopg2
from flask import Flask

from partner_api.db import SQLITE_PRAGMAS
from partner_api.web.auth import LOOKUP_AND_COUNT_POSTGRES, LOOKUP_SQLITE
from partner_api.web.ratelimit import upsert_sql, window_start

app = Flask(__name__)
_URL = os.environ["BENCH_DATABASE_URL"]
_TOKEN_HASH = os.environ["BENCH_TOKEN_HASH"]
_COUNT_SQLITE = upsert_sql("VALUES (?, ?, 1)")
_connection = None


def _connect():
    if _URL.startswith("sqlite:///"):
        conn = sqlite3.connect(_URL[len("sqlite:///") :], isolation_level=None)
        for name, value in SQLITE_PRAGMAS.items():
            conn.execute(f"PRAGMA {name} = {value}")
        return conn
    conn = psycopg2.connect(_URL)
    conn.autocommit = True
    return conn


def _lookup_and_count() -> int:
    global _connection
    if _connection is None:
        _connection = _connect()
    window = window_start(int(time.time()))
    if isinstance(_connection, sqlite3.Connection):  # a read, then the counting write
        row = _connection.execute(
            LOOKUP_SQLITE, {"token_hash": _TOKEN_HASH, "window": window}
        ).fetchall()[0]
        return _connection.execute(_COUNT_SQLITE, (row[0], window)).fetchall()[0][0]
    with _connection.cursor() as cursor:  # one round trip does both
        params = {"token_hash": _TOKEN_HASH, "window": window, "limit": 1_000_000}
        cursor.execute(LOOKUP_AND_COUNT_POSTGRES, params)
        return cursor.fetchall()[0][-1]


@app.get("/api/v1/partner/me")
def me():
    hits = _lookup_and_count()
    return {"org": {"id": "org_bench", "name": "bench"}, "hits": hits}
