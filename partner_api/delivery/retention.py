"""Retention: delete finished deliveries, their failure-audit rows and events left without
deliveries once older than PARTNER_API_RETENTION_DAYS, and Idempotency-Keys once past their
24 hours (`prune`, and daily in the dispatcher).

Work happens in short transactions of at most `batch_size` rows, so the API and the dispatchers
keep writing while a large prune runs.
"""

from __future__ import annotations

import datetime as dt
import time

from peewee import Tuple

from partner_api import clock, idempotency_keys
from partner_api.config import MAX_RETENTION_DAYS
from partner_api.db import write_transaction
from partner_api.delivery import lifecycle
from partner_api.errors import DomainError
from partner_api.models import Delivery, DeliveryStatus, DispatcherPoll, Event

BATCH_SIZE = 1000


def check_days(days: int) -> int:
    """A retention in whole days, 1 to MAX_RETENTION_DAYS."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise DomainError(
            "invalid_retention",
            f"the retention must be a whole number of days from 1 to {MAX_RETENTION_DAYS}",
        )
    return days


def prune(days: int, *, batch_size: int = BATCH_SIZE, yield_ratio: float = 1.0, should_stop=None):
    """Delete what the retention no longer keeps; returns the rows deleted per table.

    After each batch it sleeps `yield_ratio` times as long as the batch took, so other writers
    get the database (SQLite has one write lock; its waiters poll for it) for at least that
    share of the time. `should_stop()` is asked between batches (a dispatcher shutting down
    stops early and prunes the rest next time).
    """
    cutoff = clock.now() - dt.timedelta(days=check_days(days))
    counts = {
        "deliveries": 0,
        "delivery_failures": 0,
        "events": 0,
        "dispatcher_polls": 0,
        "idempotency_keys": 0,
    }
    stop = should_stop or (lambda: False)

    def step(batch, *args):
        started = time.monotonic()
        result = batch(*args)
        time.sleep((time.monotonic() - started) * yield_ratio)
        return result

    for status in DeliveryStatus.FINISHED:
        while not stop():
            deleted, failures = step(lifecycle.prune_finished, status, cutoff, batch_size)
            counts["deliveries"] += deleted
            counts["delivery_failures"] += failures
            if deleted < batch_size:
                break
    after = None
    while not stop():
        deleted, after = step(_prune_event_batch, cutoff, after, batch_size)
        counts["events"] += deleted
        if after is None:
            break
    if not stop():
        counts["dispatcher_polls"] = (
            DispatcherPoll.delete().where(DispatcherPoll.last_poll_at < cutoff).execute()
        )
    if not stop():
        # Their own lifetime, not the retention: a stored create answer holds a signing secret.
        counts["idempotency_keys"] = idempotency_keys.prune_expired(clock.now())
    return counts


def _prune_event_batch(cutoff: dt.datetime, after, batch_size: int):
    """One transaction: the next `batch_size` old events in (occurred_at, id) order after
    `after`, less those a delivery still refers to (say, a held one), which are stepped over
    rather than scanned again. Returns (deleted, where the next batch starts or None when done).

    Two index lookups rather than one NOT EXISTS query: the planner's choice for an anti-join
    flips to hashing both whole tables when its statistics lag behind a large prune.
    """
    with write_transaction():
        query = Event.select(Event.occurred_at, Event.id).where(Event.occurred_at < cutoff)
        if after is not None:
            query = query.where(Tuple(Event.occurred_at, Event.id) > Tuple(*after))
        found = list(query.order_by(Event.occurred_at, Event.id).limit(batch_size).tuples())
        if not found:
            return 0, None
        candidates = [row[1] for row in found]
        referred = {
            row[0]
            for row in Delivery.select(Delivery.event)
            .where(Delivery.event.in_(candidates))
            .distinct()
            .tuples()
        }
        # Nothing makes an old event referred to again (publishing creates new events), so the
        # events unreferred now are still free to delete at commit.
        free = [event_id for event_id in candidates if event_id not in referred]
        deleted = Event.delete().where(Event.id.in_(free)).execute() if free else 0
    return deleted, (found[-1] if len(found) == batch_size else None)
