"""GET /webhooks: the list, its page envelope and its cursors."""

from __future__ import annotations

import pytest

from partner_api.db import database
from partner_api.models import Subscription

from .conftest import (
    SUBSCRIPTION_FIELDS,
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

# --- GET /webhooks ------------------------------------------------------------------------------


def test_list_is_newest_first_in_the_page_envelope(client, make_key, clock):
    token = make_key().token
    assert client.get(WEBHOOKS, headers=bearer(token)).get_json() == {
        "data": [],
        "has_more": False,
        "next_cursor": None,
    }
    made = []
    for _ in range(3):
        made.append(created(client, token)["id"])
        clock.advance(1)
    response = client.get(WEBHOOKS, headers=bearer(token))
    page = response.get_json()
    assert [item["id"] for item in page["data"]] == made[::-1]
    assert page["has_more"] is False and page["next_cursor"] is None
    assert all(set(item) == SUBSCRIPTION_FIELDS for item in page["data"])
    assert response.headers["X-RateLimit-Limit"] == "600"


@pytest.mark.parametrize("limit", ["0", "101", "x", "-1", "1.5", ""])
def test_list_limit_outside_1_to_100_is_422(client, make_key, limit):
    token = make_key().token
    response = client.get(f"{WEBHOOKS}?limit={limit}", headers=bearer(token))
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "limit" and body["errors"][0]["location"] == "query"


@pytest.mark.parametrize("limit", [1, 100])
def test_list_limit_bounds_are_accepted(client, make_key, limit):
    token = make_key().token
    created(client, token)
    created(client, token)
    page = client.get(WEBHOOKS, headers=bearer(token), query_string={"limit": limit}).get_json()
    assert len(page["data"]) == min(limit, 2)
    assert page["has_more"] is (limit == 1)


@pytest.mark.parametrize("limit", [1, 3, 7])
def test_cursor_pagination_walks_every_page_without_duplicates_or_gaps(
    client, make_key, clock, limit
):
    token = make_key().token
    for index in range(7):
        created(client, token)
        # Some share a timestamp (ties broken by id), one step is sub-second.
        clock.advance([0, 1, 0, 0.5, 2, 0, 1][index])
    with database.connection_context():
        expected = [
            sub.id
            for sub in Subscription.select().order_by(
                Subscription.created_at.desc(), Subscription.id.desc()
            )
        ]
    assert walk(client, token, WEBHOOKS, limit) == expected
    assert listed_ids(client, token) == expected


def test_pages_are_stable_when_subscriptions_are_created_between_fetches(client, make_key, clock):
    token = make_key().token
    original = []
    for _ in range(5):
        original.append(created(client, token)["id"])
        clock.advance(1)
    newer = []

    def create_more():
        clock.advance(1)
        newer.extend(created(client, token)["id"] for _ in range(2))

    assert walk(client, token, WEBHOOKS, 2, between_pages=create_more) == original[::-1]
    assert len(newer) == 2
    # The two new ones share a timestamp, so they come in id order (the tie-breaker).
    assert listed_ids(client, token) == sorted(newer, reverse=True) + original[::-1]


def test_tampered_or_garbage_cursor_is_400_invalid_cursor(client, make_key, clock):
    token = make_key().token
    created(client, token)
    clock.advance(1)
    created(client, token)
    cursor = first_cursor(client, token)
    payload_end = cursor.rindex(".")
    candidates = [
        flip(cursor, payload_end // 2),  # inside the signed payload
        flip(cursor, payload_end + (len(cursor) - payload_end) // 2),  # inside the signature
        cursor[:-3],
        cursor + "x",
        "garbage",
        "a.b.c",
        "é",
    ]
    for bad in candidates:
        response = client.get(WEBHOOKS, headers=bearer(token), query_string={"cursor": bad})
        body = assert_problem(response, 400, "invalid_cursor")
        assert body["errors"] == [
            {
                "location": "query",
                "field": "cursor",
                "message": "The cursor is malformed or not valid for this list.",
            }
        ]
    assert (
        client.get(WEBHOOKS, headers=bearer(token), query_string={"cursor": cursor}).status_code
        == 200
    )


def test_cursor_from_another_orgs_list_is_400(client, make_key, clock):
    token = make_key().token
    other_token = make_key(org_name="Other").token
    for _ in range(2):
        created(client, token)
        created(client, other_token)
        clock.advance(1)
    other_cursor = first_cursor(client, other_token)
    response = client.get(WEBHOOKS, headers=bearer(token), query_string={"cursor": other_cursor})
    assert_problem(response, 400, "invalid_cursor")


def test_failures_cursor_is_refused_on_the_subscriptions_list_and_back(client, make_key, clock):
    token = make_key().token
    subscription = created(client, token)
    clock.advance(1)
    created(client, token)
    add_failures(subscription["id"], clock, 2)
    failures_path = f"{WEBHOOKS}/{subscription['id']}/failures"
    failures_cursor = first_cursor(client, token, failures_path)
    subscriptions_cursor = first_cursor(client, token)
    response = client.get(WEBHOOKS, headers=bearer(token), query_string={"cursor": failures_cursor})
    assert_problem(response, 400, "invalid_cursor")
    response = client.get(
        failures_path, headers=bearer(token), query_string={"cursor": subscriptions_cursor}
    )
    assert_problem(response, 400, "invalid_cursor")


def test_cursor_survives_deletion_of_the_row_it_points_at(client, make_key, clock):
    token = make_key().token
    made = []
    for _ in range(4):
        made.append(created(client, token)["id"])
        clock.advance(1)
    page = client.get(WEBHOOKS, headers=bearer(token), query_string={"limit": 2}).get_json()
    assert [item["id"] for item in page["data"]] == [made[3], made[2]]
    assert client.delete(f"{WEBHOOKS}/{made[2]}", headers=bearer(token)).status_code == 204
    rest = client.get(
        WEBHOOKS, headers=bearer(token), query_string={"limit": 2, "cursor": page["next_cursor"]}
    ).get_json()
    assert [item["id"] for item in rest["data"]] == [made[1], made[0]]
    assert rest["has_more"] is False


def test_deleted_subscriptions_disappear_from_the_list(client, make_key, clock):
    token = make_key().token
    made = []
    for _ in range(3):
        made.append(created(client, token)["id"])
        clock.advance(1)
    assert client.delete(f"{WEBHOOKS}/{made[1]}", headers=bearer(token)).status_code == 204
    assert listed_ids(client, token) == [made[2], made[0]]
    assert walk(client, token, WEBHOOKS, 1) == [made[2], made[0]]
