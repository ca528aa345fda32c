"""The event catalogue and `publish_event`, the one call that emits a webhook event.

Publishing writes the event and one delivery per matching enabled subscription in a single
transaction (the outbox); the dispatcher does the sending.
"""

from __future__ import annotations

import json

from partner_api import clock, ids
from partner_api.db import is_postgres, write_transaction
from partner_api.models import Delivery, Event, Subscription

# New event types are one line here.
EVENT_TYPES = {
    "vc.test.ping": "A test event sent on request by POST /webhooks/{id}/test.",
}


def publish_event(org_id: str, event_type: str, data: dict, *, subscription_id: str | None = None):
    """Record an event for an org and queue it for its subscribers; returns (event, deliveries).

    A disabled subscription's delivery is queued as held, to be sent if an operator re-enables
    it. `subscription_id` sends to that one subscription whatever its event filter (test ping).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    now = clock.now()
    with write_transaction():  # reads subscriptions, then writes: take the lock up front
        query = Subscription.select().where(
            (Subscription.org == org_id) & Subscription.deleted_at.is_null()
        )
        if subscription_id is not None:
            query = query.where(Subscription.id == subscription_id)
        if is_postgres():
            # A concurrent delete, disable or enable waits for this commit, so its sweep of
            # the subscription's deliveries also sees the ones created here.
            query = query.for_update("FOR SHARE")
        event = Event.create(
            id=ids.new_id("evt"), org=org_id, type=event_type, data=data, occurred_at=now
        )
        deliveries = [
            Delivery.create(
                id=ids.new_id("dlv"),
                event=event,
                subscription=sub,
                status="pending" if sub.status == "enabled" else "held",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            for sub in query
            if subscription_id is not None or event_type in sub.events
        ]
    return event, deliveries


def envelope(event: Event, subscription_id: str) -> bytes:
    """The delivery body: the same bytes on every attempt of one delivery."""
    return json.dumps(
        {
            "event": event.type,
            "id": event.id,
            "subscription_id": subscription_id,
            "occurred_at": clock.isoformat(event.occurred_at),
            "data": event.data,
        },
        separators=(",", ":"),
    ).encode()


def openapi_webhooks() -> dict:
    """OpenAPI 3.1 `webhooks`: what a receiver gets for each event type, and how to verify it."""
    headers = [
        {
            "name": "X-VC-Timestamp",
            "in": "header",
            "required": True,
            "description": "Unix seconds at the moment of this attempt (fresh on every retry). "
            "Reject deliveries older than 5 minutes.",
            "schema": {"type": "string", "example": "1795780830"},
        },
        {
            "name": "X-VC-Signature",
            "in": "header",
            "required": True,
            "description": "`v1=` + lowercase hex HMAC-SHA256, keyed with the subscription "
            "secret's UTF-8 bytes, of `<X-VC-Timestamp>.<raw body bytes>`. Compare in "
            "constant time.",
            "schema": {"type": "string", "example": "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e7"},
        },
    ]
    envelope_schema = {
        "type": "object",
        "required": ["event", "id", "subscription_id", "occurred_at", "data"],
        "properties": {
            "event": {"type": "string", "description": "The event type."},
            "id": {
                "type": "string",
                "description": "Event id; the same on every attempt, "
                "so receivers can de-duplicate on it.",
            },
            "subscription_id": {"type": "string"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "data": {"type": "object"},
        },
    }
    return {
        event_type: {
            "post": {
                "summary": description,
                "description": "POSTed to the subscription URL with `Content-Type: "
                "application/json`. A 2xx answer within 10 s is success; anything else, "
                "redirects included (never followed), is retried after 1m, 5m, 30m, 2h, 6h "
                "and 24h, then dead-lettered.",
                "security": [],
                "parameters": headers,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": envelope_schema,
                            "example": {
                                "event": event_type,
                                "id": "evt_uz6lt44a4hpsvjpzaq426i5eoa",
                                "subscription_id": "wh_tpuhksvmcfwqmj3bgj72wzf2fe",
                                "occurred_at": "2026-11-27T06:34:08.592Z",
                                "data": {"message": "Test ping from Partner API."},
                            },
                        }
                    },
                },
                "responses": {
                    "2XX": {"description": "Delivered."},
                    "default": {"description": "A failed attempt; it will be retried."},
                },
            }
        }
        for event_type, description in EVENT_TYPES.items()
    }
