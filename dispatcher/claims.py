"""Claiming due deliveries and recording what happened to each attempt.

A claim is a lease: it pushes `next_attempt_at` forward by the lease and stamps a fresh
`lease_token`, so several dispatchers never take the same delivery and a dead dispatcher's
deliveries come due again when the lease runs out. Every outcome write is guarded by the token.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import secrets

from partner_api import clock, ids, retry
from partner_api.config import Config
from partner_api.db import locked, write_transaction
from partner_api.deliveries import hold_pending_deliveries
from partner_api.models import (
    Delivery,
    DeliveryFailure,
    DeliveryStatus,
    Event,
    Subscription,
    SubscriptionStatus,
)

AUTO_DISABLE_REASON = "disabled after {count} consecutive failed delivery attempts"


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    """What one attempt needs, read in the claiming transaction."""

    id: str
    lease_token: str
    attempt: int  # the number of the attempt about to be made, 1-based
    event: Event
    subscription_id: str
    url: str
    secret: str


CANDIDATES_PER_CLAIM = 4  # rows examined per delivery wanted, to step past busy subscriptions


def claim_due_deliveries(
    limit: int, lease_seconds: float, *, in_flight=None, share: int | None = None
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries, oldest first, in one write transaction (BEGIN
    IMMEDIATE on SQLite, SKIP LOCKED on PostgreSQL): pick within shares, lease, load.

    With `share`, no subscription ends up with more than `share` deliveries counting those
    already `in_flight` ({subscription id: attempts running}), so one busy receiver cannot take
    every sender. Rows of a disabled or deleted subscription met on the way are held or cancelled.
    """
    now = clock.now()
    token = secrets.token_hex(16)
    with write_transaction():
        while True:
            picked = _pick_within_shares(now, limit, collections.Counter(in_flight or {}), share)
            if not picked:
                return []
            rows = _load(_lease(picked, now, lease_seconds, token))
            unsendable = [row for row in rows if not row.subscription.sendable]
            if unsendable:
                _hold_or_cancel(unsendable)
            if len(unsendable) < len(rows):
                break  # else every row was parked: look again, they are no longer due
    return [
        ClaimedDelivery(
            id=row.id,
            lease_token=token,
            attempt=row.attempts + 1,
            event=row.event,
            subscription_id=row.subscription.id,
            url=row.subscription.url,
            secret=row.subscription.secret,
        )
        for row in rows
        if row.subscription.sendable
    ]


def _pick_within_shares(now: dt.datetime, limit: int, in_flight, share: int | None) -> list[str]:
    """Ids of up to `limit` due deliveries, oldest first, skipping subscriptions at `share`."""
    saturated = [sub for sub, n in in_flight.items() if share and n >= share]
    query = Delivery.select(Delivery.id, Delivery.subscription).where(
        (Delivery.status == DeliveryStatus.PENDING) & (Delivery.next_attempt_at <= now)
    )
    if saturated:
        query = query.where(Delivery.subscription.not_in(saturated))
    query = query.order_by(Delivery.next_attempt_at).limit(limit * CANDIDATES_PER_CLAIM)
    # Concurrent dispatchers skip rows another one is claiming instead of waiting on them.
    candidates = locked(query, "FOR UPDATE SKIP LOCKED").tuples()
    picked = []
    for delivery_id, subscription_id in candidates:
        if share and in_flight[subscription_id] >= share:
            continue
        picked.append(delivery_id)
        in_flight[subscription_id] += 1
        if len(picked) == limit:
            break
    return picked


def _lease(delivery_ids: list[str], now: dt.datetime, lease_seconds: float, token: str):
    """Stamp the lease on those still pending; returns the ids leased."""
    query = (
        Delivery.update(
            next_attempt_at=now + dt.timedelta(seconds=lease_seconds), lease_token=token
        )
        .where(Delivery.id.in_(delivery_ids) & (Delivery.status == DeliveryStatus.PENDING))
        .returning(Delivery.id)
    )
    return [row.id for row in query.execute()]


def _load(delivery_ids: list[str]) -> list[Delivery]:
    """The leased deliveries with their event and subscription, in one query."""
    return list(
        Delivery.select(Delivery, Event, Subscription)
        .join(Event, on=(Delivery.event == Event.id))
        .switch(Delivery)
        .join(Subscription, on=(Delivery.subscription == Subscription.id))
        .where(Delivery.id.in_(delivery_ids))
        .order_by(Delivery.created_at)
    )


