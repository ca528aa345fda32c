"""GET /webhooks/{id}/deliveries and GET /webhooks/{id}/deliveries/{delivery_id}: the delivery
log. Deliveries are made and attempted through the real outbox, claim and lifecycle; the clock
is the test's, so every time is known."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from dispatcher.transport import AttemptResult
from partner_api import clock as clock_module
from partner_api import ids
from partner_api.db import database
from partner_api.delivery import lifecycle, subscriptions
from partner_api.delivery.claims import claim_due_deliveries
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.replay import replay_delivery
from partner_api.models import Delivery

from .conftest import (
    WEBHOOKS,
    assert_problem,
    bearer,
    created,
    first_cursor,
    flip,
    walk,
)

ITEM_FIELDS = {
    "id",
    "event_id",
    "event_type",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "delivered_at",
    "last_response_status",
}
ATTEMPT_FIELDS = {
    "attempt",
    "attempted_at",
    "duration_ms",
    "outcome",
    "response_status",
    "response_excerpt",
}


def answer(status: int | None, kind: str | None = "http_status", duration_ms: int = 5):
    """An attempt's result: ok for a 2xx, else failed with `kind`."""
    ok = status is not None and 200 <= status < 300
    if ok:
        return AttemptResult(True, status, None, None, None, duration_ms)
    excerpt = None if status is None else f"answered {status}"
    return AttemptResult(False, status, kind, f"failed: {kind}", excerpt, duration_ms)


OK = answer(200)
HTTP_500 = answer(500)
TIMEOUT = answer(None, "timeout", 10_000)


@pytest.fixture
def short_retries(config):
    """One retry a minute after the first failure, then dead-lettered."""
    return dataclasses.replace(config, retry_schedule=(60,))


def publish(subscription_id: str, clock, how_many: int = 1, step: float = 1) -> list[str]:
    """Publish test pings to one subscription, `step` seconds apart; their delivery ids."""
    delivery_ids = []
    with database.connection_context():
        org_id = subscriptions.get_subscription(None, subscription_id).org_id
        for n in range(how_many):
            clock.advance(step)
            _, (delivery,) = publish_event(
                org_id, "vc.test.ping", {"n": n}, subscription_id=subscription_id
            )
            delivery_ids.append(delivery.id)
    return delivery_ids


def attempt(config, result, expected: int = 1) -> list[str]:
    """Claim what is due now and record `result` for each; what happens next to each."""
    with database.connection_context():
        claims = claim_due_deliveries(10, 60)
        assert len(claims) == expected
        return lifecycle.record_outcomes([(claim, result) for claim in claims], config)


def after_retry(clock) -> None:
    clock.advance(61)


def log_path(subscription_id: str, delivery_id: str | None = None) -> str:
    path = f"{WEBHOOKS}/{subscription_id}/deliveries"
    return path if delivery_id is None else f"{path}/{delivery_id}"


