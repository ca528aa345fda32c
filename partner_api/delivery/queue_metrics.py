"""The queue gauges both `/metrics` endpoints serve, the API's and the dispatcher's: the shared
delivery queue (`stats.queue_gauges`) read at scrape time and kept for a few seconds.

Both serve them so the backlog stays visible when the dispatcher is down, which is exactly
when it grows.
"""

from __future__ import annotations

import logging
import threading

import peewee
from prometheus_client.core import GaugeMetricFamily

from partner_api import clock
from partner_api.db import database, error_line, kept_connection
from partner_api.delivery import stats

log = logging.getLogger(__name__)

# Each read is four counts: due (and the oldest due) walk the (status, next_attempt_at) index
# over the due deliveries, held walks it over the held ones, and the disabled count scans the
# subscriptions. So a read costs in proportion to the backlog and the number of subscriptions:
# cheap for a healthy queue, most expensive in an outage. Kept this long, N scrapers, or N
# scrapes landing on N gunicorn workers, cost at most one read per process per window.
MAX_AGE_SECONDS = 5.0

GAUGE_HELP = {
    "partner_api_deliveries_due": (
        "Pending deliveries whose next attempt is due now (not leased by a dispatcher)."
    ),
    "partner_api_oldest_due_seconds": (
        "How long the oldest due delivery has waited past its due time (0 when none)."
    ),
    "partner_api_deliveries_held": "Deliveries held while their subscription is disabled.",
    "partner_api_subscriptions_disabled": "Live subscriptions disabled (auto-disabled or paused).",
}
# Which figure of stats.queue_gauges each gauge shows.
GAUGE_FIGURES = {
    "partner_api_deliveries_due": "due",
    "partner_api_oldest_due_seconds": "oldest_due_seconds",
    "partner_api_deliveries_held": "held",
    "partner_api_subscriptions_disabled": "disabled_subscriptions",
}
UP_HELP = "1 when the queue gauges could be read from the database, else 0 (they are left out)."


class QueueGaugesCollector:
    """A prometheus_client collector: `up_name` (1 or 0) and, when the read worked, the four
    queue gauges. A read (or a failed one: a dead database is not asked again at every scrape)
    is reused for `max_age_seconds` of the injectable clock, and only against the database it
    was read from."""

    def __init__(self, up_name: str, max_age_seconds: float = MAX_AGE_SECONDS):
        self.up_name = up_name
        self.max_age_seconds = max_age_seconds
        self._lock = threading.Lock()  # concurrent scrapes of one process share one read
        self._read = None  # (database object, read at, figures or None)

    def collect(self):
        figures = self._figures()
        yield GaugeMetricFamily(self.up_name, UP_HELP, value=0 if figures is None else 1)
        if figures is None:
            return
        for name, figure in GAUGE_FIGURES.items():
            yield GaugeMetricFamily(name, GAUGE_HELP[name], value=figures[figure])

    def _figures(self) -> dict | None:
        with self._lock:
            now = clock.now()
            if self._read is not None:
                read_from, read_at, figures = self._read
                age = (now - read_at).total_seconds()
                # A clock set back (tests) or a rebound database makes the read stale.
                if read_from is database.obj and 0 <= age < self.max_age_seconds:
                    return figures
            figures = read_queue_gauges(now)
            self._read = (database.obj, now, figures)
            return figures


def read_queue_gauges(now) -> dict | None:
    """stats.queue_gauges, or None (logged) when the database fails. The thread's connection
    is reused and kept (an API worker's SQLite connection stays open between requests)."""
    try:
        with kept_connection():
            return stats.queue_gauges(now)
    except peewee.PeeweeException as exc:
        log.warning("metrics: queue gauges unavailable: %s", error_line(exc)[:200])
        return None
