"""Schemas of the webhooks resource."""

import marshmallow as ma

from partner_api.delivery import outcomes
from partner_api.delivery.delivery_log import STATUSES
from partner_api.delivery.event_types import EVENT_TYPES, EVERY_TYPE
from partner_api.delivery.lifecycle import PARTNER_DISABLE_REASON
from partner_api.delivery.webhook_url import MAX_URL_LENGTH
from partner_api.models import SubscriptionStatus
from partner_api.pagination import ListQuerySchema, page_schema
from partner_api.web.fields import Timestamp

# A reserved example domain (RFC 2606): it does not resolve, so sending the example unchanged
# ("Try it out") is refused as `host_unresolvable`, and the prose says so.
PLACEHOLDER_URL = "https://hooks.example.com/partner-api"
PLACEHOLDER_NOTE = (
    f"The example `{PLACEHOLDER_URL}` is a placeholder on a reserved domain: replace it with "
    "your own HTTPS endpoint. Sent as it is, it answers 422 `host_unresolvable`."
)
EVENTS_DESCRIPTION = (
    f'Event types to receive. Omitted, or `["{EVERY_TYPE}"]`: every type, present and '
    f'future (stored and shown as `["{EVERY_TYPE}"]`). `"{EVERY_TYPE}"` cannot be combined '
    "with named types (422 `event_types_with_wildcard`). Known types: "
)
DESCRIPTION_VALIDATORS = [
    ma.validate.Length(max=500),
    ma.validate.Regexp(
        r"^[^\x00-\x08\x0b-\x1f\x7f]*$", error="Control characters are not allowed."
    ),
]


class SubscriptionCreateSchema(ma.Schema):
    url = ma.fields.String(
        required=True,
        metadata={
            "description": "Absolute https:// URL of your receiver, which gets the deliveries "
            f"(max 2048 characters). {PLACEHOLDER_NOTE}",
            "example": PLACEHOLDER_URL,
            # Documented, not validated here: the SSRF parser refuses with its own codes.
            "format": "uri",
            "maxLength": MAX_URL_LENGTH,
        },
    )
    events = ma.fields.List(
        # `enum` documents the catalogue; unknown types are refused as `unknown_event_type`.
        ma.fields.String(metadata={"enum": [EVERY_TYPE, *sorted(EVENT_TYPES)]}),
        validate=ma.validate.Length(min=1),
        load_default=None,
        metadata={
            "description": EVENTS_DESCRIPTION + ", ".join(sorted(EVENT_TYPES)) + ".",
            "example": [EVERY_TYPE],
        },
    )
    description = ma.fields.String(
        load_default="",
        validate=DESCRIPTION_VALIDATORS,
        metadata={"example": "Production receiver"},
    )


class SubscriptionSchema(ma.Schema):
    id = ma.fields.String(metadata={"example": "wh_2c7qkq3w6yq4n2m7hb5r3v2e5x"})
    url = ma.fields.String(
        metadata={
            "example": PLACEHOLDER_URL,
            "format": "uri",
            "maxLength": MAX_URL_LENGTH,
        }
    )
    events = ma.fields.List(
        ma.fields.String(),
        metadata={
            "description": f'The event types it receives; `["{EVERY_TYPE}"]`: every type, '
            "present and future.",
            "example": ["vc.test.ping"],
        },
    )
    description = ma.fields.String()
    status = ma.fields.String(metadata={"description": "`enabled` or `disabled`."})
    disabled_reason = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "Why it was disabled: after consecutive failed attempts, by an "
            f'operator, or "{PARTNER_DISABLE_REASON}" (`PATCH` with `status: disabled`).'
        },
    )
    disabled_at = Timestamp(allow_none=True)
    consecutive_failures = ma.fields.Integer(
        metadata={
            "description": "Failed attempts in a row since the last successful one. The "
            "subscription is disabled once this reaches the configured count and the streak "
            "has lasted long enough (see `failing_since` and the delivery terms under "
            "`webhooks`)."
        }
    )
    failing_since = Timestamp(
        allow_none=True,
        metadata={"description": "When the current failure streak began; null without one."},
    )
    created_at = Timestamp()


class SubscriptionCreatedSchema(SubscriptionSchema):
    secret = ma.fields.String(
        metadata={
            "description": "Signing secret (`whsec_…`). Shown only in this response; store it now.",
            "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw0Kn6yGGIcIA=",
        }
    )


class TestPingSchema(ma.Schema):
    secret = ma.fields.String(
        required=True,
        metadata={
            "description": "The subscription's signing secret, proving the caller holds it.",
            "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw0Kn6yGGIcIA=",
        },
    )


class TestPingResultSchema(ma.Schema):
    event_id = ma.fields.String(metadata={"example": "evt_q4n2m7hb5r3v2e5x2c7qkq3w6y"})
    delivery_id = ma.fields.String(metadata={"example": "dlv_m7hb5r3v2e5x2c7qkq3w6yq4n2"})


class RedeliveryResultSchema(ma.Schema):
    delivery_id = ma.fields.String(
        required=True,
        metadata={
            "description": "The delivery sent again: the same id, and the same event `id` at "
            "your receiver.",
            "example": "dlv_m7hb5r3v2e5x2c7qkq3w6yq4n2",
        },
    )


