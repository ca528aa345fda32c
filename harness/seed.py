"""Databases to run a server on: a fresh SQLite file with one org and one key; many idle
subscriptions written straight into a database (for claims beside idle partners)."""

from __future__ import annotations

from pathlib import Path

from partner_api import clock, provisioning
from partner_api.db import apply_schema, bind, database
from partner_api.models import Subscription, SubscriptionStatus


def sqlite_with_key(path: Path, org_name: str = "Acme") -> tuple[str, str]:
    """A fresh SQLite database at `path` with one org and a `webhooks:manage` key; returns
    (DATABASE_URL, the key's token)."""
    url = f"sqlite:///{path}"
    bind(url)
    apply_schema()
    with database.connection_context():
        org = provisioning.create_org(org_name)
        _, token = provisioning.create_key(org.id, "test", ["webhooks:manage"], None)
    return url, token


def idle_subscriptions(prefix: str, org_ids: list[str], count: int) -> list[str]:
    """`count` enabled subscriptions of the (existing) `org_ids`, in turn, that no event names:
    written straight into the bound database in batches, far faster than through the API.
    Their ids are `wh_<prefix><n:07d>`; returns them in that order."""
    now = clock.now()
    ids = [f"wh_{prefix}{n:07d}" for n in range(count)]
    rows = [
        {
            "id": sub_id,
            "org": org_ids[n % len(org_ids)],
            "url": "https://example.com/idle",
            "events": [],
            "description": "",
            "secret": "whsec_idle",
            "status": SubscriptionStatus.ENABLED,
            "consecutive_failures": 0,
            "created_at": now,
        }
        for n, sub_id in enumerate(ids)
    ]
    with database.atomic():
        for start in range(0, count, 500):
            Subscription.insert_many(rows[start : start + 500]).execute()
    return ids
