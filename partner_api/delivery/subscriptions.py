"""Work functions for webhook subscriptions: create, list, read, change, pause and resume,
delete, re-enable, test ping, failures.

Plain Python called by the views and the admin CLI; every lookup is scoped to the caller's org.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import secrets

from partner_api import clock, ids
from partner_api.config import Config
from partner_api.db import locked, write_transaction
from partner_api.delivery import lifecycle, lookup_leases, ssrf
from partner_api.delivery.event_types import EVENT_TYPES, EVERY_TYPE
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.signing import SECRET_PREFIX
from partner_api.errors import DomainError
from partner_api.models import DeliveryFailure, Org, Subscription, SubscriptionStatus
from partner_api.pagination import paginate


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _check_event_types(events) -> list[str]:
    """The `events` to store: omitted or `["*"]` is `["*"]` (every type, present and future);
    else the named types, known and deduplicated."""
    if events is None or set(events) == {EVERY_TYPE}:
        return [EVERY_TYPE]
    if EVERY_TYPE in events:
        raise DomainError(
            "event_types_with_wildcard",
            '"*" already means every event type, present and future: send ["*"] alone, '
            "or name the types.",
            field="events",
        )
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown:
        known = ", ".join(sorted(EVENT_TYPES))
        raise DomainError(
            "unknown_event_type",
            f"Unknown event type {unknown[0]!r}; known types: {known}.",
            field="events",
        )
    return sorted(set(events))


def _check_url(org_id: str, url: str, config: Config) -> str:
    """The URL to store, normalised, after the grammar and SSRF checks (DNS with the
    create-time deadline, the partner waiting for the answer, and within the caps on lookups
    in flight, so a hung DNS server holds few workers)."""
    policy = ssrf.policy_for(config, config.create_dns_timeout)
    policy = dataclasses.replace(
        policy, resolver=lookup_leases.leased_resolver(org_id, policy.resolver, config)
    )
    return ssrf.validate_webhook_url(url, policy).url


def create_subscription(
    org_id: str, url: str, events, description: str, config: Config, record=None
):
    """Validate everything (URL and SSRF policy first), then store; returns (sub, secret).
    `record(subscription)`, if given, runs in the same transaction (an Idempotency-Key's
    answer): both are stored or neither."""
    event_types = _check_event_types(events)
    checked_url = _check_url(org_id, url, config)
    secret = new_secret()
    with write_transaction():
        # Serialise creates per org so the cap cannot be overshot.
        locked(Org.select().where(Org.id == org_id)).execute()
        live = Subscription.select().where(Subscription.live(org_id)).count()
        if live >= config.max_subscriptions_per_org:
            raise DomainError(
                "subscription_limit_reached",
                f"This org already has the maximum of {config.max_subscriptions_per_org} webhook "
                "subscriptions; delete one first.",
            )
        subscription = Subscription.create(
            id=ids.new_id("wh"),
            org=org_id,
            url=checked_url,
            events=event_types,
            description=description,
            secret=secret,
            status=SubscriptionStatus.ENABLED,
            consecutive_failures=0,
            created_at=clock.now(),
        )
        if record is not None:
            record(subscription)
    return subscription, secret


def list_subscriptions(org_id: str, limit: int, cursor: str | None) -> dict:
    query = Subscription.select().where(Subscription.live(org_id))
    return paginate(
        query, Subscription.created_at, Subscription.id, f"subscriptions:{org_id}", limit, cursor
    )


def list_all_subscriptions(org_id: str | None = None) -> list[Subscription]:
    """Operator view: every live subscription (of one org), oldest first."""
    if org_id is not None and Org.get_or_none(Org.id == org_id) is None:
        raise DomainError("org_not_found", f"no org with id {org_id!r}")
    query = Subscription.select().where(Subscription.live(org_id))
    return list(query.order_by(Subscription.created_at, Subscription.id))


def get_subscription(org_id: str | None, subscription_id: str, lock: bool = False):
    """The live subscription (of `org_id`, unless None: operators see every org's), or
    `subscription_not_found` (also for other orgs' ids and malformed ids).

    `lock` (inside a write transaction) holds the row until commit.
    """
    subscription = None
    if ids.looks_like("wh", subscription_id):
        query = Subscription.select().where(
            (Subscription.id == subscription_id) & Subscription.live(org_id)
        )
        subscription = (locked(query) if lock else query).first()
    if subscription is None:
        raise DomainError(
            "subscription_not_found",
            f"No webhook subscription with id {subscription_id!r}.",
        )
    return subscription


UPDATABLE = ("url", "events", "description", "status")
_STATUSES = (SubscriptionStatus.ENABLED, SubscriptionStatus.DISABLED)


def update_subscription(org_id: str, subscription_id: str, changes: dict, config: Config):
    """A partner's change to its subscription: any of `url`, `events`, `description` and
    `status` (`disabled` pauses it, `enabled` resumes it like the operator's enable), all in
    one transaction. Every value is checked before anything is written; returns the row."""
    if not changes:
        raise DomainError("no_fields", f"Send at least one of {', '.join(UPDATABLE)} to change.")
    unknown = set(changes) - set(UPDATABLE)
    if unknown or changes.get("status", SubscriptionStatus.ENABLED) not in _STATUSES:
        raise ValueError(f"not a subscription change: {changes!r}")  # the schema refuses these
    get_subscription(org_id, subscription_id)  # an unknown id is 404 before any DNS lookup
    fields = {}
    if "url" in changes:
        fields["url"] = _check_url(org_id, changes["url"], config)
    if "events" in changes:
        fields["events"] = _check_event_types(changes["events"])
    if "description" in changes:
        fields["description"] = changes["description"]
    with write_transaction():
        # Locked: a concurrent delete, publish or dispatcher outcome waits for this commit.
        subscription = get_subscription(org_id, subscription_id, lock=True)
        lifecycle.change_subscription(subscription, **fields)
        status = changes.get("status")
        if status == SubscriptionStatus.DISABLED:
            lifecycle.disable(subscription, lifecycle.PARTNER_DISABLE_REASON)
        elif status == SubscriptionStatus.ENABLED and subscription.status != status:
            # Only a disabled one: resuming resets the failure streak, which asking an
            # enabled subscription to be enabled must not do.
            lifecycle.enable(subscription)
    return Subscription.get_by_id(subscription.id)


def delete_subscription(org_id: str, subscription_id: str) -> None:
    """Delete a subscription and cancel its pending deliveries so none is ever sent."""
    with write_transaction():
        lifecycle.delete(get_subscription(org_id, subscription_id, lock=True))


def enable_subscription(subscription_id: str) -> Subscription:
    """Operator action: re-enable an (auto-)disabled subscription; held deliveries resume."""
    with write_transaction():
        lifecycle.enable(get_subscription(None, subscription_id, lock=True))
    return Subscription.get_by_id(subscription_id)


def disable_subscription(subscription_id: str, reason: str = lifecycle.OPERATOR_DISABLE_REASON):
    """Operator action: disable a subscription; its pending deliveries are held until enabled."""
    with write_transaction():
        lifecycle.disable(get_subscription(None, subscription_id, lock=True), reason)
    return Subscription.get_by_id(subscription_id)


def send_test_ping(org_id: str, subscription_id: str, secret: str, record=None):
    """Publish vc.test.ping to one subscription after checking the caller knows its secret.
    `record((event, delivery))`, if given, runs in the same transaction as the publish."""
    with write_transaction():  # the subscription cannot change between the checks and the publish
        subscription = get_subscription(org_id, subscription_id, lock=True)
        if not hmac.compare_digest(secret.encode(), subscription.secret.encode()):
            raise DomainError(
                "secret_mismatch", "The secret does not match this subscription's secret."
            )
        if subscription.status != SubscriptionStatus.ENABLED:
            raise DomainError(
                "subscription_disabled",
                "The subscription is disabled; enable it first "
                '(PATCH it with {"status": "enabled"}).',
            )
        event, deliveries = publish_event(
            org_id,
            "vc.test.ping",
            {"message": "Test ping from Partner API."},
            subscription_id=subscription.id,
        )
        if record is not None:
            record((event, deliveries[0]))
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
