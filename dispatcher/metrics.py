"""Prometheus metrics of one dispatcher process, served on PARTNER_API_METRICS_PORT when set.

Attempts are counted as they end (a dict lookup and two adds); queue gauges are read per scrape.
"""

from __future__ import annotations

import logging

import peewee
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from partner_api import clock
from partner_api.db import database
from partner_api.delivery import outcomes, stats

log = logging.getLogger("dispatcher")
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


class QueueCollector:
    """The shared queue as this dispatcher's database sees it, read at scrape time."""

    def collect(self):
        up = GaugeMetricFamily(
            "partner_api_dispatcher_database_up",
            "1 when the queue gauges below could be read from the database, else 0.",
        )
        try:
            gauges = self._queue_gauges()
        except peewee.DatabaseError as exc:
            log.warning("metrics: queue gauges unavailable: %s", str(exc).strip()[:200])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from gauges

    def _queue_gauges(self) -> list[GaugeMetricFamily]:
        with database.connection_context():
            found = stats.queue_gauges(clock.now())
        return [
            GaugeMetricFamily(
                "partner_api_deliveries_due",
                "Pending deliveries whose next attempt is due now (not leased by a dispatcher).",
                value=found["due"],
            ),
            GaugeMetricFamily(
                "partner_api_oldest_due_seconds",
                "How long the oldest due delivery has waited past its due time (0 when none).",
                value=found["oldest_due_seconds"],
            ),
            GaugeMetricFamily(
                "partner_api_deliveries_held",
                "Deliveries held while their subscription is disabled.",
                value=found["held"],
            ),
            GaugeMetricFamily(
                "partner_api_subscriptions_disabled",
                "Live subscriptions disabled after repeated failures.",
                value=found["disabled_subscriptions"],
            ),
        ]


REGISTRY.register(QueueCollector())


def serve(host: str, port: int, in_flight, senders: int):
    """Serve /metrics on host:port (0 = any free port); returns the server (for its port)."""
    IN_FLIGHT.set_function(in_flight)
    SENDERS.set(senders)
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server
