"""Views of the webhooks resource: parse, call a work function, return."""

from flask import current_app, g, url_for

from partner_api import scopes
from partner_api.delivery import delivery_log, lifecycle, replay, subscriptions
from partner_api.pagination import ListQuerySchema
from partner_api.web import idempotency
from partner_api.web.auth import require_scope
from partner_api.web.extensions import RATE_LIMIT_HEADERS, Blueprint, NoQuerySchema
from partner_api.web.webhooks.schemas import (
    PLACEHOLDER_NOTE,
    DeliveryDetailSchema,
    DeliveryListQuerySchema,
    DeliveryPageSchema,
    FailurePageSchema,
    RedeliveryResultSchema,
    SubscriptionCreatedSchema,
    SubscriptionCreateSchema,
    SubscriptionPageSchema,
    SubscriptionSchema,
    SubscriptionUpdateSchema,
    TestPingResultSchema,
    TestPingSchema,
)

blp = Blueprint("webhooks", __name__, description="Webhook subscriptions and their deliveries.")
manage_webhooks = require_scope(scopes.WEBHOOKS_MANAGE)
SUBSCRIPTION_ID = [
    {
        "in": "path",
        "name": "subscription_id",
        "required": True,
        "description": "The subscription id (`wh_…`) returned when it was created. Ids of "
        "other orgs, deleted subscriptions and malformed ids all answer 404.",
        "schema": {"type": "string", "minLength": 1},
        "example": "wh_2c7qkq3w6yq4n2m7hb5r3v2e5x",
    }
]
DELIVERY_ID = [
    *SUBSCRIPTION_ID,
    {
        "in": "path",
        "name": "delivery_id",
        "required": True,
        "description": "The delivery id (`dlv_…`) from the delivery log. Another "
        "subscription's deliveries and malformed ids answer 404.",
        "schema": {"type": "string", "minLength": 1},
        "example": "dlv_m7hb5r3v2e5x2c7qkq3w6yq4n2",
    },
]


NO_STORE = "no-store"
CREATED_HEADERS = {
    **RATE_LIMIT_HEADERS,
    "Cache-Control": {
        "description": "Always `no-store`: the answer carries the signing secret.",
        "schema": {"type": "string", "const": NO_STORE},
    },
    "Location": {
        "description": "The new subscription's URL, `/api/v1/partner/webhooks/{id}`.",
        "schema": {"type": "string", "format": "uri-reference"},
    },
}
# A create or a new url resolves the host while the caller waits; the lookups are capped.
LOOKUP_CAPS_NOTE = (
    "While your org's host lookups are already running, as many as the server allows at once, "
    "the answer is 429 `dns_lookups_in_flight` at once; while the server's are all in use, "
    "503 `dns_lookups_busy`; both with `Retry-After`."
)
CREATE_DESCRIPTION = (
    "Subscribes your HTTPS endpoint to events. The URL must be your own receiver: it is "
    "resolved and checked when the subscription is created. "
    + LOOKUP_CAPS_NOTE
    + " "
    + PLACEHOLDER_NOTE
)

