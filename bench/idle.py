"""The delivery rate of 10 busy subscriptions beside 50,000 idle ones ÷ the same without them.

Usage: .venv/bin/python -m bench.idle [--idle 50000] [--deliveries 2000] [--rounds 4]
           [--postgres URL]

Each run starts from a fresh database: one partner with 10 subscriptions to a receiver process
that answers at once, `--deliveries` deliveries queued for them through the outbox, then
`python -m dispatcher --once` sends them all; the rate is deliveries/s between the first and
the last arrival. With idle subscriptions, `--idle` enabled subscriptions of 500 other
partners, which never get an event, are written straight into the database first. The two
kinds of run alternate (ABBA...) in the same process, against the same receiver; the target is
a ratio of at least 0.9.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.engine import fresh_database, partner, queue_events
from harness.dispatcher import dispatcher_env, start_dispatcher
from harness.receivers import ReceiverProcess
from harness.seed import idle_subscriptions
from partner_api import clock
from partner_api.config import Config
from partner_api.db import database
from partner_api.delivery.subscriptions import create_subscription
from partner_api.models import Org

BUSY = 10
IDLE_ORGS = 500


def add_idle(count: int) -> None:
    """`count` enabled subscriptions over IDLE_ORGS partners, none of them ever sent anything."""
    now = clock.now()
    orgs = [f"org_idle{n:04d}" for n in range(IDLE_ORGS)]
    with database.connection_context(), database.atomic():
        Org.insert_many([{"id": org, "name": org, "created_at": now} for org in orgs]).execute()
        idle_subscriptions("idle", orgs, count)
        database.execute_sql("ANALYZE")


def delivery_rate(postgres, workdir: Path, receiver: ReceiverProcess, deliveries: int, idle: int):
    """Deliveries/s of `python -m dispatcher --once` sending `deliveries` over BUSY
    subscriptions, beside `idle` idle ones."""
    url = fresh_database(postgres, workdir)
    if idle:
        add_idle(idle)
    org_id, _ = partner("busy")
    config = Config(
        allow_http_webhooks=True, webhook_allow_cidrs=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    with database.connection_context():
        for n in range(BUSY):
            create_subscription(org_id, receiver.url(f"/busy/{n}"), None, "", config)
    queue_events(org_id, deliveries // BUSY)
    seen = len(receiver.times)
    once = start_dispatcher(
        dispatcher_env(url, inherit=True),
        "--once",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if once.wait() != 0:
        raise subprocess.CalledProcessError(once.returncode, once.args)
    receiver.wait_for(lambda: len(receiver.times) >= seen + deliveries, timeout=30)
    times = receiver.times[seen:]
    assert len(times) == deliveries, (len(times), deliveries)
    return (len(times) - 1) / (max(times) - min(times))


def compare(name: str, postgres, workdir: Path, idle: int, deliveries: int, rounds: int) -> None:
    rates: dict[bool, list[float]] = {False: [], True: []}
    receiver = ReceiverProcess("ok")
    try:
        for n in range(rounds):
            for with_idle in (False, True) if n % 2 == 0 else (True, False):
                rate = delivery_rate(
                    postgres, workdir, receiver, deliveries, idle if with_idle else 0
                )
                rates[with_idle].append(rate)
    finally:
        receiver.close()
    alone, beside = statistics.median(rates[False]), statistics.median(rates[True])
    print(
        f"{name:10} alone {alone:7.0f}/s   beside {idle:,} idle {beside:7.0f}/s   "
        f"ratio {beside / alone:.2f}  (runs: {[round(r) for r in rates[False]]} / "
        f"{[round(r) for r in rates[True]]})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=50_000)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4, help="runs of each kind, alternating")
    parser.add_argument("--postgres", help="also run on this scratch PostgreSQL database")
    args = parser.parse_args()
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    print(f"deliveries/s of {BUSY} busy subscriptions ({args.deliveries} deliveries, --once)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, postgres in backends:
            compare(name, postgres, Path(tmp), args.idle, args.deliveries, args.rounds)


if __name__ == "__main__":
    main()
