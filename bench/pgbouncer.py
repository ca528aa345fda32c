"""The API and the dispatcher through PgBouncer in transaction mode, against direct PostgreSQL.

Usage: .venv/bin/python -m bench.pgbouncer --postgres URL [--rounds 6] [--duration 3]
                                           [--deliveries 3000] [--delivery-rounds 2]

Both sides run in the same run, alternating, on the same database (whose tables are dropped and
recreated): GET /me under gunicorn (4 sync workers, the bench.api setup) driven by wrk (2
threads, 32 connections), one server on DATABASE_URL straight at PostgreSQL and one through a
PgBouncer (Debian's, `pool_mode = transaction`, 10 server connections); then
`python -m dispatcher --once` over N queued deliveries across 10 subscriptions to a receiver
answering at once (bench.engine's throughput run), straight and through PgBouncer. Prints each
round, the median ratio (through PgBouncer ÷ direct) with its range, and the errors: non-2xx
answers and socket errors for /me, deliveries not delivered and failed attempts for the
dispatcher. The target is a ratio of 0.8 or more for each, with 0 errors.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.api import gunicorn, measure, seed, wrk
from bench.engine import dispatcher_rate
from harness.net import ME_PATH
from harness.pgbouncer import PgBouncer, pgbouncer_binary
from harness.receivers import ReceiverProcess
from partner_api.db import database
from partner_api.models import Delivery, DeliveryFailure
from partner_api.models import DeliveryStatus as Status

SIDES = ("direct", "pgbouncer")


def ratio_summary(results: dict, key: str) -> dict:
    """Medians per side, and the median and range of each round's pgbouncer ÷ direct ratio."""
    pairs = zip(results["direct"], results["pgbouncer"], strict=True)
    ratios = [pooled[key] / direct[key] for direct, pooled in pairs]
    return {side: statistics.median(r[key] for r in results[side]) for side in SIDES} | {
        "ratio": statistics.median(ratios),
        "range": (min(ratios), max(ratios)),
    }


def me_through_pgbouncer(urls: dict, rounds: int, duration: float, workdir: Path) -> dict:
    """Alternating wrk rounds against /me served straight and through PgBouncer."""
    (token,) = seed(urls["direct"])
    auth = (f"Authorization: Bearer {token}",)
    results = {side: [] for side in SIDES}
    with contextlib.ExitStack() as stack:
        servers = [
            (
                side,
                stack.enter_context(
                    gunicorn("wsgi:app", {"DATABASE_URL": url}, workdir / f"{side}.log")
                ),
            )
            for side, url in urls.items()
        ]
        for _side, server in servers:  # warm up
            wrk(server.base + ME_PATH, "", threads=2, connections=32, duration=1, headers=auth)
        for round_no in range(1, rounds + 1):
            for side, server in servers if round_no % 2 else servers[::-1]:
                report = measure(server, auth, duration)
                report["errors"] = report["non_2xx"] + report["socket_errors"]
                results[side].append(report)
                print(
                    f"/me        round {round_no} {side:9}: {report['rps']:7.0f} req/s  "
                    f"p99 {report['p99_ms']:5.1f} ms  errors {report['errors']}",
                    flush=True,
                )
    return ratio_summary(results, "rps") | {
        "errors": sum(r["errors"] for side in SIDES for r in results[side])
    }


def undelivered(deliveries: int) -> int:
    """Deliveries of the last run not delivered, plus its failed attempts (each an error)."""
    with database.connection_context():
        delivered = Delivery.select().where(Delivery.status == Status.DELIVERED).count()
        return deliveries - delivered + DeliveryFailure.select().count()


def deliveries_through_pgbouncer(urls: dict, deliveries: int, rounds: int, workdir: Path) -> dict:
    """Alternating `dispatcher --once` runs over `deliveries` queued deliveries."""
    results = {side: [] for side in SIDES}
    with ReceiverProcess("ok") as receiver:
        for round_no in range(1, rounds + 1):
            for side in SIDES if round_no % 2 else SIDES[::-1]:
                rate = dispatcher_rate(
                    urls["direct"], workdir, receiver, deliveries, dispatcher_url=urls[side]
                )
                errors = undelivered(deliveries)
                results[side].append({"rate": rate, "errors": errors})
                print(
                    f"deliveries round {round_no} {side:9}: {rate:7.0f}/s  errors {errors}",
                    flush=True,
                )
    return ratio_summary(results, "rate") | {
        "errors": sum(r["errors"] for side in SIDES for r in results[side])
    }


def report(label: str, unit: str, summary: dict) -> None:
    low, high = summary["range"]
    print(
        f"{label:10} | direct {summary['direct']:6.0f}{unit} | through PgBouncer "
        f"{summary['pgbouncer']:6.0f}{unit} | ratio {summary['ratio']:.2f} "
        f"({low:.2f}-{high:.2f}) | errors {summary['errors']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="a scratch PostgreSQL URL")
    parser.add_argument("--rounds", type=int, default=6, help="wrk rounds per side")
    parser.add_argument("--duration", type=float, default=3, help="seconds per wrk round")
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--delivery-rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run `make bench-tools` (apt-get install -y wrk)")
    if pgbouncer_binary() is None:
        raise SystemExit("pgbouncer is not installed: run `make pgbouncer`")
    with tempfile.TemporaryDirectory() as tmp, PgBouncer(args.postgres) as pooled:
        workdir = Path(tmp)
        urls = {"direct": args.postgres, "pgbouncer": pooled}
        me = me_through_pgbouncer(urls, args.rounds, args.duration, workdir)
        sent = deliveries_through_pgbouncer(urls, args.deliveries, args.delivery_rounds, workdir)
    print("\nmedian of rounds | direct | through PgBouncer | ratio (range) | errors")
    report("/me", " req/s", me)
    report("deliveries", "/s", sent)


if __name__ == "__main__":
    main()
