"""Claim cost against backlog size, with the claim's indexes and without them.

Usage: .venv/bin/python -m bench.claim [--backlog 1000,10000,100000] [--postgres URL]

For each backlog size it fills a fresh database with that many pending deliveries that are not
due yet (plus held ones of a disabled subscription), then times claiming a batch of 50 due
deliveries the way the dispatcher does (sharing rules on). The baseline is the same database
with the deliveries_due and deliveries_subscription_due indexes dropped, in the same run.
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
from partner_api.delivery.claims import claim_due_deliveries
from partner_api.delivery.shares import SharePolicy, Subscriber
from partner_api.models import Delivery, Event, Org, Subscription

BATCH = 50
ROUNDS = 20
POLICY = SharePolicy(senders=BATCH)
TRIED = {"wh_bench": Subscriber("wh_bench", "org_bench")}  # has answered before: full share


def fill(backlog: int) -> None:
    now = clock.now()
    with database.atomic():
        Org.create(id="org_bench", name="bench", created_at=now)
        for sub_id, status in (("wh_bench", "enabled"), ("wh_off", "disabled")):
            Subscription.create(
                id=sub_id,
                org="org_bench",
                url="https://example.com/",
                events=[],
                description="",
                secret="s",
                status=status,
                consecutive_failures=0,
                created_at=now,
            )
        Event.create(id="evt_bench", org="org_bench", type="vc.test.ping", data={}, occurred_at=now)
        later = now + dt.timedelta(hours=1)
        rows = [
            {
                "id": ids.new_id("dlv"),
                "event": "evt_bench",
                "subscription": "wh_bench" if n % 2 else "wh_off",
                "status": "pending" if n % 2 else "held",
                "attempts": 0,
                "next_attempt_at": later,
                "created_at": now,
            }
            for n in range(backlog)
        ]
        for start in range(0, len(rows), 5000):
            Delivery.insert_many(rows[start : start + 5000]).execute()


def add_due(count: int) -> None:
    now = clock.now() - dt.timedelta(seconds=1)
    Delivery.insert_many(
        [
            {
                "id": ids.new_id("dlv"),
                "event": "evt_bench",
                "subscription": "wh_bench",
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for _ in range(count)
        ]
    ).execute()


def time_claims() -> float:
    samples = []
    for _ in range(ROUNDS):
        add_due(BATCH)
        started = time.perf_counter()
        claimed = claim_due_deliveries(BATCH, 60, policy=POLICY, known=TRIED, headroom=2)
        samples.append(time.perf_counter() - started)
        assert len(claimed) == BATCH
    return statistics.median(samples) * 1000


def run(url: str, backlog: int, indexed: bool) -> float:
    bind(url)
    drop_tables()
    apply_schema()
    with database.connection_context():
        fill(backlog)
        if not indexed:
            database.execute_sql("DROP INDEX deliveries_due")
            database.execute_sql("DROP INDEX deliveries_subscription_due")
        database.execute_sql("ANALYZE")
        return time_claims()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", default="1000,10000,100000")
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL")
    args = parser.parse_args()
    sizes = [int(size) for size in args.backlog.split(",")]
    print(f"median ms to claim {BATCH} due deliveries ({ROUNDS} rounds), by backlog not yet due")
    print(f"{'backend':10} {'backlog':>8} {'indexed':>10} {'no index':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, url_for in scratch_backends(tmp, args.postgres, "b"):
            for size in sizes:
                with_index = run(url_for(size, 1), size, True)
                without = run(url_for(size, 0), size, False)
                print(f"{name:10} {size:>8} {with_index:>10.2f} {without:>10.2f}")


if __name__ == "__main__":
    main()
