"""A subscription's delivery log as its partner reads it: every delivery newest first (of one
status, if asked), and one delivery with every attempt it had. Read-only; the state changes
are in `lifecycle.py`, the attempts across replays come from `history.py`.
"""

from __future__ import annotations

from peewee import fn

from partner_api import ids
from partner_api.delivery import history, outcomes
from partner_api.delivery.subscriptions import get_subscription
from partner_api.errors import DomainError
from partner_api.models import Delivery, DeliveryFailure, DeliveryHistory, DeliveryStatus, Event
from partner_api.pagination import paginate

STATUSES = DeliveryStatus.ALL


# A failed attempt without an answer (a timeout, a refused connection) reads as this, so that
# NULL can mean "the latest attempt is not in the failure audit".
NO_ANSWER = 0


def _latest_failure_status():
    """The response status of the delivery's latest attempt when the failure audit or the
    history holds it (`NO_ANSWER` for a failure without one), else NULL: then the latest
    attempt is the success the delivery row keeps (`response_status`).

    Attempt numbers keep counting across replays, so the latest attempt is number
    `deliveries.attempts`: a failure of that number, or a success a replay moved into the
    history. Two scalar subqueries, run per row, each an index probe of that delivery's rows:
    an EXISTS here let PostgreSQL plan a hashed subplan over the whole failure table.
    """
    failure = DeliveryFailure.alias("latest_failure")
    success = DeliveryHistory.alias("latest_success")
    failed = (
        failure.select(fn.COALESCE(failure.response_status, NO_ANSWER))
        .where((failure.delivery == Delivery.id) & (failure.attempt == Delivery.attempts))
        .limit(1)
    )
    replayed_success = (
        success.select(success.response_status)
        .where(
            (success.delivery == Delivery.id)
            & (success.kind == DeliveryHistory.DELIVERED)
            & (success.attempt == Delivery.attempts)
        )
        .limit(1)
    )
    return fn.COALESCE(failed, replayed_success)


def _log_query():
    """Deliveries with their event type and the latest failed attempt's response status.

    Cost: the page's rows come in order from deliveries_subscription_created (or
    deliveries_subscription_status_created with a status), then per row one primary-key
    lookup of its event and one probe of delivery_failures_delivery, which reads only that
    delivery's failures (bounded by the retry schedule per replay). So a page costs O(limit),
    whatever the number of deliveries the subscription has.
    """
    return Delivery.select(
        Delivery,
        Event.type.alias("event_type"),
        _latest_failure_status().alias("latest_failure_status"),
    ).join(Event, on=(Delivery.event == Event.id))


def _last_response_status(delivery: Delivery) -> int | None:
    if not delivery.attempts:
        return None
    if delivery.latest_failure_status is None:  # the latest attempt succeeded
        return delivery.response_status
    return delivery.latest_failure_status or None  # NO_ANSWER: none


def _item(delivery: Delivery) -> dict:
    """One delivery as the log shows it. A finished delivery's `next_attempt_at` column holds
    when it finished (lifecycle), a held one's is stale until its subscription is enabled, and
    a replayed one keeps its earlier `delivered_at`: each is shown only while it means what
    its name says."""
    scheduled = delivery.status == DeliveryStatus.PENDING
    delivered = delivery.status == DeliveryStatus.DELIVERED
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": delivery.created_at,
        "next_attempt_at": delivery.next_attempt_at if scheduled else None,
        "delivered_at": delivery.delivered_at if delivered else None,
        "last_response_status": _last_response_status(delivery),
    }


def list_name(subscription_id: str, status: str | None) -> str:
    """A cursor belongs to one subscription's log with one filter, and no other list."""
    return f"deliveries:{subscription_id}:{status or '*'}"


def list_deliveries(
    org_id: str, subscription_id: str, status: str | None, limit: int, cursor: str | None
) -> dict:
    """The subscription's deliveries, newest first (created_at, id), optionally of one status."""
    if status is not None and status not in STATUSES:
        raise DomainError(
            "invalid_status",
            f"Unknown status {status!r}; one of: {', '.join(STATUSES)}.",
            field="status",
            location="query",
        )
    subscription = get_subscription(org_id, subscription_id)
    query = _log_query().where(Delivery.subscription == subscription.id)
    if status is not None:
        query = query.where(Delivery.status == status)
    name = list_name(subscription.id, status)
    page = paginate(query.objects(), Delivery.created_at, Delivery.id, name, limit, cursor)
    return {**page, "data": [_item(delivery) for delivery in page["data"]]}


def get_delivery(org_id: str, subscription_id: str, delivery_id: str) -> dict:
    """One delivery of the subscription with every attempt, oldest first, across replays;
    `delivery_not_found` for another subscription's (or org's) delivery or a malformed id."""
    subscription = get_subscription(org_id, subscription_id)
    delivery = None
    if ids.looks_like("dlv", delivery_id):
        delivery = (
            _log_query()
            .where((Delivery.id == delivery_id) & (Delivery.subscription == subscription.id))
            .objects()
            .first()
        )
    if delivery is None:
        raise DomainError(
            "delivery_not_found",
            f"No delivery with id {delivery_id!r} for webhook subscription {subscription.id}.",
        )
    item = _item(delivery)
    # `attempts` is the list here (the contract's name); the count stays as `attempt_count`.
    item["attempt_count"] = item.pop("attempts")
    item["attempts"] = [_attempt(attempt) for attempt in history.delivery_attempts(delivery)]
    return item


def _attempt(attempt: dict) -> dict:
    """An attempt as partners see it: a success's outcome is `ok` (the operator CLI says
    `delivered`)."""
    failed = attempt["outcome"] != DeliveryHistory.DELIVERED
    return {
        "attempt": attempt["attempt"],
        "attempted_at": attempt["attempted_at"],
        "duration_ms": attempt["duration_ms"],
        "outcome": attempt["outcome"] if failed else outcomes.OK,
        "response_status": attempt["status"],
        "response_excerpt": attempt["response_excerpt"],
    }