# What a client can do next with the created subscription (OpenAPI links: generated clients
# and API testers follow them with the real id, and the secret for the test ping).
_BY_ID = {"subscription_id": "$response.body#/id"}
CREATED_LINKS = {
    "DeleteWebhook": {"operationId": "delete_webhook", "parameters": _BY_ID},
    "TestWebhook": {
        "operationId": "test_webhook",
        "parameters": _BY_ID,
        "requestBody": {"secret": "$response.body#/secret"},
    },
    "ListWebhookFailures": {"operationId": "list_webhook_failures", "parameters": _BY_ID},
    "GetWebhook": {"operationId": "get_webhook", "parameters": _BY_ID},
    "UpdateWebhook": {"operationId": "update_webhook", "parameters": _BY_ID},
    "ListWebhookDeliveries": {"operationId": "list_webhook_deliveries", "parameters": _BY_ID},
}
# Read, then change: the subscription's own answers lead to each other.
READ_LINKS = {"UpdateWebhook": CREATED_LINKS["UpdateWebhook"]}
UPDATED_LINKS = {"GetWebhook": CREATED_LINKS["GetWebhook"]}
UPDATE_DESCRIPTION = (
    "Changes any of `url`, `events`, `description` and `status` in one step; the id and the "
    "signing secret stay. Fields not sent are left as they are; an unknown field, a `null` or "
    "a body naming no field (422 `no_fields`) changes nothing. A new `url` is checked exactly "
    "as on create, with the same answers (429 `dns_lookups_in_flight` and 503 "
    "`dns_lookups_busy` included). `status: disabled` pauses the subscription (deliveries are "
    "held until it is enabled); `status: enabled` resumes it, also after an automatic disable."
)
# The test ping's delivery, sent again (once it has been delivered; 409 while pending).
PINGED_LINKS = {
    "RedeliverWebhookDelivery": {
        "operationId": "redeliver_webhook_delivery",
        "parameters": {
            "subscription_id": "$request.path.subscription_id",
            "delivery_id": "$response.body#/delivery_id",
        },
    }
}
# A delivery read from the log, sent again.
SHOWN_DELIVERY_LINKS = {
    "RedeliverWebhookDelivery": {
        "operationId": "redeliver_webhook_delivery",
        "parameters": {
            "subscription_id": "$request.path.subscription_id",
            "delivery_id": "$response.body#/id",
        },
    }
}
REDELIVER_DESCRIPTION = (
    "Sends a delivered or dead-lettered delivery again, with the same event `id` (so a "
    "receiver that deduplicates on it sees a duplicate), through the same checks as any "
    "delivery; its attempts keep counting and the retry schedule starts again. A pending or "
    "held delivery is 409 `delivery_not_replayable`: it is still to be sent. A redelivery "
    "while the subscription is paused or auto-disabled is held until it is enabled again."
)


def _org_id() -> str:
    return g.caller.org_id


@blp.post("/webhooks")
@manage_webhooks
@blp.arguments(NoQuerySchema, location="query")
@blp.arguments(SubscriptionCreateSchema)
@blp.response(201, SubscriptionCreatedSchema, headers=CREATED_HEADERS)
@blp.errors(400, 401, 403, 409, 413, 415, 422, 429)
@blp.doc(
    description=CREATE_DESCRIPTION,
    parameters=[idempotency.PARAMETER],
    responses={201: {"links": CREATED_LINKS}},
)
@idempotency.idempotent
def create_webhook(_query, body):
    """Create a webhook subscription (its signing secret is returned only here)"""
    subscription, _secret = subscriptions.create_subscription(
        _org_id(),
        body["url"],
        body["events"],
        body["description"],
        current_app.config["PARTNER_API"],
        record=idempotency.recorder(_created_answer),
    )
    return subscription, _created_headers(subscription)


def _created_headers(subscription) -> dict:
    # The one response that includes `secret`: no cache or proxy may keep a copy.
    location = url_for("webhooks.delete_webhook", subscription_id=subscription.id)
    return {"Cache-Control": NO_STORE, "Location": location}


def _created_answer(subscription):
    """The create's answer as an Idempotency-Key keeps it (the secret included: a retry must
    get it too; kept 24 hours, then pruned)."""
    body = SubscriptionCreatedSchema().dump(subscription)
    return 201, body, _created_headers(subscription)


@blp.get("/webhooks")
@manage_webhooks
@blp.arguments(ListQuerySchema, location="query")
@blp.response(200, SubscriptionPageSchema)
@blp.errors(400, 401, 403, 422, 429)
def list_webhooks(query):
    """List the org's webhook subscriptions, newest first (secrets are never shown)"""
    return subscriptions.list_subscriptions(_org_id(), query["limit"], query.get("cursor"))


@blp.get("/webhooks/<string:subscription_id>", parameters=SUBSCRIPTION_ID)
@manage_webhooks
@blp.arguments(NoQuerySchema, location="query")
@blp.response(200, SubscriptionSchema)
@blp.errors(401, 403, 404, 422, 429)
@blp.doc(responses={200: {"links": READ_LINKS}})
def get_webhook(_query, subscription_id):
    """Show one webhook subscription, as in the list (its secret is never shown)"""
    return subscriptions.get_subscription(_org_id(), subscription_id)


