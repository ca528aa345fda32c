"""The event catalogue: every event type a subscription may ask for, declared once.

The create/PATCH validation, the OpenAPI enum and the docs read this table. A subscription's
`events` is a list of these names, or `["*"]`: every type, present and future.
"""

from __future__ import annotations

# New event types are one line here.
EVENT_TYPES = {
    "vc.test.ping": "A test event sent on request by POST /webhooks/{id}/test.",
}

# Stored alone as a subscription's `events`: every type, including types added after it was
# created (a stored copy of today's list would miss them).
EVERY_TYPE = "*"


def subscribed(events: list[str], event_type: str) -> bool:
    """Whether a subscription with this `events` list receives `event_type`."""
    return event_type in events or EVERY_TYPE in events
