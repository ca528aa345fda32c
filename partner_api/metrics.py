"""Prometheus metrics of the API: requests by route template, method and status, and latency.

Under gunicorn each worker writes to PROMETHEUS_MULTIPROC_DIR and a scrape sums every worker.
"""

from __future__ import annotations

import functools
import os
import re
import time

from flask import g, request
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


def _start_timer():
    g.metrics_started = time.perf_counter()


def _record(response):
    started = g.pop("metrics_started", None)
    if started is not None:
        rule = request.url_rule
        route = route_label(rule.rule) if rule is not None else UNMATCHED_ROUTE
        LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    return response


def exposition(multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The metrics text and its content type: every worker's when a multiprocess dir is set."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def init_app(app, multiprocess_dir: str | None) -> None:
    """Time and count every request, errors included."""
    if multiprocess_dir:
        # Under deploy/gunicorn.conf.py it exists already; elsewhere a missing one would fail
        # every request's first count.
        os.makedirs(multiprocess_dir, exist_ok=True)
    app.before_request(_start_timer)
    app.after_request(_record)
