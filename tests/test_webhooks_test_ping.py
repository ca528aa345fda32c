"""POST /webhooks/{id}/test: the test ping and its secret check."""

from __future__ import annotations

import pytest

from partner_api import clock as clock_module
from partner_api import ids
from partner_api.db import database
from partner_api.models import Delivery, Event, Subscription

from .conftest import (
    WEBHOOKS,
    assert_problem,
    bearer,
    count,
    created,
)

# --- POST /webhooks/{id}/test -------------------------------------------------------------------


def test_test_ping_with_the_right_secret_queues_one_delivery_to_that_subscription(
    client, make_key, clock
):
    org, _, token = make_key()
    target = created(client, token)
    bystander = created(client, token)
    response = client.post(
        f"{WEBHOOKS}/{target['id']}/test", json={"secret": target["secret"]}, headers=bearer(token)
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"event_id", "delivery_id"}
    assert ids.looks_like("evt", body["event_id"]) and ids.looks_like("dlv", body["delivery_id"])
    assert response.headers["X-RateLimit-Limit"] == "600"
    with database.connection_context():
        event = Event.get_by_id(body["event_id"])
        assert event.type == "vc.test.ping" and event.org_id == org.id
        assert event.occurred_at == clock.current
        [delivery] = list(Delivery.select())
        assert delivery.id == body["delivery_id"]
        assert delivery.event_id == event.id and delivery.subscription_id == target["id"]
        assert delivery.status == "pending" and delivery.attempts == 0
        assert delivery.next_attempt_at == clock.current
    assert count(Delivery, Delivery.subscription == bystander["id"]) == 0
    assert count(Event) == 1


WRONG_SECRETS = {
    "made_up": lambda target, other: "whsec_wrong",
    "empty": lambda target, other: "",
    "one_character_off": lambda target, other: (
        target[:-2] + ("AA" if target[-2:] != "AA" else "BB")
    ),
    "prefix_of_the_right_one": lambda target, other: target[:-1],
    "sibling_subscriptions": lambda target, other: other,
}


@pytest.mark.parametrize("wrong", list(WRONG_SECRETS))
def test_test_ping_with_a_wrong_secret_is_403_and_writes_nothing(client, make_key, wrong):
    token = make_key().token
    target = created(client, token)
    other = created(client, token)
    secret = WRONG_SECRETS[wrong](target["secret"], other["secret"])
    response = client.post(
        f"{WEBHOOKS}/{target['id']}/test", json={"secret": secret}, headers=bearer(token)
    )
    assert_problem(response, 403, "secret_mismatch")
    assert target["secret"] not in response.get_data(as_text=True)
    assert count(Event) == 0 and count(Delivery) == 0


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {}}, 422, "validation_error"),
        ({}, 422, "validation_error"),
        ({"json": {"secret": None}}, 422, "validation_error"),
        ({"json": {"secret": 5}}, 422, "validation_error"),
        ({"json": {"secret": "s", "extra": 1}}, 422, "validation_error"),
        ({"data": "secret=x", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": "{", "content_type": "application/json"}, 400, "invalid_json"),
    ],
)
def test_test_ping_without_a_usable_secret_is_refused_and_writes_nothing(
    client, make_key, kwargs, status, code
):
    token = make_key().token
    target = created(client, token)
    response = client.post(f"{WEBHOOKS}/{target['id']}/test", headers=bearer(token), **kwargs)
    body = assert_problem(response, status, code)
    if status == 422 and "extra" not in str(kwargs):
        assert body["errors"][0]["field"] == "secret"
    assert count(Event) == 0 and count(Delivery) == 0


def test_test_ping_on_a_disabled_subscription_is_409_and_writes_nothing(client, make_key, clock):
    token = make_key().token
    target = created(client, token)
    with database.connection_context():
        # By hand: the state an auto-disable leaves after 20 failed attempts (a failure streak
        # of 20), which the lifecycle reaches only through 20 real attempts.
        Subscription.update(
            status="disabled",
            disabled_reason="20 consecutive failed attempts",
            disabled_at=clock.current,
            consecutive_failures=20,
        ).where(Subscription.id == target["id"]).execute()
    response = client.post(
        f"{WEBHOOKS}/{target['id']}/test", json={"secret": target["secret"]}, headers=bearer(token)
    )
    assert_problem(response, 409, "subscription_disabled")
    assert count(Event) == 0 and count(Delivery) == 0

    # Still listed (with why and since when), its failures still readable, still deletable.
    [item] = client.get(WEBHOOKS, headers=bearer(token)).get_json()["data"]
    assert item["status"] == "disabled" and item["consecutive_failures"] == 20
    assert item["disabled_reason"] == "20 consecutive failed attempts"
    assert item["disabled_at"] == clock_module.isoformat(clock.current)
    path = f"{WEBHOOKS}/{target['id']}"
    assert client.get(f"{path}/failures", headers=bearer(token)).status_code == 200
    assert client.delete(path, headers=bearer(token)).status_code == 204


def test_test_ping_on_another_orgs_or_a_deleted_subscription_is_404(client, make_key):
    token = make_key().token
    other_token = make_key(org_name="Other").token
    theirs = created(client, other_token)
    mine = created(client, token)
    response = client.post(
        f"{WEBHOOKS}/{theirs['id']}/test", json={"secret": theirs["secret"]}, headers=bearer(token)
    )
    assert_problem(response, 404, "subscription_not_found")
    assert client.delete(f"{WEBHOOKS}/{mine['id']}", headers=bearer(token)).status_code == 204
    response = client.post(
        f"{WEBHOOKS}/{mine['id']}/test", json={"secret": mine["secret"]}, headers=bearer(token)
    )
    assert_problem(response, 404, "subscription_not_found")
    assert count(Event) == 0 and count(Delivery) == 0
