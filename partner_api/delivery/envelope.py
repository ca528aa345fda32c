"""The wire envelope of a delivery: `{"event", "id", "subscription_id", "occurred_at", "data"}`.

The same bytes on every attempt of one delivery; `signing.py` signs exactly these bytes.
"""

from __future__ import annotations

import json

from partner_api import clock
from partner_api.models import Event


def delivery_body(event: Event, subscription_id: str) -> bytes:
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