class FailureSchema(ma.Schema):
    id = ma.fields.String(metadata={"example": "att_hb5r3v2e5x2c7qkq3w6yq4n2m7"})
    delivery_id = ma.fields.String(attribute="delivery_id")
    event_id = ma.fields.String(attribute="event_id")
    event_type = ma.fields.String(metadata={"example": "vc.test.ping"})
    attempt = ma.fields.Integer(metadata={"description": "Attempt number, 1-based."})
    attempted_at = Timestamp()
    duration_ms = ma.fields.Integer()
    error_kind = ma.fields.String(metadata={"description": outcomes.listed() + "."})
    error_message = ma.fields.String()
    response_status = ma.fields.Integer(allow_none=True)
    response_excerpt = ma.fields.String(
        allow_none=True,
        metadata={"description": "The first KiB of the receiver's answer, when there was one."},
    )
    next_attempt_at = Timestamp(
        allow_none=True,
        metadata={
            "description": "When the retry after this attempt was scheduled; null if this "
            "attempt dead-lettered the delivery.",
        },
    )
    dead_lettered = ma.fields.Boolean()


class DeliveryListQuerySchema(ListQuerySchema):
    status = ma.fields.String(
        validate=ma.validate.OneOf(STATUSES),
        metadata={"description": "Only the deliveries of this status."},
    )


class DeliverySchema(ma.Schema):
    id = ma.fields.String(metadata={"example": "dlv_m7hb5r3v2e5x2c7qkq3w6yq4n2"})
    event_id = ma.fields.String(metadata={"example": "evt_q4n2m7hb5r3v2e5x2c7qkq3w6y"})
    event_type = ma.fields.String(metadata={"example": "vc.test.ping"})
    status = ma.fields.String(
        metadata={
            "enum": list(STATUSES),
            "description": "`pending` (due at `next_attempt_at`), `held` (the subscription is "
            "disabled), `delivered`, `dead_lettered` (every retry failed) or `cancelled` (the "
            "subscription was deleted before it was sent).",
        }
    )
    attempts = ma.fields.Integer(
        metadata={"description": "Attempts made so far, counted across redeliveries."}
    )
    created_at = Timestamp()
    next_attempt_at = Timestamp(
        allow_none=True,
        metadata={
            "description": "When the next attempt is due (`pending` only); null once it is "
            "finished, and while it is held (it is due when the subscription is enabled)."
        },
    )
    delivered_at = Timestamp(
        allow_none=True, metadata={"description": "When it was delivered; null unless delivered."}
    )
    last_response_status = ma.fields.Integer(
        allow_none=True,
        metadata={
            "description": "The HTTP status your receiver answered to the latest attempt; null "
            "before the first attempt and when the latest got no answer (e.g. a timeout)."
        },
    )


class DeliveryAttemptSchema(ma.Schema):
    attempt = ma.fields.Integer(metadata={"description": "Attempt number, 1-based."})
    attempted_at = ma.fields.String(metadata={"format": "date-time"})
    duration_ms = ma.fields.Integer(allow_none=True)
    outcome = ma.fields.String(
        metadata={"description": f"`{outcomes.OK}`, or why it failed: {outcomes.listed()}."}
    )
    response_status = ma.fields.Integer(allow_none=True)
    response_excerpt = ma.fields.String(
        allow_none=True,
        metadata={"description": "The first KiB of the answer to a failed attempt, if any."},
    )


class DeliveryDetailSchema(DeliverySchema):
    attempt_count = ma.fields.Integer(
        metadata={"description": "Attempts made so far (`attempts` in the list)."}
    )
    attempts = ma.fields.List(
        ma.fields.Nested(DeliveryAttemptSchema),
        metadata={"description": "Every attempt, oldest first, across redeliveries."},
    )


SubscriptionPageSchema = page_schema(SubscriptionSchema, "SubscriptionPageSchema")
FailurePageSchema = page_schema(FailureSchema, "FailurePageSchema")


class SubscriptionUpdateSchema(ma.Schema):
    """A PATCH body: the fields to change, each checked as on create; at least one."""

    class Meta:
        # An empty body is refused (422 `no_fields`) by the work function, which names them.
        openapi = {"minProperties": 1}

    url = ma.fields.String(
        metadata={
            "description": "A new receiver URL, checked exactly as on create (same 422 codes). "
            "Pending deliveries go to it.",
            "example": PLACEHOLDER_URL,
            "format": "uri",
            "maxLength": MAX_URL_LENGTH,
        },
    )
    events = ma.fields.List(
        ma.fields.String(metadata={"enum": [EVERY_TYPE, *sorted(EVENT_TYPES)]}),
        validate=ma.validate.Length(min=1),
        metadata={
            "description": f'The event types to receive from now on; `["{EVERY_TYPE}"]`: every '
            f'type, present and future. `"{EVERY_TYPE}"` cannot be combined with named types '
            "(422 `event_types_with_wildcard`); an unknown type is 422 `unknown_event_type`. "
            "Known types: " + ", ".join(sorted(EVENT_TYPES)) + " (`GET /event-types`).",
            "example": [EVERY_TYPE],
        },
    )
    description = ma.fields.String(
        validate=DESCRIPTION_VALIDATORS,
        metadata={"example": "Production receiver"},
    )
    status = ma.fields.String(
        validate=ma.validate.OneOf([SubscriptionStatus.ENABLED, SubscriptionStatus.DISABLED]),
        metadata={
            "description": "`disabled` pauses the subscription: new and pending deliveries "
            f'are held, and `disabled_reason` is "{PARTNER_DISABLE_REASON}" (an '
            "auto-disabled one keeps its reason). `enabled` resumes a paused or auto-disabled "
            "subscription: the failure streak starts again from 0 and held deliveries are "
            "sent. Asking for the status it already has changes nothing.",
            "example": SubscriptionStatus.DISABLED,
        },
    )


DeliveryPageSchema = page_schema(DeliverySchema, "DeliveryPageSchema")
