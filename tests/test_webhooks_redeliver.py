"""POST /webhooks/{id}/deliveries/{delivery_id}/redeliver: a partner sends a finished delivery
again (same event id), and the operator sees it in `deliveries show`; every refusal changes
nothing. SQLite and PostgreSQL, the fake clock, a local receiver."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dispatcher.dispatch import Dispatcher
from harness.receivers import Receiver
from partner_api.db import database
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import delete_subscription, disable_subscription
from partner_api.models import Delivery, DeliveryHistory

from .conftest import WEBHOOKS, assert_problem, bearer, delivery_row

FAIL = (500, {}, b"boom")
OK = (200, {}, b"ok")


@pytest.fixture
def dispatcher(config):
    made = Dispatcher(dataclasses.replace(config, retry_schedule=(60,)))  # 2 attempts
    yield made
    made.close()


@pytest.fixture
def partner(make_key):
    org, _, token = make_key()
    return org.id, token


def publish(subscription) -> Delivery:
    with database.connection_context():
        _, [delivery] = publish_event(
            subscription.org_id, "vc.test.ping", {"n": 1}, subscription_id=subscription.id
        )
    return delivery


def redeliver(client, token, subscription_id, delivery_id, **kwargs):
    path = f"{WEBHOOKS}/{subscription_id}/deliveries/{delivery_id}/redeliver"
    return client.post(path, headers=bearer(token), **kwargs)


def state():
    """Every delivery and every history row: what a refusal must leave as it was."""
    with database.connection_context():
        deliveries = [
            (d.id, d.status, d.attempts, d.attempts_before_replay, d.next_attempt_at)
            for d in Delivery.select().order_by(Delivery.id)
        ]
        return deliveries, DeliveryHistory.select().count()


def show(runner, delivery_id) -> dict:
    result = runner.invoke(args=["deliveries", "show", delivery_id, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_delivered_delivery_is_sent_again_with_the_same_event_id_and_shown_to_the_operator(
    client, runner, partner, subscribe, dispatcher, clock
):
    org_id, token = partner
    with Receiver([OK]) as receiver:
        subscription = subscribe(org_id, receiver.url())
        delivery = publish(subscription)
        assert dispatcher.run_until_idle() == 1
        clock.advance(30)
        response = redeliver(client, token, subscription.id, delivery.id)
        assert response.status_code == 202, response.get_data(as_text=True)
        assert response.get_json() == {"delivery_id": delivery.id}
        assert response.headers["X-RateLimit-Limit"] == "600"
        assert delivery_row(delivery.id).status == "pending"
        assert dispatcher.run_until_idle() == 1
        bodies = [json.loads(request["body"]) for request in receiver.requests]
    assert [body["id"] for body in bodies] == [delivery.event_id, delivery.event_id]
    assert delivery_row(delivery.id).status == "delivered"
    shown = show(runner, delivery.id)
    assert [(r["by"], r["after_attempt"]) for r in shown["replays"]] == [("partner", 1)]
    assert [a["attempt"] for a in shown["attempt_log"]] == [1, 2]
    text = runner.invoke(args=["deliveries", "show", delivery.id]).stdout
    [replayed] = [line for line in text.splitlines() if " replayed " in line]
    assert replayed.rstrip().endswith("by partner")


def test_a_dead_lettered_delivery_is_redelivered(client, partner, subscribe, dispatcher, clock):
    org_id, token = partner
    with Receiver([FAIL, FAIL, OK]) as receiver:
        subscription = subscribe(org_id, receiver.url())
        delivery = publish(subscription)
        dispatcher.run_until_idle()
        clock.advance(60)
        dispatcher.run_until_idle()
        assert delivery_row(delivery.id).status == "dead_lettered"
        response = redeliver(client, token, subscription.id, delivery.id)
        assert response.status_code == 202, response.get_data(as_text=True)
        assert dispatcher.run_until_idle() == 1
        assert {json.loads(r["body"])["id"] for r in receiver.requests} == {delivery.event_id}
    final = delivery_row(delivery.id)
    assert final.status == "delivered" and final.attempts == 3


def test_a_redelivery_while_the_subscription_is_paused_is_held_until_it_is_enabled(
    client, runner, partner, subscribe, dispatcher
):
    org_id, token = partner
    with Receiver([OK]) as receiver:
        subscription = subscribe(org_id, receiver.url())
        delivery = publish(subscription)
        dispatcher.run_until_idle()
        disable_subscription(subscription.id)
        response = redeliver(client, token, subscription.id, delivery.id)
        assert response.status_code == 202, response.get_data(as_text=True)
        assert delivery_row(delivery.id).status == "held"
        assert dispatcher.run_until_idle() == 0
        assert runner.invoke(args=["webhooks", "enable", subscription.id]).exit_code == 0
        assert dispatcher.run_until_idle() == 1
        assert len(receiver.requests) == 2


def test_a_pending_or_held_delivery_is_not_replayable_and_nothing_changes(
    client, partner, subscribe
):
    org_id, token = partner
    live = subscribe(org_id)
    pending = publish(live)
    paused = subscribe(org_id)
    disable_subscription(paused.id)
    held = publish(paused)
    before = state()
    for subscription, delivery, status in ((live, pending, "pending"), (paused, held, "held")):
        response = redeliver(client, token, subscription.id, delivery.id)
        body = assert_problem(response, 409, "delivery_not_replayable")
        assert f"is {status}" in body["detail"]
    assert state() == before


def test_unknown_and_other_deliveries_are_not_found_and_nothing_changes(
    client, partner, make_key, subscribe
):
    org_id, token = partner
    mine = subscribe(org_id)
    sibling = subscribe(org_id)
    other_org, _, _ = make_key(org_name="Other")
    theirs = subscribe(other_org.id)
    deliveries = {sub.id: publish(sub) for sub in (mine, sibling, theirs)}
    with database.connection_context():  # finished, so only the scope can refuse them
        Delivery.update(status="delivered").execute()
    before = state()
    for delivery_id in (
        "dlv_nosuchdelivery0000000000",
        "not-an-id",
        deliveries[sibling.id].id,  # another subscription's, same org
        deliveries[theirs.id].id,  # another org's
    ):
        response = redeliver(client, token, mine.id, delivery_id)
        assert_problem(response, 404, "delivery_not_found")
    assert state() == before


def test_unknown_other_orgs_and_deleted_subscriptions_are_not_found(
    client, partner, make_key, subscribe
):
    org_id, token = partner
    other_org, _, _ = make_key(org_name="Other")
    theirs = subscribe(other_org.id)
    their_delivery = publish(theirs)
    gone = subscribe(org_id)
    gone_delivery = publish(gone)
    with database.connection_context():
        Delivery.update(status="delivered").where(Delivery.id == their_delivery.id).execute()
        delete_subscription(org_id, gone.id)
    before = state()
    for subscription_id, delivery_id in (
        ("wh_nosuchsubscription00000000", their_delivery.id),
        ("garbage", their_delivery.id),
        (theirs.id, their_delivery.id),  # another org's, with its own delivery
        (gone.id, gone_delivery.id),  # deleted
    ):
        response = redeliver(client, token, subscription_id, delivery_id)
        assert_problem(response, 404, "subscription_not_found")
    assert state() == before


def test_a_key_without_webhooks_manage_is_forbidden_and_nothing_changes(
    client, partner, make_key, subscribe
):
    org_id, _ = partner
    subscription = subscribe(org_id)
    delivery = publish(subscription)
    with database.connection_context():
        Delivery.update(status="delivered").execute()
    _, _, read_only = make_key(scopes=("identity:read",))
    before = state()
    response = redeliver(client, read_only, subscription.id, delivery.id)
    body = assert_problem(response, 403, "insufficient_scope")
    assert body["required_scope"] == "webhooks:manage"
    assert state() == before


def test_a_query_parameter_is_refused_and_nothing_changes(client, partner, subscribe):
    org_id, token = partner
    subscription = subscribe(org_id)
    delivery = publish(subscription)
    with database.connection_context():
        Delivery.update(status="delivered").execute()
    before = state()
    response = redeliver(client, token, subscription.id, delivery.id, query_string={"now": "1"})
    assert_problem(response, 422, "validation_error")
    assert state() == before
