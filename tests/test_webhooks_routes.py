"""Every webhook route: authentication, scope, unknown query parameters, methods, and
isolation between orgs.
"""

from __future__ import annotations

import pytest

from partner_api.db import database
from partner_api.models import Delivery, Event, Subscription

from .conftest import (
    GOOD_URL,
    WEBHOOKS,
    add_failures,
    assert_problem,
    bearer,
    count,
    created,
    listed_ids,
)

# --- authentication and scope on every route ----------------------------------------------------

SOME_ID = "wh_" + "a" * 26
ROUTES = [
    ("post", WEBHOOKS, {"json": {"url": GOOD_URL}}),
    ("get", WEBHOOKS, {}),
    ("get", f"{WEBHOOKS}/{SOME_ID}", {}),
    ("patch", f"{WEBHOOKS}/{SOME_ID}", {"json": {"status": "disabled"}}),
    ("delete", f"{WEBHOOKS}/{SOME_ID}", {}),
    ("post", f"{WEBHOOKS}/{SOME_ID}/test", {"json": {"secret": "whsec_x"}}),
    ("get", f"{WEBHOOKS}/{SOME_ID}/failures", {}),
    ("get", f"{WEBHOOKS}/{SOME_ID}/deliveries", {}),
    ("get", f"{WEBHOOKS}/{SOME_ID}/deliveries/dlv_m7hb5r3v2e5x2c7qkq3w6yq4n2", {}),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_every_webhook_route_needs_a_token(client, method, path, kwargs):
    response = getattr(client, method)(path, **kwargs)
    assert_problem(response, 401, "authentication_required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert count(Subscription) == 0


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_every_webhook_route_needs_webhooks_manage(client, make_key, method, path, kwargs):
    token = make_key(scopes=[]).token
    response = getattr(client, method)(path, headers=bearer(token), **kwargs)
    body = assert_problem(response, 403, "insufficient_scope")
    assert body["required_scope"] == "webhooks:manage"
    assert response.headers["X-RateLimit-Remaining"] == "599"
    assert count(Subscription) == 0


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_unknown_query_parameter_is_422_on_every_route(client, make_key, method, path, kwargs):
    token = make_key().token
    response = getattr(client, method)(path + "?verbose=1", headers=bearer(token), **kwargs)
    body = assert_problem(response, 422, "validation_error")
    assert {"location": "query", "field": "verbose", "message": "Unknown field."} in body["errors"]
    assert count(Subscription) == 0


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", WEBHOOKS, "GET"),
        ("put", f"{WEBHOOKS}/{SOME_ID}", "PATCH"),
        ("get", f"{WEBHOOKS}/{SOME_ID}/test", "POST"),
        ("post", f"{WEBHOOKS}/{SOME_ID}/failures", "GET"),
    ],
)
def test_wrong_method_on_a_webhook_route_is_405_problem(client, method, path, allowed):
    response = getattr(client, method)(path)
    assert_problem(response, 405, "method_not_allowed")
    assert allowed in response.headers["Allow"]


# --- isolation between orgs ---------------------------------------------------------------------


def test_no_route_crosses_the_org_boundary(client, make_key, clock):
    org_a, _, token_a = make_key(org_name="Acme")
    token_b = make_key(org_name="Globex").token
    theirs = created(client, token_a)
    mine = created(client, token_b, url="https://other.example.com/hook")
    add_failures(theirs["id"], clock, 2)
    path = f"{WEBHOOKS}/{theirs['id']}"

    assert listed_ids(client, token_b) == [mine["id"]]
    assert listed_ids(client, token_a) == [theirs["id"]]
    answers = [
        client.get(path, headers=bearer(token_b)),
        client.patch(path, json={"status": "disabled"}, headers=bearer(token_b)),
        client.delete(path, headers=bearer(token_b)),
        client.post(f"{path}/test", json={"secret": theirs["secret"]}, headers=bearer(token_b)),
        client.get(f"{path}/failures", headers=bearer(token_b)),
    ]
    for answer in answers:
        assert_problem(answer, 404, "subscription_not_found")
        assert theirs["secret"] not in answer.get_data(as_text=True)

    # Org A's subscription is untouched: listed, not deleted, no ping queued for it.
    assert listed_ids(client, token_a) == [theirs["id"]]
    with database.connection_context():
        untouched = Subscription.get_by_id(theirs["id"])
        assert untouched.deleted_at is None and untouched.status == "enabled"
    assert count(Event) == 1 and count(Delivery) == 1  # only the one add_failures made
    assert count(Delivery, Delivery.status == "pending") == 1
    failures = client.get(f"{path}/failures", headers=bearer(token_a)).get_json()
    assert len(failures["data"]) == 2
