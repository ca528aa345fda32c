"""A new partner's first test ping beside other partners' dead endpoints, black-box: the API
under gunicorn, `python -m dispatcher` and the receivers in processes of their own.

Usage: .venv/bin/python -m bench.first_ping [--postgres URL] [--pings N] [--poll-interval S]

The load: 20 subscriptions over 4 orgs point at a receiver that reads each request and never
answers, 10 events queued each, with a 10 s delivery timeout and the default 10 senders. Once
every one of them has failed at least once (their probes now run all the time), N new partners
each create a subscription to a receiver that answers at once and send one test ping. The
baseline: the same first pings on a stack without the load. Each stack first delivers one
warm-up ping of its own, not counted. Latency is from the 202 of
`POST /webhooks/{id}/test` to the receiver reading the request (target: p99 <= 1 s), with the
default 2 s poll interval: the ping's publish wakes the dispatcher. `--poll-interval 0.2`
(and the wake off) is how the figures before the wake were taken.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.engine import (
    Stack,
    dead_load,
    describe,
    fresh_database,
    partner,
    percentile,
    ping_latencies,
)
from harness.net import wait_for
from harness.receivers import ReceiverProcess
from partner_api.db import database
from partner_api.models import Subscription

DEAD_ORGS, DEAD_PER_ORG, BACKLOG = 4, 5, 10
SETTINGS = {"PARTNER_API_DELIVERY_TIMEOUT": "10"}
TARGET = 1.0  # seconds, p99


def first_pings(stack: Stack, receiver: ReceiverProcess, pings: int, name="new") -> list[float]:
    """`pings` new partners, each creating a subscription and pinging it once; seconds from
    each 202 to its arrival."""
    latencies = []
    for n in range(pings):
        _, token = partner(f"{name} partner {n}")
        subscription = stack.subscribe(token, receiver.url(f"/{name}/{n}"))
        latencies += ping_latencies(stack, token, subscription, receiver, 1)
    return latencies


def failed_once() -> int:
    """Subscriptions whose last attempt failed (all of them are the dead ones here)."""
    with database.connection_context():
        return Subscription.select().where(Subscription.consecutive_failures > 0).count()


def run(postgres: str | None, workdir: Path, pings: int, dead: bool, **settings) -> list[float]:
    """The first pings on a fresh stack, beside the dead load or without it."""
    url = fresh_database(postgres, workdir)
    stack = Stack(url, workdir / f"api-{time.monotonic_ns()}.log", **SETTINGS, **settings)
    healthy = ReceiverProcess("ok")
    others: list[ReceiverProcess] = []
    try:
        first_pings(stack, healthy, 1, "warm-up")  # a fresh stack's first attempt is slower
        if dead:
            others.extend(dead_load(DEAD_ORGS, DEAD_PER_ORG, BACKLOG)(stack, None, None))
            started = time.monotonic()
            if not wait_for(lambda: failed_once() >= DEAD_ORGS * DEAD_PER_ORG, 300, 0.5):
                raise RuntimeError("the dead subscriptions were not all tried within 5 minutes")
            print(f"(every dead subscription failed once after {time.monotonic() - started:.0f} s)")
        return first_pings(stack, healthy, pings)
    finally:
        stack.close()
        for receiver in [healthy, *others]:
            receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="also run on this scratch PostgreSQL database")
    parser.add_argument("--pings", type=int, default=10)
    parser.add_argument("--poll-interval", help="PARTNER_API_POLL_INTERVAL (default: its default)")
    parser.add_argument("--no-wake", action="store_true", help="PARTNER_API_DISPATCHER_WAKE=false")
    args = parser.parse_args()
    settings = {"PARTNER_API_DISPATCHER_WAKE": "false"} if args.no_wake else {}
    if args.poll_interval:
        settings["PARTNER_API_POLL_INTERVAL"] = args.poll_interval
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp:
        for backend, postgres in backends:
            print(f"== {backend}")
            alone = run(postgres, Path(tmp), args.pings, dead=False, **settings)
            loaded = run(postgres, Path(tmp), args.pings, dead=True, **settings)
            verdict = "meets" if percentile(loaded, 0.99) <= TARGET else "MISSES"
            print(f"first ping alone:            {describe(alone)}")
            print(
                f"first ping beside 20 dead:   {describe(loaded)}  ({verdict} p99 <= {TARGET:g} s)"
            )


if __name__ == "__main__":
    main()
