"""A delivery's history as operators read it: find deliveries (newest first), one delivery
with its event and subscription, and every attempt it had. Read-only; the state changes are
in `lifecycle.py`.
"""

from __future__ import annotations

from partner_api import clock, ids
from partner_api.errors import DomainError
from partner_api.models import (
    Delivery,
    DeliveryFailure,
    DeliveryHistory,
    DeliveryStatus,
    Event,
    Org,
    Subscription,
)

MAX_LIST_LIMIT = 1000


def list_deliveries(
    org_id: str | None = None,
    subscription_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[Delivery]:
    """Deliveries newest first, with their event and subscription, optionally filtered."""
    if status is not None and status not in DeliveryStatus.ALL:
        raise DomainError(
            "invalid_status",
            f"unknown status {status!r}; one of: {', '.join(DeliveryStatus.ALL)}",
        )
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise DomainError("invalid_limit", f"limit must be from 1 to {MAX_LIST_LIMIT}")
    if org_id is not None and Org.get_or_none(Org.id == org_id) is None:
        raise DomainError("org_not_found", f"no org with id {org_id!r}")
    if subscription_id is not None and not Subscription.get_or_none(
        Subscription.id == subscription_id
    ):
        raise DomainError(
            "subscription_not_found", f"no webhook subscription with id {subscription_id!r}"
        )
    query = _with_event_and_subscription()
    if org_id is not None:
        query = query.where(Subscription.org == org_id)
    if subscription_id is not None:
        query = query.where(Delivery.subscription == subscription_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    return list(query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit))


def get_delivery(delivery_id: str) -> Delivery:
    """One delivery with its event and subscription, or `delivery_not_found`."""
    delivery = None
    if ids.looks_like("dlv", delivery_id):
        delivery = _with_event_and_subscription().where(Delivery.id == delivery_id).first()
    if delivery is None:
        raise DomainError("delivery_not_found", f"no delivery with id {delivery_id!r}")
    return delivery


def _with_event_and_subscription():
    return (
        Delivery.select(Delivery, Event, Subscription)
        .join(Event, on=(Delivery.event == Event.id))
        .switch(Delivery)
        .join(Subscription, on=(Delivery.subscription == Subscription.id))
    )


def delivery_attempts(delivery: Delivery) -> list[dict]:
    """Every recorded attempt, oldest first, across replays: the failure audit and each
    successful attempt."""
    attempts = [
        {
            "attempt": failure.attempt,
            "attempted_at": clock.isoformat(failure.attempted_at),
            "outcome": failure.error_kind,
            "status": failure.response_status,
            "duration_ms": failure.duration_ms,
            "error": failure.error_message,
            "response_excerpt": failure.response_excerpt,
            "next_attempt_at": clock.isoformat(failure.next_attempt_at),
            "dead_lettered": bool(failure.dead_lettered),
        }
        for failure in DeliveryFailure.select().where(DeliveryFailure.delivery == delivery.id)
    ]
    successes = _successes(delivery)
    attempts += [
        {
            "attempt": attempt,
            "attempted_at": clock.isoformat(at),
            "outcome": "delivered",
            "status": status,
            "duration_ms": duration_ms,
            "error": None,
            "response_excerpt": None,
            "next_attempt_at": None,
            "dead_lettered": False,
        }
        for attempt, at, status, duration_ms in successes
    ]
    return sorted(attempts, key=lambda a: (a["attempted_at"], a["attempt"]))


def _successes(delivery: Delivery) -> list[tuple]:
    """(attempt, time, status, duration) of each successful attempt: those a replay moved into
    the history, and the row's own while it is delivered."""
    entries = DeliveryHistory.select().where(
        (DeliveryHistory.delivery == delivery.id)
        & (DeliveryHistory.kind == DeliveryHistory.DELIVERED)
    )
    successes = [(e.attempt, e.at, e.response_status, e.duration_ms) for e in entries]
    if delivery.status == DeliveryStatus.DELIVERED and delivery.delivered_at is not None:
        successes.append(
            (
                delivery.attempts,
                delivery.delivered_at,
                delivery.response_status,
                delivery.duration_ms,
            )
        )
    return successes


def delivery_replays(delivery: Delivery) -> list[dict]:
    """Each time the delivery was sent again, oldest first: when, by whom, after which
    attempt."""
    return [
        {
            "replayed_at": clock.isoformat(entry.at),
            "by": entry.actor,
            "after_attempt": entry.attempt,
        }
        for entry in DeliveryHistory.select()
        .where(
            (DeliveryHistory.delivery == delivery.id)
            & (DeliveryHistory.kind == DeliveryHistory.REPLAYED)
        )
        .order_by(DeliveryHistory.at, DeliveryHistory.id)
    ]
