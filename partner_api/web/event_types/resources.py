"""Views of the event catalogue: read from the one table that declares event types."""

from partner_api import scopes
from partner_api.delivery.event_types import EVENT_TYPES, EVERY_TYPE
from partner_api.web.auth import require_scope
from partner_api.web.event_types.schemas import EventTypeListSchema
from partner_api.web.extensions import Blueprint, NoQuerySchema

blp = Blueprint("event_types", __name__, description="The event types webhooks can deliver.")
LIST_DESCRIPTION = (
    "Every event type a subscription's `events` may name, with what it means. Any valid key "
    f'may read it. A subscription with `["{EVERY_TYPE}"]` receives all of them, including '
    "types added later."
)


@blp.get("/event-types")
@require_scope(scopes.IDENTITY_READ)
@blp.arguments(NoQuerySchema, location="query")
@blp.response(200, EventTypeListSchema)
@blp.errors(401, 403, 422, 429)
@blp.doc(description=LIST_DESCRIPTION)
def list_event_types(_query):
    """List the event types a webhook subscription can receive"""
    return {
        "data": [{"name": name, "description": EVENT_TYPES[name]} for name in sorted(EVENT_TYPES)]
    }
