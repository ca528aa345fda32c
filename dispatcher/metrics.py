"""Prometheus metrics of one dispatcher process, served on PARTNER_API_METRICS_PORT when set.

Attempts are counted as they end (a dict lookup and two adds); the queue gauges are
`partner_api.delivery.queue_metrics`'s, read at scrape time.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from partner_api import clock
from partner_api.delivery import outcomes
from partner_api.delivery.queue_metrics import QueueGaugesCollector

disable_created_metrics()  # `_created` series double the output and no dashboard reads them
REGISTRY = CollectorRegistry()  # this process's own, never mixed with the API's workers

# Every outcome an attempt can have, so each series exists (at 0) from the first scrape.
OUTCOMES = (
    outcomes.OK,
    *outcomes.AttemptError,
    "error",  # an unexpected failure before any outcome; the lease makes it due again
)
ATTEMPTS = Counter(
    "partner_api_delivery_attempts",
    "Delivery attempts ended, by outcome (`ok`, or the failure's error kind).",
    ["outcome"],
    registry=REGISTRY,
)
_ATTEMPTS_BY_OUTCOME = {outcome: ATTEMPTS.labels(outcome) for outcome in OUTCOMES}
ATTEMPT_SECONDS = Histogram(
    "partner_api_delivery_attempt_seconds",
    "Duration of one delivery attempt: DNS, connect, TLS, upload and answer.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "partner_api_deliveries_dead_lettered",
    "Deliveries this dispatcher dead-lettered after their last attempt failed.",
    registry=REGISTRY,
)
LAST_POLL = Gauge(
    "partner_api_dispatcher_last_poll_timestamp_seconds",
    "Unix time this dispatcher last looked for due deliveries; stale means stopped or stuck.",
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "partner_api_dispatcher_attempts_in_flight",
    "Attempts this dispatcher is making right now.",
    registry=REGISTRY,
)
WAKES = Counter(
    "partner_api_dispatcher_wakes",
    "Wakes this dispatcher received: a publish, redelivery or enable made work due now.",
    registry=REGISTRY,
)
SENDERS = Gauge(
    "partner_api_dispatcher_senders",
    "Concurrent attempts this dispatcher may make (PARTNER_API_DISPATCH_WORKERS).",
    registry=REGISTRY,
)


def record_attempt(outcome: str, duration_seconds: float | None) -> None:
    """Count one ended attempt (called once per attempt: keep it cheap)."""
    counter = _ATTEMPTS_BY_OUTCOME.get(outcome)
    (counter or ATTEMPTS.labels(outcome)).inc()
    if duration_seconds is not None:
        ATTEMPT_SECONDS.observe(duration_seconds)


def record_poll() -> None:
    LAST_POLL.set(clock.unix())


# The queue as this dispatcher's database sees it; the API serves the same gauges.
REGISTRY.register(QueueGaugesCollector(up_name="partner_api_dispatcher_database_up"))


def serve(host: str, port: int, in_flight, senders: int):
    """Serve /metrics on host:port (0 = any free port); returns the server (for its port)."""
    IN_FLIGHT.set_function(in_flight)
    SENDERS.set(senders)
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server
