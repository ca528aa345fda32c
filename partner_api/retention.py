"""Retention: delete finished deliveries, their failure-audit rows and events left without
deliveries once older than PARTNER_API_RETENTION_DAYS (`prune`, and daily in the dispatcher).

Work happens in short transactions of at most `batch_size` rows, so the API and the dispatchers
keep writing while a large prune runs.
"""

from __future__ import annotations

import datetime as dt
import time

from peewee import Tuple, fn

from partner_api import clock
from partner_api.config import MAX_RETENTION_DAYS
from partner_api.db import locked, write_transaction
from partner_api.errors import DomainError
from partner_api.models import Delivery, DeliveryFailure, DeliveryStatus, DispatcherPoll, Event

BATCH_SIZE = 1000


def check_days(days: int) -> int:
    """A retention in whole days, 1 to MAX_RETENTION_DAYS."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise DomainError(
            "invalid_retention",
            f"the retention must be a whole number of days from 1 to {MAX_RETENTION_DAYS}",
        )
    return days


def prune(days: int, *, batch_size: int = BATCH_SIZE, pause: float = 0.0, should_stop=None):
    """Delete what the retention no longer keeps; returns the rows deleted per table.

    `pause` sleeps between batches (yielding the database to other writers); `should_stop()`
    is asked between batches (a dispatcher shutting down stops early and prunes next time).
    """
    cutoff = clock.now() - dt.timedelta(days=check_days(days))
    counts = {"deliveries": 0, "delivery_failures": 0, "events": 0, "dispatcher_polls": 0}
    stop = should_stop or (lambda: False)
    for status in DeliveryStatus.FINISHED:
        while not stop():
            deleted, failures = _prune_delivery_batch(status, cutoff, batch_size)
            counts["deliveries"] += deleted
            counts["delivery_failures"] += failures
            if deleted < batch_size:
                break
            time.sleep(pause)
    after = None
    while not stop():
        deleted, after = _prune_event_batch(cutoff, after, batch_size)
        counts["events"] += deleted
        if after is None:
            break
        time.sleep(pause)
    if not stop():
        counts["dispatcher_polls"] = (
            DispatcherPoll.delete().where(DispatcherPoll.last_poll_at < cutoff).execute()
        )
    return counts


def _prune_delivery_batch(status: str, cutoff: dt.datetime, batch_size: int) -> tuple[int, int]:
    """One transaction: up to `batch_size` finished deliveries and their audit rows."""
    with write_transaction():
        # (status, next_attempt_at) is the deliveries_due index: no scan of live rows.
        query = (
            Delivery.select(Delivery.id)
            .where((Delivery.status == status) & (Delivery.next_attempt_at < cutoff))
            .limit(batch_size)
        )
        # A replay holding one of these rows keeps it; other pruners take other rows.
        found = [row[0] for row in locked(query, "FOR UPDATE SKIP LOCKED").tuples()]
        if not found:
            return 0, 0
        failures = DeliveryFailure.delete().where(DeliveryFailure.delivery.in_(found)).execute()
        deleted = Delivery.delete().where(Delivery.id.in_(found)).execute()
    return deleted, failures


def _prune_event_batch(cutoff: dt.datetime, after, batch_size: int):
    """One transaction: up to `batch_size` old events no delivery refers to, in (occurred_at,
    id) order after `after`; returns (deleted, where the next batch starts or None when done).
    Old events still referred to (say, held deliveries) are stepped over, not scanned again."""
    referred = Delivery.select(Delivery.id).where(Delivery.event == Event.id)
    with write_transaction():
        query = Event.select(Event.occurred_at, Event.id).where(
            (Event.occurred_at < cutoff) & ~fn.EXISTS(referred)
        )
        if after is not None:
            query = query.where(Tuple(Event.occurred_at, Event.id) > Tuple(*after))
        found = list(query.order_by(Event.occurred_at, Event.id).limit(batch_size).tuples())
        if not found:
            return 0, None
        # Nothing makes an old event referred to again (publishing creates new events), so the
        # rows found are still free to delete.
        deleted = Event.delete().where(Event.id.in_([row[1] for row in found])).execute()
    return deleted, (found[-1] if len(found) == batch_size else None)
