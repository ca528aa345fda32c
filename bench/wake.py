"""The wake on publish, black-box: test pings to a receiver that answers at once, with a 5 s
poll, the dispatcher woken by each publish against the same with the wake off (the baseline),
in one run. Latency is from the 202 of POST /webhooks/{id}/test to the receiver reading it.

Usage: .venv/bin/python -m bench.wake [--postgres URL] [--pings N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.engine import Stack, fresh_database, partner, percentile, ping_latencies
from harness.receivers import ReceiverProcess

POLL_INTERVAL = "5"
TARGET_P99 = 0.3  # seconds, with the wake on
WARM_UP = 2  # pings not counted: the processes' first requests and connections


def latencies(postgres: str | None, workdir: Path, pings: int, wake: bool) -> list[float]:
    """Seconds from each ping's 202 to its arrival, on a fresh database and stack."""
    url = fresh_database(postgres, workdir)
    stack = Stack(
        url,
        workdir / f"api-{time.monotonic_ns()}.log",
        PARTNER_API_POLL_INTERVAL=POLL_INTERVAL,
        PARTNER_API_DISPATCHER_WAKE="true" if wake else "false",
    )
    receiver = ReceiverProcess("ok")
    try:
        _, token = partner("bench")
        subscription = stack.subscribe(token, receiver.url())
        ping_latencies(stack, token, subscription, receiver, WARM_UP)
        return ping_latencies(stack, token, subscription, receiver, pings)
    finally:
        stack.close()
        receiver.close()


def milliseconds(values: list[float]) -> str:
    p50, p99 = (percentile(values, fraction) * 1000 for fraction in (0.5, 0.99))
    return f"p50 {p50:6.0f} ms  p99 {p99:6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="also run on this scratch PostgreSQL database")
    parser.add_argument("--pings", type=int, default=30)
    args = parser.parse_args()
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp:
        for backend, postgres in backends:
            baseline = latencies(postgres, Path(tmp), args.pings, wake=False)
            woken = latencies(postgres, Path(tmp), args.pings, wake=True)
            verdict = "meets" if percentile(woken, 0.99) <= TARGET_P99 else "MISSES"
            print(f"{backend:10} poll every {POLL_INTERVAL} s, wake off: {milliseconds(baseline)}")
            print(
                f"{backend:10} poll every {POLL_INTERVAL} s, wake on:  {milliseconds(woken)}  "
                f"({verdict} p99 <= {TARGET_P99 * 1000:.0f} ms)"
            )


if __name__ == "__main__":
    main()
