"""What a scrape of the API's /metrics costs after gunicorn has recycled many workers: the
multiprocess collector over 2 live workers' files plus N dead workers' files left as they were
(before) or merged into one pair per run (metrics_files, now), measured side by side.

Usage: .venv/bin/python -m bench.scrape [--dead 0 100 300] [--routes 12]

Each worker's files hold what a worker of the API writes: a request counter per route, method
and status, and the latency histogram per route and method. Best of 5 scrapes each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from partner_api.web import metrics, metrics_files

LIVE_WORKERS = 2
BUCKETS = [*(str(float(b)) for b in metrics.LATENCY._upper_bounds[:-1]), "+Inf"]


def write_worker(directory: Path, pid: int, routes: int) -> None:
    """The counter and histogram files one worker leaves after serving every route."""
    counter = MmapedDict(str(directory / f"counter_{pid}.db"))
    histogram = MmapedDict(str(directory / f"histogram_{pid}.db"))
    help_requests, help_latency = metrics.REQUESTS._documentation, metrics.LATENCY._documentation
    for n in range(routes):
        route = f"/api/v1/partner/route{n}"
        for status in ("200", "401", "404"):
            key = mmap_key(
                "partner_api_http_requests",
                "partner_api_http_requests_total",
                ["route", "method", "status"],
                [route, "GET", status],
                help_requests,
            )
            counter.write_value(key, 3.0, 0.0)
        name = "partner_api_http_request_duration_seconds"
        for le in BUCKETS:
            key = mmap_key(
                name, f"{name}_bucket", ["route", "method", "le"], [route, "GET", le], help_latency
            )
            histogram.write_value(key, 1.0, 0.0)
        key = mmap_key(name, f"{name}_sum", ["route", "method"], [route, "GET"], help_latency)
        histogram.write_value(key, 0.01, 0.0)
    counter.close()
    histogram.close()


def scrape_ms(directory: Path) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))
        generate_latest(registry)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def measure(dead: int, routes: int) -> tuple[int, float, int, float]:
    """(files, ms) with the dead workers' files left, then merged, in one scratch directory."""
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        for pid in range(1, LIVE_WORKERS + dead + 1):
            write_worker(directory, pid, routes)
        left = len(list(directory.glob("*.db"))), scrape_ms(directory)
        metrics_files.merge_dead_workers(
            directory, range(LIVE_WORKERS + 1, LIVE_WORKERS + dead + 1), run=1
        )
        merged = len(list(directory.glob("*.db"))), scrape_ms(directory)
    return (*left, *merged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dead", type=int, nargs="+", default=[0, 100, 300])
    parser.add_argument("--routes", type=int, default=12)
    args = parser.parse_args()
    print("| recycled workers | files left | scrape (left) | files merged | scrape (merged) |")
    print("|---:|---:|---:|---:|---:|")
    for dead in args.dead:
        left_files, left_ms, merged_files, merged_ms = measure(dead, args.routes)
        print(f"| {dead} | {left_files} | {left_ms:.1f} ms | {merged_files} | {merged_ms:.1f} ms |")


if __name__ == "__main__":
    main()
