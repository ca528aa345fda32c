"""Work functions for webhook subscriptions: create, list, delete, re-enable, test ping, failures.

Plain Python called by the views and the admin CLI; every lookup is scoped to the caller's org.
"""

from __future__ import annotations

import base64
import hmac
import secrets

from partner_api import clock, ids, ssrf
from partner_api.db import is_postgres, write_transaction
from partner_api.deliveries import cancel_open_deliveries, release_held_deliveries
from partner_api.errors import ApiError
from partner_api.events import EVENT_TYPES, publish_event
from partner_api.models import DeliveryFailure, Org, Subscription
from partner_api.pagination import paginate

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _url_error(error: ssrf.WebhookUrlError) -> ApiError:
    return ApiError(
        422,
        error.code,
        error.message,
        errors=[{"location": "json", "field": "url", "message": error.message}],
    )


def _check_event_types(events) -> list[str]:
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown:
        known = ", ".join(sorted(EVENT_TYPES))
        message = f"Unknown event type {unknown[0]!r}; known types: {known}."
        raise ApiError(
            422,
            "unknown_event_type",
            message,
            errors=[{"location": "json", "field": "events", "message": message}],
        )
    return sorted(set(events))


def create_subscription(
    org_id: str, url: str, events, description: str, policy: ssrf.SsrfPolicy, max_per_org: int
):
    """Validate everything (URL and SSRF policy first), then store; returns (sub, secret)."""
    event_types = _check_event_types(events if events is not None else list(EVENT_TYPES))
    try:
        checked = ssrf.validate_webhook_url(url, policy)
    except ssrf.WebhookUrlError as error:
        raise _url_error(error)
    secret = new_secret()
    with write_transaction():
        if is_postgres():  # serialise creates per org so the cap cannot be overshot
            Org.select().where(Org.id == org_id).for_update().execute()
        live = (
            Subscription.select()
            .where((Subscription.org == org_id) & Subscription.deleted_at.is_null())
            .count()
        )
        if live >= max_per_org:
            raise ApiError(
                409,
                "subscription_limit_reached",
                f"This org already has the maximum of {max_per_org} webhook "
                "subscriptions; delete one first.",
            )
        subscription = Subscription.create(
            id=ids.new_id("wh"),
            org=org_id,
            url=checked.url,
            events=event_types,
            description=description,
            secret=secret,
            status="enabled",
            consecutive_failures=0,
            created_at=clock.now(),
        )
    return subscription, secret


def list_subscriptions(org_id: str, limit: int, cursor: str | None) -> dict:
    query = Subscription.select().where(
        (Subscription.org == org_id) & Subscription.deleted_at.is_null()
    )
    return paginate(
        query, Subscription.created_at, Subscription.id, f"subscriptions:{org_id}", limit, cursor
    )


def get_subscription(org_id: str, subscription_id: str, lock: bool = False) -> Subscription:
    """The org's live subscription, or 404 (also for other orgs' ids and malformed ids).

    `lock` (inside a write transaction) holds the row until commit on PostgreSQL; SQLite's
    BEGIN IMMEDIATE already holds the whole database.
    """
    subscription = None
    if ids.looks_like("wh", subscription_id):
        query = Subscription.select().where(
            (Subscription.id == subscription_id)
            & (Subscription.org == org_id)
            & Subscription.deleted_at.is_null()
        )
        if lock and is_postgres():
            query = query.for_update()
        subscription = query.first()
    if subscription is None:
        raise ApiError(404, "subscription_not_found", "No such webhook subscription.")
    return subscription


def delete_subscription(org_id: str, subscription_id: str) -> None:
    """Delete a subscription and cancel its pending deliveries so none is ever sent."""
    with write_transaction():
        subscription = get_subscription(org_id, subscription_id)
        now = clock.now()
        Subscription.update(deleted_at=now).where(Subscription.id == subscription.id).execute()
        cancel_open_deliveries(subscription.id)


def enable_subscription(subscription_id: str) -> Subscription:
    """Operator action: re-enable an (auto-)disabled subscription; held deliveries resume."""
    with write_transaction():
        subscription = Subscription.get_or_none(
            (Subscription.id == subscription_id) & Subscription.deleted_at.is_null()
        )
        if subscription is None:
            raise LookupError(f"no webhook subscription with id {subscription_id!r}")
        Subscription.update(
            status="enabled", disabled_reason=None, disabled_at=None, consecutive_failures=0
        ).where(Subscription.id == subscription.id).execute()
        release_held_deliveries(subscription.id)
    return Subscription.get_by_id(subscription_id)


def send_test_ping(org_id: str, subscription_id: str, secret: str):
    """Publish vc.test.ping to one subscription after checking the caller knows its secret."""
    with write_transaction():  # the subscription cannot change between the checks and the publish
        subscription = get_subscription(org_id, subscription_id, lock=True)
        if not hmac.compare_digest(secret.encode(), subscription.secret.encode()):
            raise ApiError(
                403, "secret_mismatch", "The secret does not match this subscription's secret."
            )
        if subscription.status != "enabled":
            raise ApiError(
                409,
                "subscription_disabled",
                "The subscription is disabled; an operator must re-enable it first.",
            )
        event, deliveries = publish_event(
            org_id,
            "vc.test.ping",
            {"message": "Test ping from Partner API."},
            subscription_id=subscription.id,
        )
    return event, deliveries[0]


def list_failures(org_id: str, subscription_id: str, limit: int, cursor: str | None) -> dict:
    """The subscription's failed attempts, newest first."""
    subscription = get_subscription(org_id, subscription_id)
    query = DeliveryFailure.select().where(DeliveryFailure.subscription == subscription.id)
    return paginate(
        query,
        DeliveryFailure.attempted_at,
        DeliveryFailure.id,
        f"failures:{subscription.id}",
        limit,
        cursor,
    )
