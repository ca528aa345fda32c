"""The delivery log's page time against how many deliveries the subscription has, with its
indexes and without them.

Usage: .venv/bin/python -m bench.delivery_log [--deliveries 1000,1000000] [--postgres URL]

For each size it fills a fresh database with that many deliveries of one subscription (mostly
delivered, some dead-lettered, a few pending after a failed attempt), then times three pages of
`GET /webhooks/{id}/deliveries` through its work function: the first page, a deep page (its
cursor 90% of the way down) and the first page of `?status=dead_lettered`. The baseline is the
same database without deliveries_subscription_created and deliveries_subscription_status_created
(what the log would read before migration 0004), in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time

from bench import scratch_backends
from partner_api import clock, ids
from partner_api.db import apply_schema, bind, database, drop_tables
from partner_api.delivery import delivery_log
from partner_api.models import DeliveryFailure, Event, Org, Subscription
from partner_api.pagination import encode_cursor

LIMIT = 20
ROUNDS = 10
CHUNK = 2000  # rows per INSERT: under both backends' limit on bound parameters
NEW_INDEXES = ("deliveries_subscription_created", "deliveries_subscription_status_created")
SUB = ids.new_id("wh")
DELIVERY_COLUMNS = (
    "id, event_id, subscription_id, status, attempts, next_attempt_at, created_at, "
    "delivered_at, response_status"
)


def delivery_row(n: int, start: dt.datetime) -> tuple:
    """The n-th delivery, one a tenth of a second after the one before: 1% pending after a
    failed attempt, 4% dead-lettered, the rest delivered."""
    created = start + dt.timedelta(milliseconds=100 * n)
    if n % 100 == 0:
        return (f"dlv_{n:026d}", "evt_bench", SUB, "pending", 1, created, created, None, None)
    if n % 25 == 0:
        return (f"dlv_{n:026d}", "evt_bench", SUB, "dead_lettered", 7, created, created, None, None)
    return (f"dlv_{n:026d}", "evt_bench", SUB, "delivered", 1, created, created, created, 200)


def failure_row(n: int, start: dt.datetime) -> dict:
    """The failed attempt of the n-th (pending) delivery."""
    at = start + dt.timedelta(milliseconds=100 * n + 50)
    return {
        "id": ids.new_id("att"),
        "delivery": f"dlv_{n:026d}",
        "subscription": SUB,
        "event": "evt_bench",
        "event_type": "vc.test.ping",
        "attempt": 1,
        "attempted_at": at,
        "duration_ms": 5,
        "error_kind": "http_status",
        "error_message": "Receiver answered HTTP 503",
        "response_status": 503,
        "next_attempt_at": at + dt.timedelta(minutes=5),
        "dead_lettered": False,
    }


def insert_deliveries(rows: list[tuple]) -> None:
    """One multi-row INSERT written out: building it with the query builder took most of a
    million-row fill."""
    values = "(" + ", ".join([database.param] * len(rows[0])) + ")"
    rows_sql = ", ".join([values] * len(rows))  # placeholders only: the values are bound
    sql = f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES {rows_sql}"  # noqa: S608
    database.execute_sql(sql, [value for row in rows for value in row])


def fill(size: int) -> dt.datetime:
    """The org, subscription, event and `size` deliveries; returns when the first was made."""
    start = clock.now() - dt.timedelta(milliseconds=100 * size)
    with database.atomic():
        Org.create(id="org_bench", name="bench", created_at=start)
        Subscription.create(
            id=SUB,
            org="org_bench",
            url="https://example.com/",
            events=["*"],
            description="",
            secret="s",
            status="enabled",
            consecutive_failures=0,
            created_at=start,
        )
        Event.create(
            id="evt_bench", org="org_bench", type="vc.test.ping", data={}, occurred_at=start
        )
    for first in range(0, size, CHUNK):
        numbers = range(first, min(first + CHUNK, size))
        with database.atomic():
            insert_deliveries([delivery_row(n, start) for n in numbers])
            failures = [failure_row(n, start) for n in numbers if n % 100 == 0]
            DeliveryFailure.insert_many(failures).execute()
    return start


def median_ms(page) -> float:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        result = page()
        samples.append(time.perf_counter() - started)
        assert len(result["data"]) == LIMIT
    return statistics.median(samples) * 1000


def time_pages(size: int, start: dt.datetime) -> dict[str, float]:
    # The cursor a client would hold 90% of the way down (newest first).
    deep = delivery_row(size // 10, start)
    cursor = encode_cursor(delivery_log.list_name(SUB, None), deep[6], deep[0])

    def page(status=None, cursor=None):
        return lambda: delivery_log.list_deliveries("org_bench", SUB, status, LIMIT, cursor)

    return {
        "first page": median_ms(page()),
        "deep page": median_ms(page(cursor=cursor)),
        "dead_lettered": median_ms(page(status="dead_lettered")),
    }


def run(url: str, size: int, indexed: bool) -> dict[str, float]:
    bind(url)
    apply_schema()  # a new SQLite file must exist before its tables can be dropped
    drop_tables()
    apply_schema()
    with database.connection_context():
        start = fill(size)
        if not indexed:
            for index in NEW_INDEXES:
                database.execute_sql(f"DROP INDEX {index}")
        database.execute_sql("ANALYZE")
        return time_pages(size, start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", default="1000,1000000")
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL")
    args = parser.parse_args()
    sizes = [int(size) for size in args.deliveries.split(",")]
    print(f"median ms for a page of {LIMIT} of one subscription's delivery log ({ROUNDS} rounds)")
    print(f"{'backend':10} {'deliveries':>10} {'page':>14} {'indexed':>10} {'no index':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, url_for in scratch_backends(tmp, args.postgres, "log"):
            for size in sizes:
                with_index = run(url_for(size, 1), size, True)
                without = run(url_for(size, 0), size, False)
                for page, ms in with_index.items():
                    print(f"{name:10} {size:>10} {page:>14} {ms:>10.2f} {without[page]:>10.2f}")


if __name__ == "__main__":
    main()