def get_log(client, token, subscription_id, **query):
    response = client.get(log_path(subscription_id), headers=bearer(token), query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def get_detail(client, token, subscription_id, delivery_id):
    response = client.get(log_path(subscription_id, delivery_id), headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def at(moment: dt.datetime | None) -> str | None:
    return clock_module.isoformat(moment)


def stored(delivery_id: str) -> Delivery:
    with database.connection_context():
        return Delivery.get_by_id(delivery_id)


# --- the list -----------------------------------------------------------------------------------


def test_a_new_subscription_has_an_empty_log(client, make_key):
    token = make_key().token
    subscription = created(client, token)
    page = get_log(client, token, subscription["id"])
    assert page == {"data": [], "has_more": False, "next_cursor": None}


def one_delivered(sub, clock, config) -> tuple[str, dt.datetime]:
    """A delivery delivered at its second attempt; its id and when."""
    [delivered] = publish(sub, clock)
    attempt(config, HTTP_500)
    after_retry(clock)
    assert attempt(config, OK) == ["delivered"]
    return delivered, clock.current


def one_of_each_other_status(sub, clock, config):
    """Dead-lettered (the last attempt timed out), cancelled, pending after a 503, and pending
    never attempted, made in that order; their ids and when the 503's retry is due."""
    [dead] = publish(sub, clock)
    attempt(config, HTTP_500)
    after_retry(clock)
    assert attempt(config, TIMEOUT) == ["dead_lettered"]
    [cancelled] = publish(sub, clock)
    with database.connection_context():
        lifecycle.cancel_open(sub)
    [retrying] = publish(sub, clock)
    assert attempt(config, answer(503))[0].startswith("retry_at:")
    retry_at = clock.current + dt.timedelta(seconds=60)
    [fresh] = publish(sub, clock)
    return dead, cancelled, retrying, fresh, retry_at


def test_the_log_shows_every_status_with_its_times_and_latest_answer(
    client, make_key, clock, short_retries
):
    token = make_key().token
    sub = created(client, token)["id"]
    delivered, delivered_at = one_delivered(sub, clock, short_retries)
    dead, cancelled, retrying, fresh, retry_at = one_of_each_other_status(sub, clock, short_retries)

    page = get_log(client, token, sub)
    by_id = {item["id"]: item for item in page["data"]}
    assert [item["id"] for item in page["data"]] == [fresh, retrying, cancelled, dead, delivered]
    assert all(set(item) == ITEM_FIELDS for item in page["data"])
    assert by_id[delivered] == {
        "id": delivered,
        "event_id": stored(delivered).event_id,
        "event_type": "vc.test.ping",
        "status": "delivered",
        "attempts": 2,
        "created_at": at(stored(delivered).created_at),
        "next_attempt_at": None,
        "delivered_at": at(delivered_at),
        "last_response_status": 200,
    }
    expected = {
        # the latest attempt timed out: no answer, although the one before it had one
        dead: ("dead_lettered", 2, None, None, None),
        cancelled: ("cancelled", 0, None, None, None),
        retrying: ("pending", 1, at(retry_at), None, 503),
        fresh: ("pending", 0, at(stored(fresh).created_at), None, None),
    }
    for delivery_id, (status, attempts, next_at, delivered_at, last) in expected.items():
        item = by_id[delivery_id]
        assert (
            item["status"],
            item["attempts"],
            item["next_attempt_at"],
            item["delivered_at"],
            item["last_response_status"],
        ) == (status, attempts, next_at, delivered_at, last), delivery_id
        assert item["created_at"] == at(stored(delivery_id).created_at)


def test_a_held_delivery_has_no_next_attempt_until_its_subscription_is_enabled(
    client, make_key, clock
):
    token = make_key().token
    sub = created(client, token)["id"]
    [held] = publish(sub, clock)
    with database.connection_context():
        subscriptions.disable_subscription(sub)
    [item] = get_log(client, token, sub)["data"]
    assert (item["id"], item["status"], item["next_attempt_at"]) == (held, "held", None)
    clock.advance(30)
    with database.connection_context():
        subscriptions.enable_subscription(sub)
    [item] = get_log(client, token, sub)["data"]
    assert (item["status"], item["next_attempt_at"]) == ("pending", at(clock.current))


@pytest.mark.parametrize(("step", "limit"), [(1, 2), (0, 2), (0, 3), (0.25, 1)])
def test_pages_are_newest_first_without_gaps_or_repeats(client, make_key, clock, step, limit):
    token = make_key().token
    sub = created(client, token)["id"]
    other = created(client, token)["id"]
    publish(sub, clock, 4, step=step)
    publish(other, clock, 2)  # never in the first subscription's log
    publish(sub, clock, 3, step=step)
    with database.connection_context():
        expected = [
            row.id
            for row in Delivery.select()
            .where(Delivery.subscription == sub)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        ]
    arrived = []

    def more_deliveries():
        clock.advance(1)  # newer than every listed one: never on the pages that follow
        arrived.extend(publish(sub, clock, 2, step=step))

    assert walk(client, token, log_path(sub), limit, between_pages=more_deliveries) == expected
    assert len(expected) == 7 and len(arrived) == 2
    newest = [item["id"] for item in get_log(client, token, sub, limit=100)["data"]]
    assert set(newest[:2]) == set(arrived) and newest[2:] == expected


def test_the_status_filter_lists_only_that_status_across_pages(
    client, make_key, clock, short_retries
):
    token = make_key().token
    sub = created(client, token)["id"]
    delivered = []
    for _ in range(3):
        delivered += publish(sub, clock)
        attempt(short_retries, OK)
    pending = publish(sub, clock, 2)
    path = log_path(sub)
    assert walk(client, token, path, 1, status="delivered") == list(reversed(delivered))
    assert walk(client, token, path, 5, status="pending") == list(reversed(pending))
    for status in ("held", "dead_lettered", "cancelled"):
        assert get_log(client, token, sub, status=status)["data"] == []


@pytest.mark.parametrize("status", ["finished", "", "DELIVERED", "pending,held"])
def test_an_unknown_status_is_422(client, make_key, clock, status):
    token = make_key().token
    sub = created(client, token)["id"]
    [delivery] = publish(sub, clock)
    before = stored(delivery).__data__
    response = client.get(log_path(sub), headers=bearer(token), query_string={"status": status})
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "status"
    assert stored(delivery).__data__ == before


@pytest.mark.parametrize("limit", ["0", "101", "x"])
def test_a_limit_outside_1_to_100_is_422(client, make_key, limit):
    token = make_key().token
    sub = created(client, token)["id"]
    response = client.get(f"{log_path(sub)}?limit={limit}", headers=bearer(token))
    assert_problem(response, 422, "validation_error")


def test_a_cursor_tampered_or_from_another_list_is_400(client, make_key, clock):
    token = make_key().token
    first = created(client, token)["id"]
    second = created(client, token)["id"]
    publish(first, clock, 2)
    publish(second, clock, 2)
    cursor = first_cursor(client, token, log_path(first))
    assert get_log(client, token, first, cursor=cursor)["data"]
    tampered = flip(cursor, cursor.rindex(".") // 2)
    for path, bad, filters in [
        (log_path(first), tampered, {}),
        (log_path(first), "garbage", {}),
        (log_path(second), cursor, {}),  # another subscription's log
        (log_path(first), cursor, {"status": "pending"}),  # the same log with another filter
        (f"{WEBHOOKS}/{first}/failures", cursor, {}),  # a log's cursor is no failures cursor
    ]:
        query = {**filters, "cursor": bad}
        response = client.get(path, headers=bearer(token), query_string=query)
        assert_problem(response, 400, "invalid_cursor")


# --- refusals common to both routes ---------------------------------------------------------


def test_unknown_other_orgs_and_deleted_subscriptions_are_404(client, make_key, clock):
    token = make_key().token
    other_token = make_key(org_name="Other").token
    deleted = created(client, token)["id"]
    [deleted_delivery] = publish(deleted, clock)
    assert client.delete(f"{WEBHOOKS}/{deleted}", headers=bearer(token)).status_code == 204
    theirs = created(client, other_token)["id"]
    [their_delivery] = publish(theirs, clock)
    cases = [
        ("wh_" + "a" * 26, "dlv_" + "a" * 26),
        ("not-an-id", "dlv_" + "a" * 26),
        (deleted, deleted_delivery),
        (theirs, their_delivery),
    ]
    for subscription_id, delivery_id in cases:
        for path in (log_path(subscription_id), log_path(subscription_id, delivery_id)):
            response = client.get(path, headers=bearer(token))
            assert_problem(response, 404, "subscription_not_found")
    assert stored(their_delivery).status == "pending"
    assert stored(deleted_delivery).status == "cancelled"


def test_unknown_malformed_and_other_subscriptions_deliveries_are_404(client, make_key, clock):
    token = make_key().token
    other_token = make_key(org_name="Other").token
    mine = created(client, token)["id"]
    sibling = created(client, token)["id"]
    [sibling_delivery] = publish(sibling, clock)
    theirs = created(client, other_token)["id"]
    [their_delivery] = publish(theirs, clock)
    for delivery_id in [
        ids.new_id("dlv"),
        "dlv_",
        "nope",
        "wh_" + "a" * 26,
        sibling_delivery,
        their_delivery,
    ]:
        response = client.get(log_path(mine, delivery_id), headers=bearer(token))
        assert_problem(response, 404, "delivery_not_found")
    assert get_detail(client, token, sibling, sibling_delivery)["id"] == sibling_delivery


def test_a_key_without_webhooks_manage_is_403(client, make_key, clock):
    owner = make_key()
    sub = created(client, owner.token)["id"]
    [delivery] = publish(sub, clock)
    token = make_key(scopes=[], org=owner.org).token
    for path in (log_path(sub), log_path(sub, delivery)):
        body = assert_problem(client.get(path, headers=bearer(token)), 403, "insufficient_scope")
        assert body["required_scope"] == "webhooks:manage"


# --- one delivery, with every attempt -----------------------------------------------------------


def test_a_delivered_deliverys_detail_lists_the_failures_then_the_ok_attempt(
    client, make_key, clock, config
):
    token = make_key().token
    sub = created(client, token)["id"]
    [delivery] = publish(sub, clock)
    first_at = clock.current
    attempt(config, HTTP_500)
    after_retry(clock)
    second_at = clock.current
    attempt(config, answer(204, duration_ms=42))

    detail = get_detail(client, token, sub, delivery)
    assert set(detail) == (ITEM_FIELDS - {"attempts"}) | {"attempts", "attempt_count"}
    assert detail["status"] == "delivered" and detail["attempt_count"] == 2
    assert detail["delivered_at"] == at(second_at) and detail["last_response_status"] == 204
    [listed] = get_log(client, token, sub)["data"]
    assert {k: v for k, v in listed.items() if k != "attempts"} == {
        k: v for k, v in detail.items() if k not in ("attempts", "attempt_count")
    }
    assert all(set(item) == ATTEMPT_FIELDS for item in detail["attempts"])
    assert detail["attempts"] == [
        {
            "attempt": 1,
            "attempted_at": at(first_at),
            "duration_ms": 5,
            "outcome": "http_status",
            "response_status": 500,
            "response_excerpt": "answered 500",
        },
        {
            "attempt": 2,
            "attempted_at": at(second_at),
            "duration_ms": 42,
            "outcome": "ok",
            "response_status": 204,
            "response_excerpt": None,
        },
    ]


def test_a_delivery_not_yet_attempted_has_no_attempts(client, make_key, clock):
    token = make_key().token
    sub = created(client, token)["id"]
    [delivery] = publish(sub, clock)
    detail = get_detail(client, token, sub, delivery)
    assert detail["attempts"] == [] and detail["attempt_count"] == 0
    assert detail["next_attempt_at"] == at(clock.current)
    assert detail["last_response_status"] is None


def test_a_replayed_deliverys_detail_lists_every_attempt_across_the_replay(
    client, make_key, clock, short_retries
):
    token = make_key().token
    sub = created(client, token)["id"]
    [delivery] = publish(sub, clock)
    attempt(short_retries, HTTP_500)
    after_retry(clock)
    attempt(short_retries, OK)

    clock.advance(3600)
    with database.connection_context():
        replay_delivery(delivery, lifecycle.PARTNER)
    # Sent again but not attempted yet: the latest answer is still the success's.
    item = get_log(client, token, sub)["data"][0]
    assert (item["status"], item["delivered_at"], item["last_response_status"]) == (
        "pending",
        None,
        200,
    )
    assert item["next_attempt_at"] == at(clock.current)

    attempt(short_retries, answer(502))
    assert get_log(client, token, sub)["data"][0]["last_response_status"] == 502
    after_retry(clock)
    attempt(short_retries, TIMEOUT)  # the replay's retries are spent: dead-lettered
    item = get_log(client, token, sub)["data"][0]
    assert (item["status"], item["attempts"], item["last_response_status"]) == (
        "dead_lettered",
        4,
        None,
    )

    detail = get_detail(client, token, sub, delivery)
    assert [(a["attempt"], a["outcome"], a["response_status"]) for a in detail["attempts"]] == [
        (1, "http_status", 500),
        (2, "ok", 200),
        (3, "http_status", 502),
        (4, "timeout", None),
    ]
    times = [a["attempted_at"] for a in detail["attempts"]]
    assert times == sorted(times) and detail["attempt_count"] == 4
    assert detail["delivered_at"] is None and detail["next_attempt_at"] is None
