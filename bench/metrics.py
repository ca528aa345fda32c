"""What counting one delivery attempt costs the dispatcher: `metrics.record_attempt`.

Usage: .venv/bin/python -m bench.metrics [--calls 200000]

Times the call against an empty function of the same signature (the baseline), in the same
run, and prints microseconds per attempt; best of 5 rounds each.
"""

from __future__ import annotations

import argparse
import time

from dispatcher import metrics

OUTCOMES = ("ok", "ok", "ok", "http_status", "timeout")


def baseline(outcome: str, duration_seconds: float | None) -> None:
    """An empty call: what remains when the metrics are taken away."""


def per_call_us(func, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for n in range(calls):
            func(OUTCOMES[n % 5], 0.012)
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    empty = per_call_us(baseline, args.calls)
    counted = per_call_us(metrics.record_attempt, args.calls)
    print("| per attempt | µs |")
    print("|---|---:|")
    print(f"| empty call (baseline) | {empty:.2f} |")
    print(f"| record_attempt | {counted:.2f} |")
    print(f"| metrics cost | {counted - empty:.2f} |")


if __name__ == "__main__":
    main()
