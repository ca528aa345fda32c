"""Sending finished deliveries again: `deliveries replay` (one) and `webhooks recover` (every
dead letter of a subscription since a time): which deliveries, checked; `lifecycle.replay`
makes them due again.

A replay keeps the delivery id and its event, so the receiver sees the same event `id`.
"""

from __future__ import annotations

import datetime as dt
import re

from partner_api import clock, ids
from partner_api.db import locked, write_transaction
from partner_api.delivery import lifecycle, subscriptions
from partner_api.errors import DomainError
from partner_api.models import Delivery, DeliveryStatus, Event, Subscription

RECOVER_BATCH = 500  # deliveries reset per transaction, so the dispatcher is never held up long
# ASCII digits only: `\d` would take any script's digits, which int() reads as well.
_AGO = re.compile(r"[0-9]{1,6}[mhd]")
# The times `--since` accepts: any replay worth asking for, far from what a datetime holds.
SINCE_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
SINCE_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
_SHOWN_EARLIEST, _SHOWN_LATEST = "2000-01-01T00:00:00Z", "9000-01-01T00:00:00Z"
_AGO_UNITS = {"m": 60, "h": 3600, "d": 86400}


def _live_subscription(subscription_id: str) -> Subscription:
    subscription = None
    if ids.looks_like("wh", subscription_id):
        query = Subscription.select().where(Subscription.id == subscription_id)
        # An enable, disable or delete committing now waits, so the status read here
        # (pending or held) is still true when the replay commits.
        subscription = locked(query, "FOR SHARE").first()
    if subscription is None:
        raise DomainError(
            "subscription_not_found", f"no webhook subscription with id {subscription_id!r}"
        )
    if subscription.deleted_at is not None:
        raise DomainError(
            "subscription_deleted",
            f"webhook subscription {subscription.id} is deleted; its deliveries cannot be sent",
        )
    return subscription


def replay_delivery(
    delivery_id: str,
    actor: str = lifecycle.OPERATOR,
    *,
    org_id: str | None = None,
    subscription_id: str | None = None,
) -> Delivery:
    """Send a delivered or dead-lettered delivery again; returns the delivery to be sent.
    `actor` (operator or partner) is recorded in its history.

    A partner's redelivery is scoped: `subscription_id` must be a live subscription of `org_id`
    and the delivery one of its, else they are not found, exactly like unknown ids."""
    with write_transaction():
        query = Delivery.select().where(Delivery.id == delivery_id)
        if subscription_id is not None:
            subscriptions.get_subscription(org_id, subscription_id)
            query = query.where(Delivery.subscription == subscription_id)
        delivery = None
        if ids.looks_like("dlv", delivery_id):
            # A concurrent prune (SKIP LOCKED) or replay of this row waits for this one.
            delivery = locked(query).first()
        if delivery is None:
            raise DomainError("delivery_not_found", f"no delivery with id {delivery_id!r}")
        subscription = _live_subscription(delivery.subscription_id)
        if delivery.status not in lifecycle.REPLAYABLE:
            raise DomainError(
                "delivery_not_replayable",
                f"delivery {delivery.id} is {delivery.status}; only delivered or dead-lettered "
                "deliveries can be replayed",
            )
        lifecycle.replay([delivery.id], subscription, actor)
    return Delivery.get_by_id(delivery.id)


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`--since`: RFC 3339 with an offset (`2026-11-27T10:00:00Z`) or an age (`30m`, `2h`,
    `3d`), from SINCE_EARLIEST to SINCE_LATEST; returns naive UTC like the database."""
    now = clock.now() if now is None else now
    value = (text or "").strip()
    moment = _ago(value, now) if _AGO.fullmatch(value) else _rfc3339(value)
    if moment is None or not SINCE_EARLIEST <= moment <= SINCE_LATEST:
        # Compared while aware: converting a time near year 1 or 9999 to UTC would overflow.
        raise DomainError(
            "invalid_since",
            "--since must be an RFC 3339 time with an offset (2026-11-27T10:00:00Z) or an age "
            f"such as 30m, 2h or 3d, from {_SHOWN_EARLIEST} to {_SHOWN_LATEST}; got {text!r}",
        )
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _ago(value: str, now: dt.datetime) -> dt.datetime | None:
    """`now` less the age, or None when that is before SINCE_EARLIEST (or past what a
    datetime can hold)."""
    seconds = int(value[:-1]) * _AGO_UNITS[value[-1]]
    now = now.replace(tzinfo=dt.UTC)
    if seconds > (now - SINCE_EARLIEST).total_seconds():
        return None
    return now - dt.timedelta(seconds=seconds)


def _rfc3339(value: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None and "T" in value.upper() else None


def dead_letters_since(subscription_id: str, since: dt.datetime) -> tuple[Subscription, list[str]]:
    """The subscription and the ids of its dead-lettered deliveries whose event occurred at or
    after `since`, oldest event first."""
    subscription = _live_subscription(subscription_id)
    found = (
        Delivery.select(Delivery.id)
        .join(Event, on=(Delivery.event == Event.id))
        .where(
            (Delivery.subscription == subscription.id)
            & (Delivery.status == DeliveryStatus.DEAD_LETTERED)
            & (Event.occurred_at >= since)
        )
        .order_by(Event.occurred_at, Delivery.id)
        .tuples()
    )
    return subscription, [row[0] for row in found]


def replay_dead_letters(subscription_id: str, found: list[str], progress=None) -> int:
    """Replay these dead letters of a subscription in short transactions; `progress(n)` is told
    after each batch. Returns how many were replayed (ones replayed meanwhile are skipped)."""
    replayed = 0
    for start in range(0, len(found), RECOVER_BATCH):
        batch = found[start : start + RECOVER_BATCH]
        with write_transaction():
            # Re-read each time: the subscription may have been disabled or deleted meanwhile.
            subscription = _live_subscription(subscription_id)
            dead = (DeliveryStatus.DEAD_LETTERED,)
            replayed += lifecycle.replay(batch, subscription, lifecycle.OPERATOR, statuses=dead)
        if progress is not None:
            progress(len(batch))
    return replayed