def _hold_or_cancel(rows) -> None:
    """Rows left pending on a subscription that was disabled or deleted around their claim
    (e.g. leased by a dispatcher that died): hold or cancel them like the subscription's
    other deliveries. The subscription is re-read here, so an enable that has just
    committed leaves the row pending, to be sent when its lease runs out."""
    delivery_ids = [row.id for row in rows]
    Delivery.update(status=DeliveryStatus.CANCELLED, lease_token=None).where(
        Delivery.id.in_(delivery_ids)
        & Delivery.subscription.in_(
            Subscription.select(Subscription.id).where(Subscription.deleted_at.is_null(False))
        )
    ).execute()
    Delivery.update(status=DeliveryStatus.HELD, lease_token=None).where(
        Delivery.id.in_(delivery_ids)
        & (Delivery.status == DeliveryStatus.PENDING)
        & Delivery.subscription.in_(
            Subscription.select(Subscription.id).where(
                (Subscription.status == SubscriptionStatus.DISABLED) & Subscription.live()
            )
        )
    ).execute()


def _owned(claim: ClaimedDelivery):
    return (Delivery.id == claim.id) & (Delivery.lease_token == claim.lease_token)


def record_delivered(claim: ClaimedDelivery) -> bool:
    """Mark delivered and reset the subscription's failure streak; False if the lease was lost."""
    now = clock.now()
    with write_transaction():
        updated = (
            Delivery.update(
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                attempts=claim.attempt,
                lease_token=None,
            )
            .where(_owned(claim))
            .execute()
        )
        if updated:
            Subscription.update(consecutive_failures=0).where(
                Subscription.id == claim.subscription_id
            ).execute()
    return bool(updated)


def record_failed_attempt(claim: ClaimedDelivery, result, config: Config) -> DeliveryFailure | None:
    """Audit a failed attempt, schedule the next one or dead-letter, and auto-disable the
    subscription at the configured streak. None if the lease was lost (another dispatcher owns
    the delivery now, and will record its own attempt)."""
    now = clock.now()
    next_at = retry.next_attempt_at(claim.attempt, config.retry_schedule, now)
    dead = next_at is None
    with write_transaction():
        updated = (
            Delivery.update(
                status=DeliveryStatus.DEAD_LETTERED if dead else DeliveryStatus.PENDING,
                attempts=claim.attempt,
                next_attempt_at=now if dead else next_at,
                lease_token=None,
            )
            .where(_owned(claim))
            .execute()
        )
        if not updated:
            return None
        failure = DeliveryFailure.create(
            id=ids.new_id("att"),
            delivery=claim.id,
            subscription=claim.subscription_id,
            event=claim.event.id,
            event_type=claim.event.type,
            attempt=claim.attempt,
            attempted_at=now,
            duration_ms=result.duration_ms,
            error_kind=result.error_kind,
            error_message=result.error_message or result.error_kind,
            response_status=result.status_code,
            response_excerpt=result.response_excerpt,
            next_attempt_at=next_at,
            dead_lettered=dead,
        )
        _count_failure(claim.subscription_id, now, config.auto_disable_after)
    return failure


def _count_failure(subscription_id: str, now: dt.datetime, disable_after: int) -> None:
    """One more consecutive failure; at the threshold the subscription is disabled and its
    pending deliveries are held until an operator re-enables it."""
    Subscription.update(consecutive_failures=Subscription.consecutive_failures + 1).where(
        Subscription.id == subscription_id
    ).execute()
    subscription = Subscription.get_by_id(subscription_id)
    enabled = subscription.status == SubscriptionStatus.ENABLED
    if subscription.consecutive_failures < disable_after and enabled:
        return
    if enabled:
        Subscription.update(
            status=SubscriptionStatus.DISABLED,
            disabled_reason=AUTO_DISABLE_REASON.format(count=subscription.consecutive_failures),
            disabled_at=now,
        ).where(Subscription.id == subscription_id).execute()
    # Also when another thread disabled it meanwhile: this delivery was just set pending.
    hold_pending_deliveries(subscription_id)
