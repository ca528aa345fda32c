"""Prometheus metrics of the API: requests by route template, method and status, latency,
and the delivery queue's gauges (read from the database once per scrape, not per worker).

Under gunicorn each worker writes to a shared directory and a scrape sums every worker: the
directory is PROMETHEUS_MULTIPROC_DIR, or by default `prometheus/` in the instance directory,
rid of an earlier run's files as the workers start (see `forget_earlier_runs`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import sys
import time
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

from partner_api.config import ROOT, Config
from partner_api.delivery.queue_metrics import QueueGaugesCollector
from partner_api.web import metrics_files

log = logging.getLogger(__name__)

disable_created_metrics()  # `_created` series double the output and no dashboard reads them

UNMATCHED_ROUTE = "<unmatched>"  # 404s for unknown paths: one label, not one per path

REQUESTS = Counter(
    "partner_api_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "partner_api_http_request_duration_seconds",
    "Time from the request reaching the app to its answer, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@functools.cache
def route_label(rule: str) -> str:
    """`/webhooks/<string:subscription_id>` → `/webhooks/{subscription_id}`, as in OpenAPI."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def record_request(rule: str | None, method: str, status: int, seconds: float) -> None:
    """Count and time one answered request; `rule` is its matched URL rule, or None."""
    key = (rule, method, status)
    try:
        latency, count = _children[key]
    except KeyError:
        route = route_label(rule) if rule is not None else UNMATCHED_ROUTE
        method = method if method in HTTP_METHODS else OTHER_METHOD
        latency = LATENCY.labels(route, method)
        count = REQUESTS.labels(route, method, str(status))
        if len(_children) < _MAX_CACHED:
            _children[key] = latency, count
    latency.observe(seconds)
    count.inc()


# (rule, method, status) -> the two series it feeds: `.labels()` locks and builds its key on
# every call, a fifth of the metrics' cost per request.
_children: dict = {}
_MAX_CACHED = 1000
# Any other method (a client may send any token) is counted as one, so it cannot add series.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"


def exposition(multiprocess_dir: str | None, queue_gauges) -> tuple[bytes, str]:
    """The metrics text and its content type: every worker's counts when a multiprocess dir is
    set, and the queue gauges once (they describe the shared queue, not this worker)."""
    registry = CollectorRegistry()
    if multiprocess_dir:
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry.register(REGISTRY)  # a registry is a collector: this process's own counts
    registry.register(queue_gauges)
    if not multiprocess_dir:
        return generate_latest(registry), CONTENT_TYPE_LATEST
    # Its cost grows with the files: one per kind per live worker, and the merged ones.
    with metrics_files.locked(Path(multiprocess_dir), exclusive=False):
        return generate_latest(registry), CONTENT_TYPE_LATEST


def init_app(app, config: Config) -> Config:
    """Ready the per-worker files (telemetry.py times and counts every request) and the queue
    gauges; returns `config` naming the directory the workers share, if any."""
    app.extensions["partner_api_queue_gauges"] = QueueGaugesCollector(
        up_name="partner_api_database_up"
    )
    directory = config.prometheus_multiproc_dir
    if directory is None and under_gunicorn():
        directory = _default_directory(config.database_url)
    if directory is None:
        return config
    try:
        # Under deploy/gunicorn.conf.py it exists already; elsewhere a missing one would fail
        # every request's first count.
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if under_gunicorn():
            forget_earlier_runs(Path(directory))
    except OSError as exc:
        if config.prometheus_multiproc_dir is not None:
            raise  # prometheus_client already writes there: the first count would fail
        log.warning("metrics: /metrics counts only the worker it reaches: %s", exc)
        return dataclasses.replace(config, prometheus_multiproc_dir=None)
    if config.prometheus_multiproc_dir is None:
        # prometheus_client chooses where values live when it is imported, from this variable;
        # set now, before any request has made a series, and chosen again.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        values.ValueClass = values.get_value_class()
    return dataclasses.replace(config, prometheus_multiproc_dir=directory)


def under_gunicorn() -> bool:
    """True in a gunicorn master or worker: only there do several processes serve one app.
    (gunicorn's arbiter is imported before any app is loaded, and workers inherit it.)"""
    return "gunicorn.arbiter" in sys.modules


def _default_directory(database_url: str) -> str:
    """`prometheus/` in the instance directory: beside a SQLite database (a directory the
    service may write to), else the checkout's `instance/`."""
    if database_url.startswith("sqlite:///"):
        return str(Path(database_url.removeprefix("sqlite:///")).resolve().parent / "prometheus")
    return str(ROOT / "instance" / "prometheus")


def forget_earlier_runs(directory: Path) -> None:
    """Remove the files an earlier run of the server left, and merge those of this run's dead
    workers (metrics_files); called as each worker starts, before it writes any.

    With plain `gunicorn -w N wsgi:app` no hook runs in the master, so each worker cleans. A
    file written since this worker's master started is this run's: a live peer's stays, a dead
    worker's (this pid's too: pids are reused) is merged, so the sums never drop (Prometheus
    would read a reset) and the files do not pile up. Older files are an earlier run's (a
    restart), so the counts start from 0. deploy/gunicorn.conf.py merges each worker's files
    as it exits. Without /proc, a file is taken for this run's while another worker lives."""
    own, run = os.getpid(), os.getppid()
    files = [(path, metrics_files.writer_pid(path)) for path in directory.glob("*.db")]
    started = _master_started_at()
    peer_alive = started is None and any(pid not in (None, own) and _alive(pid) for _, pid in files)

    def this_run(path: Path, pid: int | None) -> bool:
        if pid is None:
            return metrics_files.merged_run(path) == run
        return peer_alive if started is None else _modified_at(path) > started + BOOT_MARGIN

    ours = [(path, pid) for path, pid in files if this_run(path, pid)]
    dead = {pid for _, pid in ours if pid is not None and (pid == own or not _alive(pid))}
    metrics_files.merge_dead_workers(directory, dead, run)
    for path, pid in files:
        if not this_run(path, pid):
            path.unlink(missing_ok=True)


# A worker writes its first file well after its master started (it imports the app first):
# what was written within this of the master's start, measured to 1/100 s, is an earlier run's.
BOOT_MARGIN = 0.1


def _master_started_at() -> float | None:
    """When this worker's master started (Unix time, to 1/100 s), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _modified_at(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True
