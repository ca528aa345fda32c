"""`publish_event`, the one call that emits a webhook event: it writes the event and one
delivery per matching subscription in one transaction (the outbox), so an event is never
recorded without its deliveries, nor a delivery without its event.
"""

from __future__ import annotations

from partner_api import clock, ids
from partner_api.db import locked, write_transaction
from partner_api.delivery import lifecycle
from partner_api.delivery.event_types import EVENT_TYPES, subscribed
from partner_api.models import Event, Subscription


def publish_event(org_id: str, event_type: str, data: dict, *, subscription_id: str | None = None):
    """Record an event for an org and queue it for its subscribers; returns (event, deliveries).

    A disabled subscription's delivery is queued as held, to be sent once it is enabled again.
    `subscription_id` sends to that one subscription whatever its event filter (test ping).
    """
    if event_type not in EVENT_TYPES:  # a programming error, not a partner's input
        raise ValueError(f"unknown event type {event_type!r}")
    now = clock.now()
    with write_transaction():  # reads subscriptions, then writes: take the lock up front
        query = Subscription.select().where(Subscription.live(org_id))
        if subscription_id is not None:
            query = query.where(Subscription.id == subscription_id)
        # A concurrent delete, disable or enable waits for this commit, so its sweep of the
        # subscription's deliveries also sees the ones created here.
        query = locked(query, "FOR SHARE")
        event = Event.create(
            id=ids.new_id("evt"), org=org_id, type=event_type, data=data, occurred_at=now
        )
        wanted = [
            sub
            for sub in query
            if subscription_id is not None or subscribed(sub.events, event_type)
        ]
        deliveries = lifecycle.create_deliveries(event, wanted, now)
    return event, deliveries