@blp.patch("/webhooks/<string:subscription_id>", parameters=SUBSCRIPTION_ID)
@manage_webhooks
@blp.arguments(NoQuerySchema, location="query")
@blp.arguments(SubscriptionUpdateSchema)
@blp.response(200, SubscriptionSchema)
@blp.errors(400, 401, 403, 404, 413, 415, 422, 429)
@blp.doc(description=UPDATE_DESCRIPTION, responses={200: {"links": UPDATED_LINKS}})
def update_webhook(_query, body, subscription_id):
    """Change a webhook subscription's URL, events or description, or pause or resume it"""
    return subscriptions.update_subscription(
        _org_id(), subscription_id, body, current_app.config["PARTNER_API"]
    )


@blp.delete("/webhooks/<string:subscription_id>", parameters=SUBSCRIPTION_ID)
@manage_webhooks
@blp.arguments(NoQuerySchema, location="query")
@blp.response(204)
@blp.errors(401, 403, 404, 422, 429)
def delete_webhook(_query, subscription_id):
    """Delete a webhook subscription; its pending deliveries are cancelled"""
    subscriptions.delete_subscription(_org_id(), subscription_id)


@blp.post("/webhooks/<string:subscription_id>/test", parameters=SUBSCRIPTION_ID)
@manage_webhooks
@blp.arguments(NoQuerySchema, location="query")
@blp.arguments(TestPingSchema)
@blp.response(202, TestPingResultSchema)
@blp.errors(400, 401, 403, 404, 409, 413, 415, 422, 429)
@blp.doc(parameters=[idempotency.PARAMETER], responses={202: {"links": PINGED_LINKS}})
@idempotency.idempotent
def test_webhook(_query, body, subscription_id):
    """Send a vc.test.ping event through the delivery pipeline (echo the secret to prove it)"""
    event, delivery = subscriptions.send_test_ping(
        _org_id(), subscription_id, body["secret"], record=idempotency.recorder(_pinged_answer)
    )
    return _pinged(event, delivery)


def _pinged(event, delivery) -> dict:
    return {"event_id": event.id, "delivery_id": delivery.id}


def _pinged_answer(published):
    return 202, TestPingResultSchema().dump(_pinged(*published)), {}


@blp.post(
    "/webhooks/<string:subscription_id>/deliveries/<string:delivery_id>/redeliver",
    parameters=DELIVERY_ID,
)
@manage_webhooks
@blp.arguments(NoQuerySchema, location="query")
@blp.response(202, RedeliveryResultSchema)
@blp.errors(401, 403, 404, 409, 422, 429)
@blp.doc(description=REDELIVER_DESCRIPTION)
def redeliver_webhook_delivery(_query, subscription_id, delivery_id):
    """Send a delivered or dead-lettered delivery again (same event id)"""
    delivery = replay.replay_delivery(
        delivery_id, lifecycle.PARTNER, org_id=_org_id(), subscription_id=subscription_id
    )
    return {"delivery_id": delivery.id}


@blp.get("/webhooks/<string:subscription_id>/failures", parameters=SUBSCRIPTION_ID)
@manage_webhooks
@blp.arguments(ListQuerySchema, location="query")
@blp.response(200, FailurePageSchema)
@blp.errors(400, 401, 403, 404, 422, 429)
def list_webhook_failures(query, subscription_id):
    """List failed delivery attempts of a subscription, newest first"""
    return subscriptions.list_failures(
        _org_id(), subscription_id, query["limit"], query.get("cursor")
    )


@blp.get("/webhooks/<string:subscription_id>/deliveries", parameters=SUBSCRIPTION_ID)
@manage_webhooks
@blp.arguments(DeliveryListQuerySchema, location="query")
@blp.response(200, DeliveryPageSchema)
@blp.errors(400, 401, 403, 404, 422, 429)
def list_webhook_deliveries(query, subscription_id):
    """List a subscription's deliveries, newest first, optionally of one status"""
    return delivery_log.list_deliveries(
        _org_id(), subscription_id, query.get("status"), query["limit"], query.get("cursor")
    )


@blp.get(
    "/webhooks/<string:subscription_id>/deliveries/<string:delivery_id>", parameters=DELIVERY_ID
)
@manage_webhooks
@blp.arguments(NoQuerySchema, location="query")
@blp.response(200, DeliveryDetailSchema)
@blp.errors(401, 403, 404, 422, 429)
@blp.doc(responses={200: {"links": SHOWN_DELIVERY_LINKS}})
def get_webhook_delivery(_query, subscription_id, delivery_id):
    """Show one delivery with every attempt, oldest first"""
    return delivery_log.get_delivery(_org_id(), subscription_id, delivery_id)
