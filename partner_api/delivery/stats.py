"""`stats`: queue and subscription health in one read, the queue gauges of `/metrics`, and
each dispatcher's poll stamps (written by its heartbeat, so `stats` can tell a running
dispatcher from a stopped one; removed when it stops cleanly).

Every count is served by an index (deliveries_due, delivery_failures_time, dispatcher_polls).
"""

from __future__ import annotations

import datetime as dt

from peewee import fn

from partner_api import clock
from partner_api.models import (
    Delivery,
    DeliveryFailure,
    DeliveryStatus,
    DispatcherPoll,
    Subscription,
    SubscriptionStatus,
)

RECENT_DISPATCHERS = dt.timedelta(days=1)  # dispatchers not seen for longer are left out


def stale_after(poll_interval: float) -> float:
    """Seconds without a poll after which a dispatcher counts as stopped: a poll may wait up to
    one interval for a busy sender before it stamps again, so allow a few intervals."""
    return 3 * poll_interval + 30


def _count(*conditions) -> int:
    query = Delivery.select()
    for condition in conditions:
        query = query.where(condition)
    return query.count()


# Long: one dict literal, a line or two per figure `stats` shows.
def collect_stats(poll_interval: float) -> dict:
    """Counts of the delivery queue, the last hour's outcomes and the dispatchers' last polls."""
    now = clock.now()
    hour_ago = now - dt.timedelta(hours=1)
    pending = Delivery.status == DeliveryStatus.PENDING
    oldest_due = (
        Delivery.select(fn.MIN(Delivery.next_attempt_at))
        .where(pending & (Delivery.next_attempt_at <= now))
        .scalar()
    )
    dispatchers = list(
        DispatcherPoll.select()
        .where(DispatcherPoll.last_poll_at >= now - RECENT_DISPATCHERS)
        .order_by(DispatcherPoll.last_poll_at.desc())
    )
    last_poll = DispatcherPoll.select(fn.MAX(DispatcherPoll.last_poll_at)).scalar()
    threshold = stale_after(poll_interval)
    return {
        "pending": _count(pending),
        "due_now": _count(pending, Delivery.next_attempt_at <= now),
        "oldest_due_age_seconds": _age(now, oldest_due),
        "held": _count(Delivery.status == DeliveryStatus.HELD),
        # A leased delivery is pending with a lease whose expiry is still ahead.
        "in_flight": _count(
            pending, Delivery.lease_token.is_null(False), Delivery.next_attempt_at > now
        ),
        "delivered_last_hour": _count(
            Delivery.status == DeliveryStatus.DELIVERED, Delivery.next_attempt_at >= hour_ago
        ),
        "failed_attempts_last_hour": DeliveryFailure.select()
        .where(DeliveryFailure.attempted_at >= hour_ago)
        .count(),
        "dead_lettered": _count(Delivery.status == DeliveryStatus.DEAD_LETTERED),
        "disabled_subscriptions": Subscription.select()
        .where((Subscription.status == SubscriptionStatus.DISABLED) & Subscription.live())
        .count(),
        "last_poll_at": clock.isoformat(last_poll),
        "last_poll_age_seconds": _age(now, last_poll),
        "dispatcher_stopped": last_poll is None or _age(now, last_poll) > threshold,
        "dispatchers": [
            {
                "id": poll.dispatcher_id,
                "hostname": poll.hostname,
                "pid": poll.pid,
                "started_at": clock.isoformat(poll.started_at),
                "last_poll_at": clock.isoformat(poll.last_poll_at),
                "stopped": _age(now, poll.last_poll_at) > threshold,
            }
            for poll in dispatchers
        ],
    }


def _age(now: dt.datetime, moment: dt.datetime | None) -> float | None:
    return None if moment is None else round(max(0.0, (now - moment).total_seconds()), 3)


def stamp_poll(dispatcher_id: str, hostname: str, pid: int, started_at: dt.datetime) -> None:
    """Record that this dispatcher polled now (one row per dispatcher, upserted)."""
    now = clock.now()
    DispatcherPoll.insert(
        dispatcher_id=dispatcher_id,
        hostname=hostname,
        pid=pid,
        started_at=started_at,
        last_poll_at=now,
    ).on_conflict(
        conflict_target=[DispatcherPoll.dispatcher_id],
        update={DispatcherPoll.last_poll_at: now},
    ).execute()


def forget_dispatcher(dispatcher_id: str) -> None:
    """A dispatcher stopped cleanly: remove its row, so `stats` shows no dispatcher polling at
    once instead of after the stale threshold. A killed one cannot: its row goes stale."""
    DispatcherPoll.delete().where(DispatcherPoll.dispatcher_id == dispatcher_id).execute()


def queue_gauges(now: dt.datetime) -> dict:
    """What the queue gauges show: due now, how long the oldest due has waited, held, and
    disabled subscriptions. The due count and age are served by the (status,
    next_attempt_at) index, like the claim itself."""
    due, oldest = (
        Delivery.select(fn.COUNT(Delivery.id), fn.MIN(Delivery.next_attempt_at))
        .where((Delivery.status == DeliveryStatus.PENDING) & (Delivery.next_attempt_at <= now))
        .tuples()
        .get()
    )
    if isinstance(oldest, str):  # SQLite hands back MIN() of a datetime column as text
        oldest = Delivery.next_attempt_at.python_value(oldest)
    return {
        "due": due,
        "oldest_due_seconds": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        "held": _count(Delivery.status == DeliveryStatus.HELD),
        "disabled_subscriptions": Subscription.select()
        .where((Subscription.status == SubscriptionStatus.DISABLED) & Subscription.live())
        .count(),
    }
