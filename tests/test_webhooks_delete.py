"""DELETE /webhooks/{id}: deletion, unknown ids, and what happens to pending deliveries."""

from __future__ import annotations

import pytest

from partner_api.db import database
from partner_api.delivery.outbox import publish_event
from partner_api.models import Delivery, Subscription

from .conftest import (
    WEBHOOKS,
    assert_problem,
    bearer,
    count,
    created,
    listed_ids,
)

# --- DELETE /webhooks/{id} ----------------------------------------------------------------------


def test_delete_is_204_then_404(client, make_key):
    token = make_key().token
    subscription = created(client, token)
    response = client.delete(f"{WEBHOOKS}/{subscription['id']}", headers=bearer(token))
    assert response.status_code == 204
    assert response.get_data() == b""
    assert response.headers["X-RateLimit-Limit"] == "600"
    again = client.delete(f"{WEBHOOKS}/{subscription['id']}", headers=bearer(token))
    assert_problem(again, 404, "subscription_not_found")
    assert listed_ids(client, token) == []


@pytest.mark.parametrize(
    "bad_id",
    [
        "nope",
        "wh_",
        "wh_" + "A" * 26,
        "WH_" + "a" * 26,
        "wh_" + "a" * 25,
        "wh_" + "a" * 27,
        "wh_" + "a" * 25 + "1",
        "evt_" + "a" * 26,
    ],
)
def test_malformed_or_unknown_subscription_id_is_404(client, make_key, bad_id):
    token = make_key().token
    subscription = created(client, token)
    for method, suffix, kwargs in [
        ("delete", "", {}),
        ("post", "/test", {"json": {"secret": subscription["secret"]}}),
        ("get", "/failures", {}),
    ]:
        response = getattr(client, method)(
            f"{WEBHOOKS}/{bad_id}{suffix}", headers=bearer(token), **kwargs
        )
        assert_problem(response, 404, "subscription_not_found")
    assert listed_ids(client, token) == [subscription["id"]]


def test_upper_case_spelling_of_a_real_id_is_404(client, make_key):
    token = make_key().token
    subscription = created(client, token)
    response = client.delete(f"{WEBHOOKS}/{subscription['id'].upper()}", headers=bearer(token))
    assert_problem(response, 404, "subscription_not_found")
    assert listed_ids(client, token) == [subscription["id"]]


def test_deleting_another_orgs_subscription_is_404_and_leaves_it_alone(client, make_key):
    token = make_key().token
    other_token = make_key(org_name="Other").token
    theirs = created(client, other_token)
    response = client.delete(f"{WEBHOOKS}/{theirs['id']}", headers=bearer(token))
    assert_problem(response, 404, "subscription_not_found")
    with database.connection_context():
        assert Subscription.get_by_id(theirs["id"]).deleted_at is None
    assert listed_ids(client, other_token) == [theirs["id"]]


def test_delete_cancels_pending_and_held_deliveries_and_only_those(client, make_key, clock):
    org, _, token = make_key()
    doomed = created(client, token)
    kept = created(client, token)
    with database.connection_context():
        _, delivered = publish_event(org.id, "vc.test.ping", {"n": 1})
        Delivery.update(status="delivered", delivered_at=clock.current).where(
            Delivery.id.in_([d.id for d in delivered])
        ).execute()
        _, held = publish_event(org.id, "vc.test.ping", {"n": 2})
        Delivery.update(status="held").where(Delivery.id.in_([d.id for d in held])).execute()
        _, pending = publish_event(org.id, "vc.test.ping", {"n": 3})
        Delivery.update(lease_token="lease-1").where(
            Delivery.id.in_([d.id for d in pending])
        ).execute()
    assert len(pending) == 2 and len(held) == 2

    assert client.delete(f"{WEBHOOKS}/{doomed['id']}", headers=bearer(token)).status_code == 204
    with database.connection_context():
        states = {
            (d.subscription_id, d.status, d.lease_token)
            for d in Delivery.select().where(Delivery.id.in_([d.id for d in pending + held]))
        }
    assert states == {
        (doomed["id"], "cancelled", None),
        (kept["id"], "pending", "lease-1"),
        (kept["id"], "held", None),
    }
    assert (
        count(Delivery, Delivery.subscription == doomed["id"], Delivery.status == "cancelled") == 2
    )
    # Deliveries already made stay as they were.
    assert count(Delivery, Delivery.status == "delivered") == 2
