"""Prometheus metrics of the API: requests by route template, method and status, and latency.

Under gunicorn each worker writes to PROMETHEUS_MULTIPROC_DIR and a scrape sums every worker.
"""

from __future__ import annotations

import functools
import os
import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

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


def exposition(multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The metrics text and its content type: every worker's when a multiprocess dir is set."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def init_app(multiprocess_dir: str | None) -> None:
    """Ready the per-worker files (telemetry.py times and counts every request)."""
    if multiprocess_dir:
        # Under deploy/gunicorn.conf.py it exists already; elsewhere a missing one would fail
        # every request's first count.
        os.makedirs(multiprocess_dir, exist_ok=True)
