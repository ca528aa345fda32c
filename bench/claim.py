"""Claim cost against backlog size and against the number of subscriptions.

Usage: .venv/bin/python -m bench.claim [--backlog 1000,10000,100000]
           [--subscriptions 100,10000,100000] [--axis backlog,subscriptions] [--postgres URL]

Backlog: for each size it fills a fresh database with that many pending deliveries that are not
due yet (plus held ones of a disabled subscription), then times claiming a batch of 50 due
deliveries the way the dispatcher does (sharing rules on). The baseline is the same database
with the deliveries_due and deliveries_subscription_due indexes dropped, in the same run.

Subscriptions: for each count, a fresh database with that many live subscriptions, 10 of them
with work due (5 deliveries each, published through the outbox), the others idle; it times the
claim of those 50 and reports the ratio of the largest count's time to the smallest's. The
baseline is the claim as it was before due_work, probing every live subscription (the same
claim with the full scan of webhook_subscriptions to find who has work due), on the same
database in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time

from bench import scratch_backends
from harness.seed import idle_subscriptions
from partner_api import clock, ids
from partner_api.db import apply_schema, bind, database, drop_tables
from partner_api.delivery import claims, lifecycle
from partner_api.delivery.claims import claim_due_deliveries
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.shares import SharePolicy, Subscriber
from partner_api.models import Delivery, DeliveryStatus, Event, Org, Subscription

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
    """`count` deliveries due now, created through the lifecycle (which keeps due_work)."""
    now = clock.now() - dt.timedelta(seconds=1)
    subscription = Subscription.get_by_id("wh_bench")
    lifecycle.create_deliveries(Event.get_by_id("evt_bench"), [subscription] * count, now)


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


def by_backlog(backends, sizes: list[int]) -> None:
    print(f"median ms to claim {BATCH} due deliveries ({ROUNDS} rounds), by backlog not yet due")
    print(f"{'backend':10} {'backlog':>8} {'indexed':>10} {'no index':>10}")
    for name, url_for in backends:
        for size in sizes:
            with_index = run(url_for(size, 1), size, True)
            without = run(url_for(size, 0), size, False)
            print(f"{name:10} {size:>8} {with_index:>10.2f} {without:>10.2f}")


# -- the subscriptions axis --------------------------------------------------------------------

BUSY = 10  # subscriptions with work due, BATCH // BUSY deliveries each per claim
SUBSCRIPTION_ROUNDS = 40  # more than ROUNDS: a claim here is a few ms, and the machine is shared
# Before due_work: every live subscription probed for due work, on every claim.
FULL_SCAN_SQL = (
    "SELECT s.id, s.org_id, s.status, s.consecutive_failures, "
    "(SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.subscription_id = s.id "
    "AND d.status = {p} AND d.next_attempt_at <= {p}) "
    "FROM webhook_subscriptions s WHERE s.deleted_at IS NULL"
)


def full_scan_subscribers(now: dt.datetime, known: dict) -> dict[str, Subscriber]:
    """Who has work due, found as the claim found it before due_work (the baseline)."""
    cursor = database.execute_sql(
        FULL_SCAN_SQL.format(p=database.param), (DeliveryStatus.PENDING, now)
    )
    rows = sorted((r for r in cursor.fetchall() if r[4] is not None), key=lambda r: str(r[4]))
    disabled = [row[0] for row in rows if row[2] != "enabled"]
    if disabled:
        lifecycle.hold_due(disabled, now)
    return {
        sub: Subscriber(sub, org, failing=failures > 0, untried=sub not in known)
        for sub, org, status, failures, _ in rows
        if status == "enabled"
    }


def fill_subscriptions(count: int) -> list[Subscriber]:
    """`count` live subscriptions over 10 orgs; returns the BUSY that get work."""
    now = clock.now()
    orgs = [f"org_bench{n}" for n in range(10)]
    Org.insert_many([{"id": org, "name": org, "created_at": now} for org in orgs]).execute()
    ids = idle_subscriptions("bench", orgs, count)
    step = count // BUSY
    return [Subscriber(ids[n], orgs[n % 10]) for n in range(0, step * BUSY, step)]


def time_claims_of(busy: list[Subscriber], full_scan: bool) -> float:
    """Median ms of claiming the busy subscriptions' due deliveries, the way the dispatcher
    does, or with the full scan in place of due_work."""
    known = {sub.subscription_id: sub for sub in busy}
    found = full_scan_subscribers if full_scan else claims._subscribers_with_work_due
    original, claims._subscribers_with_work_due = claims._subscribers_with_work_due, found
    samples = []
    try:
        for _ in range(SUBSCRIPTION_ROUNDS):
            for sub in busy:
                for _ in range(BATCH // BUSY):
                    publish_event(
                        sub.org_id, "vc.test.ping", {}, subscription_id=sub.subscription_id
                    )
            started = time.perf_counter()
            claimed = claim_due_deliveries(BATCH, 60, policy=POLICY, known=known, headroom=2)
            samples.append(time.perf_counter() - started)
            assert len(claimed) == BATCH, len(claimed)
    finally:
        claims._subscribers_with_work_due = original
    return statistics.median(samples) * 1000


def run_subscriptions(url: str, count: int) -> tuple[float, float]:
    """(due_work, full scan) median claim ms beside `count` live subscriptions."""
    bind(url)
    drop_tables()
    apply_schema()
    with database.connection_context():
        busy = fill_subscriptions(count)
        database.execute_sql("ANALYZE")
        return time_claims_of(busy, False), time_claims_of(busy, True)


def by_subscriptions(backends, counts: list[int]) -> None:
    rounds = SUBSCRIPTION_ROUNDS
    print(f"median ms to claim {BATCH} due deliveries of {BUSY} subscriptions ({rounds} rounds)")
    print(f"{'backend':10} {'live subs':>10} {'due_work':>10} {'full scan':>10}")
    for name, url_for in backends:
        times = {}
        for count in counts:
            times[count] = run_subscriptions(url_for(count, 2), count)
            print(f"{name:10} {count:>10} {times[count][0]:>10.2f} {times[count][1]:>10.2f}")
        low, high = min(counts), max(counts)
        ratio = [times[high][i] / times[low][i] for i in (0, 1)]
        print(f"{name:10} {f'{high} / {low}':>10} {ratio[0]:>10.2f} {ratio[1]:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", default="1000,10000,100000")
    parser.add_argument("--subscriptions", default="100,10000,100000")
    parser.add_argument("--axis", default="backlog,subscriptions")
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL")
    args = parser.parse_args()
    axes = args.axis.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        backends = scratch_backends(tmp, args.postgres, "b")
        if "backlog" in axes:
            by_backlog(backends, [int(n) for n in args.backlog.split(",")])
        if "subscriptions" in axes:
            by_subscriptions(backends, [int(n) for n in args.subscriptions.split(",")])


if __name__ == "__main__":
    main()
