"""The event catalogue: every event type a subscription may ask for, declared once.

The create/PATCH validation, the OpenAPI enum and the docs read this table.
"""

from __future__ import annotations

# New event types are one line here.
EVENT_TYPES = {
    "vc.test.ping": "A test event sent on request by POST /webhooks/{id}/test.",
}
