"""GET /webhooks/{id}/failures: the failure audit of a subscription."""

from __future__ import annotations

import pytest

from partner_api import clock as clock_module
from partner_api.db import database
from partner_api.models import DeliveryFailure

from .conftest import (
    FAILURE_FIELDS,
    RFC3339_UTC,
    WEBHOOKS,
    add_failures,
    assert_problem,
    bearer,
    created,
    first_cursor,
    flip,
    listed_ids,
    walk,
)

# --- GET /webhooks/{id}/failures ----------------------------------------------------------------


def test_failures_of_a_new_subscription_is_an_empty_page(client, make_key):
    token = make_key().token
    subscription = created(client, token)
    response = client.get(f"{WEBHOOKS}/{subscription['id']}/failures", headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json() == {"data": [], "has_more": False, "next_cursor": None}
    assert response.headers["X-RateLimit-Limit"] == "600"


def test_failures_are_newest_first_with_every_field(client, make_key, clock):
    token = make_key().token
    subscription = created(client, token)
    other = created(client, token)
    rows = add_failures(subscription["id"], clock, 4, dead_letter_last=True)
    add_failures(other["id"], clock, 2)  # never shown on the first subscription
    response = client.get(f"{WEBHOOKS}/{subscription['id']}/failures", headers=bearer(token))
    assert response.status_code == 200
    page = response.get_json()
    assert page["has_more"] is False and page["next_cursor"] is None
    assert [item["id"] for item in page["data"]] == [row.id for row in reversed(rows)]
    for item, row in zip(page["data"], reversed(rows), strict=True):
        assert set(item) == FAILURE_FIELDS
        assert item == {
            "id": row.id,
            "delivery_id": row.delivery_id,
            "event_id": row.event_id,
            "event_type": "vc.test.ping",
            "attempt": row.attempt,
            "attempted_at": clock_module.isoformat(row.attempted_at),
            "duration_ms": row.duration_ms,
            "error_kind": row.error_kind,
            "error_message": row.error_message,
            "response_status": row.response_status,
            "response_excerpt": row.response_excerpt,
            "next_attempt_at": clock_module.isoformat(row.next_attempt_at),
            "dead_lettered": bool(row.dead_lettered),
        }
        assert RFC3339_UTC.match(item["attempted_at"])
        assert isinstance(item["dead_lettered"], bool)  # a JSON boolean, not the stored 0/1
    newest, older = page["data"][0], page["data"][1]
    assert newest["dead_lettered"] is True and newest["next_attempt_at"] is None
    assert newest["response_status"] is None and newest["attempt"] == 4
    assert older["dead_lettered"] is False and RFC3339_UTC.match(older["next_attempt_at"])
    assert older["response_status"] == 500 and older["response_excerpt"] == "internal error"


@pytest.mark.parametrize(("step", "limit"), [(60, 2), (0, 2), (0.25, 3)])
def test_failure_pages_are_stable_while_new_failures_arrive(client, make_key, clock, step, limit):
    token = make_key().token
    subscription = created(client, token)
    path = f"{WEBHOOKS}/{subscription['id']}/failures"
    add_failures(subscription["id"], clock, 3, step=step)
    add_failures(subscription["id"], clock, 3, step=step)
    with database.connection_context():
        expected = [
            row.id
            for row in DeliveryFailure.select().order_by(
                DeliveryFailure.attempted_at.desc(), DeliveryFailure.id.desc()
            )
        ]
    arrived = []

    def more_failures():
        clock.advance(1)
        arrived.extend(row.id for row in add_failures(subscription["id"], clock, 2, step=step))

    assert walk(client, token, path, limit, between_pages=more_failures) == expected
    assert len(arrived) == 2
    assert set(listed_ids(client, token, path)) == set(expected) | set(arrived)
    assert listed_ids(client, token, path)[len(arrived) :] == expected


def test_failures_cursor_tampered_or_from_another_subscription_is_400(client, make_key, clock):
    token = make_key().token
    first = created(client, token)
    second = created(client, token)
    add_failures(first["id"], clock, 2)
    add_failures(second["id"], clock, 2)
    first_path = f"{WEBHOOKS}/{first['id']}/failures"
    second_path = f"{WEBHOOKS}/{second['id']}/failures"
    cursor = first_cursor(client, token, first_path)
    assert (
        client.get(first_path, headers=bearer(token), query_string={"cursor": cursor}).status_code
        == 200
    )
    tampered = flip(cursor, cursor.rindex(".") // 2)
    for path, bad in [(first_path, tampered), (first_path, "garbage"), (second_path, cursor)]:
        response = client.get(path, headers=bearer(token), query_string={"cursor": bad})
        assert_problem(response, 400, "invalid_cursor")


@pytest.mark.parametrize("limit", ["0", "101", "x"])
def test_failures_limit_outside_1_to_100_is_422(client, make_key, limit):
    token = make_key().token
    subscription = created(client, token)
    response = client.get(
        f"{WEBHOOKS}/{subscription['id']}/failures?limit={limit}", headers=bearer(token)
    )
    assert_problem(response, 422, "validation_error")


def test_failures_of_a_deleted_subscription_are_404(client, make_key, clock):
    token = make_key().token
    subscription = created(client, token)
    add_failures(subscription["id"], clock, 1)
    assert (
        client.delete(f"{WEBHOOKS}/{subscription['id']}", headers=bearer(token)).status_code == 204
    )
    response = client.get(f"{WEBHOOKS}/{subscription['id']}/failures", headers=bearer(token))
    assert_problem(response, 404, "subscription_not_found")
