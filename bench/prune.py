"""Healthy delivery lag while `prune` deletes 1,000,000 old rows, against the same dispatcher
without a prune running (the baseline), in the same run.

Usage: .venv/bin/python -m bench.prune [--rows 1000000] [--rate 20] [--postgres URL]

A real dispatcher process (`python -m dispatcher`, polling every 0.5 s) sends events published
at `--rate` per second to a local receiver that answers at once; the lag of each delivery is
its arrival time minus its event's `occurred_at`, counted in the phase it was published in.
The old rows (40% events, 40% finished deliveries, 20% failure-audit rows, 60 days old) are
generated with INSERT … SELECT, then `flask --app wsgi prune --json` runs in its own process,
as an operator would run it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from harness.dispatcher import dispatcher_env, start_dispatcher
from harness.receivers import Receiver
from partner_api import clock, provisioning
from partner_api.config import ROOT, Config
from partner_api.db import apply_schema, bind, database, drop_tables, is_postgres
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import create_subscription

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
POLL_INTERVAL = "0.5"


class LagRecorder(Receiver):
    """Answers 200 at once and records (occurred, lag) of every delivery in `samples`."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        super().__init__([(200, {}, b"")], on_request=self._record)

    def _record(self, body: bytes) -> None:
        arrived = time.time()
        occurred = dt.datetime.fromisoformat(json.loads(body)["occurred_at"])
        self.samples.append((occurred.timestamp(), arrived - occurred.timestamp()))


def generate_old_rows(org_id: str, subscription_id: str, rows: int) -> None:
    """rows × (0.4 events + 0.4 finished deliveries + 0.2 audit rows), 60 days old, in three
    INSERT … SELECT statements over a generated sequence."""
    events, failures = rows * 2 // 5, rows // 5
    old = clock.now() - dt.timedelta(days=60)
    stamp = old if is_postgres() else old.isoformat(" ")
    p = database.param
    seq = "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {})"
    statements = [
        (
            f"INSERT INTO events (id, org_id, type, data, occurred_at) {seq.format(events)} "
            f"SELECT 'evt_old_' || n, {p}, 'vc.test.ping', '{{}}', {p} FROM seq",
            (org_id, stamp),
        ),
        (
            "INSERT INTO deliveries (id, event_id, subscription_id, status, attempts, "
            f"next_attempt_at, created_at, delivered_at) {seq.format(events)} "
            f"SELECT 'dlv_old_' || n, 'evt_old_' || n, {p}, "
            f"CASE WHEN n <= {failures} THEN 'dead_lettered' ELSE 'delivered' END, 1, "
            f"{p}, {p}, {p} FROM seq",
            (subscription_id, stamp, stamp, stamp),
        ),
        (
            "INSERT INTO delivery_failures (id, delivery_id, subscription_id, event_id, "
            "event_type, attempt, attempted_at, duration_ms, error_kind, error_message, "
            f"response_status, dead_lettered) {seq.format(failures)} "
            f"SELECT 'att_old_' || n, 'dlv_old_' || n, {p}, 'evt_old_' || n, "
            f"'vc.test.ping', 1, {p}, 5, 'http_status', 'HTTP 500', 500, TRUE FROM seq",
            (subscription_id, stamp),
        ),
    ]
    with database.connection_context(), database.atomic():
        for sql, params in statements:
            database.execute_sql(sql, params)
    if is_postgres():
        with database.connection_context():
            database.execute_sql("ANALYZE")


def percentiles(lags: list[float]) -> str:
    if len(lags) < 2:
        return "no samples"
    cuts = statistics.quantiles(lags, n=100)
    return f"p50 {cuts[49] * 1000:6.0f} ms  p99 {cuts[98] * 1000:6.0f} ms  n={len(lags)}"


# Long: one scenario, set up, measured and reported in the order it runs.
def measure(url: str, receiver: LagRecorder, rows: int, rate: float, baseline_s: float) -> None:
    bind(url)
    drop_tables()
    apply_schema()
    config = Config(database_url=url, webhook_allow_cidrs=LOOPBACK, allow_http_webhooks=True)
    with database.connection_context():
        org = provisioning.create_org("bench")
        healthy, _ = create_subscription(org.id, receiver.url(), None, "healthy", config)
        old_sub, _ = create_subscription(org.id, receiver.url(), None, "old", config)
    started = time.perf_counter()
    generate_old_rows(org.id, old_sub.id, rows)
    print(f"  generated {rows:,} old rows in {time.perf_counter() - started:.1f} s")
    env = dispatcher_env(
        url,
        inherit=True,
        PARTNER_API_POLL_INTERVAL=POLL_INTERVAL,
        PARTNER_API_RETENTION_DAYS="3650",  # its own daily prune must not take part
    )
    dispatcher = start_dispatcher(env, stdout=None, stderr=subprocess.DEVNULL)
    stop = threading.Event()

    def publish():
        while not stop.wait(1 / rate):
            with database.connection_context():
                publish_event(org.id, "vc.test.ping", {}, subscription_id=healthy.id)

    publisher = threading.Thread(target=publish, daemon=True)
    receiver.samples.clear()
    try:
        publisher.start()
        time.sleep(3)  # warm-up, not measured
        baseline_from = time.time()
        time.sleep(baseline_s)
        prune_from = time.time()
        pruned = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "prune", "--json"],
            cwd=ROOT,
            env=env | {"PARTNER_API_RETENTION_DAYS": "30"},
            capture_output=True,
            text=True,
            check=True,
        )
        prune_to = time.time()
        time.sleep(3)  # let the last events published during the prune arrive
    finally:
        stop.set()
        publisher.join()
        dispatcher.terminate()
        dispatcher.wait(30)
    counts = json.loads(pruned.stdout)
    deleted = sum(counts.values())
    took = prune_to - prune_from
    baseline = [lag for at, lag in receiver.samples if baseline_from <= at < prune_from]
    during = [lag for at, lag in receiver.samples if prune_from <= at < prune_to]
    print(f"  prune: {counts} = {deleted:,} rows in {took:.1f} s ({deleted / took:,.0f} rows/s)")
    print(f"  lag without prune: {percentiles(baseline)}")
    print(f"  lag during prune:  {percentiles(during)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=20.0, help="events published per second")
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL")
    parser.add_argument("--only-postgres", action="store_true")
    args = parser.parse_args()
    print(
        f"healthy delivery lag, {args.rate:g} events/s, dispatcher polling every "
        f"{POLL_INTERVAL} s, while pruning {args.rows:,} rows vs not"
    )
    with tempfile.TemporaryDirectory() as tmp, LagRecorder() as receiver:
        backends = [] if args.only_postgres else [("sqlite", f"sqlite:///{tmp}/bench.db")]
        if args.postgres:
            backends.append(("postgres", args.postgres))
        for name, url in backends:
            print(name)
            measure(url, receiver, args.rows, args.rate, args.baseline_seconds)


if __name__ == "__main__":
    main()
