"""The webhook subscriptions API: create, list, delete, test ping and the failure audit.

Every storage test runs on SQLite and PostgreSQL (see conftest). DNS never leaves the process:
the conftest resolver makes `hooks.example.com` public and `internal.example.com` private.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import threading

import pytest

from partner_api import clock as clock_module
from partner_api import ids
from partner_api.db import database
from partner_api.delivery.event_types import EVENT_TYPES
from partner_api.delivery.outbox import publish_event
from partner_api.models import Delivery, DeliveryFailure, Event, Subscription

from .conftest import assert_problem, bearer

WEBHOOKS = "/api/v1/partner/webhooks"
GOOD_URL = "https://hooks.example.com/partner-api"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SUBSCRIPTION_FIELDS = {
    "id",
    "url",
    "events",
    "description",
    "status",
    "disabled_reason",
    "disabled_at",
    "consecutive_failures",
    "created_at",
}
FAILURE_FIELDS = {
    "id",
    "delivery_id",
    "event_id",
    "event_type",
    "attempt",
    "attempted_at",
    "duration_ms",
    "error_kind",
    "error_message",
    "response_status",
    "response_excerpt",
    "next_attempt_at",
    "dead_lettered",
}


@pytest.fixture
def make_client(make_app):
    """A client of another app on the same database, with some settings replaced."""

    def make(**overrides):
        return make_app(**overrides).test_client()

    return make


@pytest.fixture
def strict_client(make_client):
    """The production SSRF policy: https only and no exempt networks."""
    return make_client(webhook_allow_cidrs=(), allow_http_webhooks=False)


def create(client, token, **body):
    body.setdefault("url", GOOD_URL)
    return client.post(WEBHOOKS, json=body, headers=bearer(token))


def created(client, token, **body) -> dict:
    response = create(client, token, **body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def count(model, *conditions) -> int:
    with database.connection_context():
        query = model.select()
        if conditions:
            query = query.where(*conditions)
        return query.count()


def listed_ids(client, token, path=WEBHOOKS) -> list[str]:
    response = client.get(path, headers=bearer(token), query_string={"limit": 100})
    assert response.status_code == 200, response.get_data(as_text=True)
    return [item["id"] for item in response.get_json()["data"]]


def walk(client, token, path, limit, between_pages=None) -> list[str]:
    """Every id of a list, page by page; checks the envelope of every page on the way."""
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        response = client.get(path, headers=bearer(token), query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        assert set(page) == {"data", "has_more", "next_cursor"}
        assert len(page["data"]) <= limit
        seen.extend(item["id"] for item in page["data"])
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return seen
        assert len(page["data"]) == limit and isinstance(page["next_cursor"], str)
        cursor = page["next_cursor"]
        if between_pages is not None and pages == 1:
            between_pages()


def first_cursor(client, token, path=WEBHOOKS) -> str:
    response = client.get(path, headers=bearer(token), query_string={"limit": 1})
    cursor = response.get_json()["next_cursor"]
    assert cursor, "the list needs at least two items"
    return cursor


def flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def add_failures(subscription_id: str, clock, how_many: int, *, step=60, dead_letter_last=False):
    """One event and delivery with `how_many` failed attempts, `step` seconds apart."""
    with database.connection_context():
        subscription = Subscription.get_by_id(subscription_id)
        event = Event.create(
            id=ids.new_id("evt"),
            org=subscription.org_id,
            type="vc.test.ping",
            data={"n": how_many},
            occurred_at=clock.current,
        )
        delivery = Delivery.create(
            id=ids.new_id("dlv"),
            event=event,
            subscription=subscription,
            status="pending",
            attempts=0,
            next_attempt_at=clock.current,
            created_at=clock.current,
        )
        failures = []
        for attempt in range(1, how_many + 1):
            clock.advance(step)
            last = dead_letter_last and attempt == how_many
            failures.append(
                DeliveryFailure.create(
                    id=ids.new_id("att"),
                    delivery=delivery,
                    subscription=subscription,
                    event=event,
                    event_type=event.type,
                    attempt=attempt,
                    attempted_at=clock.current,
                    duration_ms=100 + attempt,
                    error_kind="timeout" if last else "http_status",
                    error_message="timed out" if last else f"receiver answered 500 ({attempt})",
                    response_status=None if last else 500,
                    response_excerpt=None if last else "internal error",
                    next_attempt_at=None if last else clock.current + dt.timedelta(minutes=5),
                    dead_lettered=1 if last else 0,
                )
            )
    return failures


# --- POST /webhooks ----------------------------------------------------------------------------


def test_create_returns_secret_once_and_list_never_shows_it(client, make_key, clock):
    token = make_key().token
    response = create(client, token, description="Production receiver")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == SUBSCRIPTION_FIELDS | {"secret"}
    assert ids.looks_like("wh", body["id"])
    assert body["url"] == GOOD_URL
    assert body["events"] == ["*"]  # omitted: every type, present and future
    assert body["description"] == "Production receiver"
    assert body["status"] == "enabled" and body["consecutive_failures"] == 0
    assert body["disabled_reason"] is None and body["disabled_at"] is None
    assert RFC3339_UTC.match(body["created_at"])
    assert body["created_at"] == clock_module.isoformat(clock.current)
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_") :], validate=True)) >= 32
    assert response.headers["X-RateLimit-Limit"] == "600"

    listing = client.get(WEBHOOKS, headers=bearer(token))
    assert listing.status_code == 200
    [item] = listing.get_json()["data"]
    assert set(item) == SUBSCRIPTION_FIELDS
    assert item == {key: value for key, value in body.items() if key != "secret"}
    assert secret not in listing.get_data(as_text=True)


def test_each_subscription_gets_its_own_secret(client, make_key):
    token = make_key().token
    secrets = {created(client, token)["secret"] for _ in range(3)}
    assert len(secrets) == 3


def test_events_omitted_or_star_are_stored_as_star_and_named_ones_deduplicated(client, make_key):
    token = make_key().token
    assert created(client, token)["events"] == ["*"]
    assert created(client, token, events=["*"])["events"] == ["*"]
    assert created(client, token, events=["*", "*"])["events"] == ["*"]
    assert created(client, token, events=["vc.test.ping", "vc.test.ping"])["events"] == [
        "vc.test.ping"
    ]
    listing = client.get(WEBHOOKS, headers=bearer(token)).get_json()["data"]
    assert sorted(item["events"] for item in listing) == [["*"]] * 3 + [["vc.test.ping"]]


def test_star_mixed_with_named_types_is_422_and_stores_nothing(client, make_key):
    token = make_key().token
    response = create(client, token, events=["*", "vc.test.ping"])
    body = assert_problem(response, 422, "event_types_with_wildcard")
    assert body["errors"][0]["field"] == "events"
    assert '["*"] alone' in body["detail"]
    assert count(Subscription) == 0


def test_star_receives_an_event_type_added_after_it_was_created(client, make_key, monkeypatch):
    org, _, token = make_key()
    every = created(client, token)  # events omitted
    named = created(client, token, events=["vc.test.ping"])
    # A later release adds a type: the catalogue is the one table every check reads.
    monkeypatch.setitem(EVENT_TYPES, "vc.lead.created", "A lead was created.")
    with database.connection_context():
        _, deliveries = publish_event(org.id, "vc.lead.created", {"lead": 1})
        assert [d.subscription_id for d in deliveries] == [every["id"]]
        _, pings = publish_event(org.id, "vc.test.ping", {})
        assert sorted(d.subscription_id for d in pings) == sorted([every["id"], named["id"]])


def test_a_create_answers_201_with_location_naming_the_new_subscription(client, make_key):
    token = make_key().token
    response = create(client, token)
    assert response.status_code == 201
    assert response.headers["Location"] == f"{WEBHOOKS}/{response.get_json()['id']}"


def test_url_is_stored_normalised(client, make_key):
    token = make_key().token
    body = created(client, token, url="HTTPS://Hooks.Example.COM:443")
    assert body["url"] == "https://hooks.example.com/"


def test_secret_never_reaches_logs_or_other_answers(client, make_key, clock, caplog):
    caplog.set_level(logging.DEBUG)
    token = make_key().token
    first = create(client, token)
    secret = first.get_json()["secret"]
    subscription_id = first.get_json()["id"]
    path = f"{WEBHOOKS}/{subscription_id}"
    answers = [
        client.get(WEBHOOKS, headers=bearer(token)),
        client.post(f"{path}/test", json={"secret": "whsec_wrong"}, headers=bearer(token)),
        client.post(f"{path}/test", json={"secret": secret}, headers=bearer(token)),
        client.post(f"{path}/test", json={"secret": 42}, headers=bearer(token)),
        client.get(f"{path}/failures", headers=bearer(token)),
        create(client, token, events=["vc.nope"]),
        client.delete(path, headers=bearer(token)),
        client.delete(path, headers=bearer(token)),
        client.post(f"{path}/test", json={"secret": secret}, headers=bearer(token)),
    ]
    assert [answer.status_code for answer in answers] == [
        200,
        403,
        202,
        422,
        200,
        422,
        204,
        404,
        404,
    ]
    for answer in answers:
        assert secret not in answer.get_data(as_text=True)
    assert any(record.name == "peewee" for record in caplog.records), "DEBUG was not captured"
    assert secret not in caplog.text
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert secret[len("whsec_") :] not in caplog.text


def test_unknown_event_type_is_422_and_stores_nothing(client, make_key):
    token = make_key().token
    response = create(client, token, events=["vc.test.ping", "vc.lead.created"])
    body = assert_problem(response, 422, "unknown_event_type")
    assert body["errors"][0]["field"] == "events"
    assert body["errors"][0]["location"] == "json"
    assert "vc.lead.created" in body["detail"]
    assert count(Subscription) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": GOOD_URL, "events": []}, "events"),
        ({"url": GOOD_URL, "events": "vc.test.ping"}, "events"),
        ({"url": GOOD_URL, "events": [7]}, "events.0"),
        ({}, "url"),
        ({"events": ["vc.test.ping"]}, "url"),
        ({"url": 42}, "url"),
        ({"url": GOOD_URL, "description": "x" * 501}, "description"),
        ({"url": GOOD_URL, "secret": "whsec_mine"}, "secret"),
        ({"url": GOOD_URL, "status": "disabled"}, "status"),
    ],
)
def test_invalid_create_body_is_422_validation_error_and_stores_nothing(
    client, make_key, body, field
):
    token = make_key().token
    response = client.post(WEBHOOKS, json=body, headers=bearer(token))
    problem = assert_problem(response, 422, "validation_error")
    assert field in [error["field"] for error in problem["errors"]]
    assert all(error["location"] == "json" for error in problem["errors"])
    assert count(Subscription) == 0


@pytest.mark.parametrize("body", [[GOOD_URL], "https://hooks.example.com/", 7, None])
def test_create_body_that_is_not_an_object_is_422(client, make_key, body):
    token = make_key().token
    response = client.post(
        WEBHOOKS, data=json.dumps(body), headers=bearer(token), content_type="application/json"
    )
    assert_problem(response, 422, "validation_error")
    assert count(Subscription) == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ({"url": GOOD_URL}, None),  # form-encoded
        ('{"url": "' + GOOD_URL + '"}', "text/plain"),
        ('{"url": "' + GOOD_URL + '"}', "application/x-www-form-urlencoded"),
    ],
)
def test_non_json_body_is_415_and_stores_nothing(client, make_key, data, content_type):
    token = make_key().token
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post(WEBHOOKS, data=data, headers=bearer(token), **kwargs)
    assert_problem(response, 415, "unsupported_media_type")
    assert count(Subscription) == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"url": ',
        "{'url': 'x'}",
        "nope",
        '{"url": "a"}}',
        "[" * 5000 + "]" * 5000,  # nesting deeper than the parser's recursion limit
        '{"url": ' + "9" * 5000 + "}",  # integer longer than Python converts
        '{"url": "https://hooks.example.com/\\ud800"}',  # lone surrogate: not text
        b'{"url": "\xff\xfe"}',  # not UTF-8
    ],
    ids=[
        "truncated",
        "single-quotes",
        "bare-word",
        "trailing",
        "deep",
        "huge-int",
        "surrogate",
        "not-utf8",
    ],
)
def test_broken_json_is_400_invalid_json(client, make_key, raw):
    token = make_key().token
    response = client.post(
        WEBHOOKS, data=raw, headers=bearer(token), content_type="application/json"
    )
    assert_problem(response, 400, "invalid_json")
    assert count(Subscription) == 0


def test_lone_surrogate_secret_on_test_ping_is_400(client, make_key):
    token = make_key().token
    target = created(client, token)
    response = client.post(
        f"{WEBHOOKS}/{target['id']}/test",
        data='{"secret": "\\ud800"}',
        headers=bearer(token),
        content_type="application/json",
    )
    assert_problem(response, 400, "invalid_json")
    assert count(Event) == 0


@pytest.mark.parametrize("description", ["nul\x00byte", "bell\x07", "esc\x1b[31m"])
def test_control_characters_in_description_are_refused(client, make_key, description):
    token = make_key().token
    response = client.post(
        WEBHOOKS, json={"url": GOOD_URL, "description": description}, headers=bearer(token)
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "description"
    assert count(Subscription) == 0


def test_body_over_64_kib_is_413_and_stores_nothing(client, make_key):
    token = make_key().token
    response = create(client, token, description="x" * (64 * 1024))
    assert_problem(response, 413, "payload_too_large")
    assert count(Subscription) == 0


def test_a_nameless_query_parameter_is_422_with_a_string_field(client, make_key):
    _, _, token = make_key()
    response = client.get(WEBHOOKS + "?=x", headers=bearer(token))
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] == [{"location": "query", "field": "", "message": "Unknown field."}]


def test_an_unknown_field_is_named_exactly_as_sent_beside_a_known_one(client, make_key):
    _, _, token = make_key()
    response = client.post(WEBHOOKS, json={"url": GOOD_URL, "url.": "x"}, headers=bearer(token))
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] == [{"location": "json", "field": "url.", "message": "Unknown field."}]
    assert count(Subscription) == 0


def test_every_422_field_is_a_string(client, make_key):
    _, _, token = make_key()
    response = client.post(
        WEBHOOKS,
        json={"events": ["vc.test.ping", 7], "": 1, "description": None},
        headers=bearer(token),
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] and all(isinstance(e["field"], str) for e in body["errors"])
    assert {e["field"] for e in body["errors"]} >= {"url", "", "events.1", "description"}
    assert count(Subscription) == 0


def test_unknown_query_parameter_on_create_is_422(client, make_key):
    token = make_key().token
    response = client.post(WEBHOOKS + "?dry_run=1", json={"url": GOOD_URL}, headers=bearer(token))
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] == [
        {"location": "query", "field": "dry_run", "message": "Unknown field."}
    ]
    assert count(Subscription) == 0


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/partner-api", "url_scheme_not_allowed"),
        ("ftp://hooks.example.com/partner-api", "url_scheme_not_allowed"),
        ("https://good@evil/", "url_credentials_not_allowed"),
        ("https://user:pw@hooks.example.com/", "url_credentials_not_allowed"),
        ("https://127.0.0.1/", "address_not_allowed"),
        ("https://[::1]/", "address_not_allowed"),
        ("https://169.254.169.254/latest/meta-data/", "address_not_allowed"),
        ("https://internal.example.com/", "address_not_allowed"),
        ("https://mixed.example.com/", "address_not_allowed"),
        ("https://nowhere.example.com/", "host_unresolvable"),
        ("https://evil.com\\@good.com/", "invalid_url"),
        ("hooks.example.com/partner-api", "invalid_url"),
        ("https://" + "a" * 2100 + ".example.com/", "url_too_long"),
    ],
)
def test_ssrf_refusals_at_create_are_422_naming_url_and_store_nothing(
    strict_client, make_key, url, code
):
    token = make_key().token
    response = strict_client.post(WEBHOOKS, json={"url": url}, headers=bearer(token))
    body = assert_problem(response, 422, code)
    assert len(body["errors"]) == 1
    assert body["errors"][0]["location"] == "json" and body["errors"][0]["field"] == "url"
    assert body["errors"][0]["message"] == body["detail"]
    assert count(Subscription) == 0


@pytest.mark.parametrize("host", ["internal.example.com", "mixed.example.com"])
def test_create_refusal_does_not_reveal_what_a_name_resolves_to(strict_client, make_key, host):
    _, _, token = make_key()
    response = strict_client.post(WEBHOOKS, json={"url": f"https://{host}/"}, headers=bearer(token))
    body = assert_problem(response, 422, "address_not_allowed")
    assert body["detail"] == f"Webhook host {host} resolves to an address that is not allowed."
    assert "10.0.0.5" not in response.get_data(as_text=True)
    assert count(Subscription) == 0


def test_create_refusal_of_an_ip_literal_names_the_typed_address(strict_client, make_key):
    _, _, token = make_key()
    response = strict_client.post(
        WEBHOOKS, json={"url": "https://10.0.0.5/"}, headers=bearer(token)
    )
    body = assert_problem(response, 422, "address_not_allowed")
    assert "10.0.0.5" in body["detail"]
    assert count(Subscription) == 0


def test_strict_policy_still_accepts_a_public_https_url(strict_client, make_key):
    token = make_key().token
    assert created(strict_client, token)["url"] == GOOD_URL


def test_allow_list_and_http_settings_reach_the_create_check(client, make_key):
    """The test config allows http:// and exempts 127.0.0.0/8; private space stays refused."""
    token = make_key().token
    assert created(client, token, url="http://127.0.0.1:8080/hook")["url"] == (
        "http://127.0.0.1:8080/hook"
    )
    assert_problem(create(client, token, url="http://10.0.0.5/hook"), 422, "address_not_allowed")
    assert count(Subscription) == 1


def test_subscription_cap_is_per_org_and_deleting_frees_a_slot(make_client, make_key):
    capped = make_client(max_subscriptions_per_org=2)
    org, _, token = make_key()
    other_token = make_key(org_name="Other").token
    first = created(capped, token)
    created(capped, token)
    body = assert_problem(create(capped, token), 409, "subscription_limit_reached")
    assert "2" in body["detail"]
    assert count(Subscription, Subscription.org == org.id) == 2

    created(capped, other_token)  # another org has its own allowance

    assert capped.delete(f"{WEBHOOKS}/{first['id']}", headers=bearer(token)).status_code == 204
    created(capped, token)
    assert_problem(create(capped, token), 409, "subscription_limit_reached")
    assert len(listed_ids(capped, token)) == 2


# --- authentication and scope on every route ----------------------------------------------------

SOME_ID = "wh_" + "a" * 26
ROUTES = [
    ("post", WEBHOOKS, {"json": {"url": GOOD_URL}}),
    ("get", WEBHOOKS, {}),
    ("delete", f"{WEBHOOKS}/{SOME_ID}", {}),
    ("post", f"{WEBHOOKS}/{SOME_ID}/test", {"json": {"secret": "whsec_x"}}),
    ("get", f"{WEBHOOKS}/{SOME_ID}/failures", {}),
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
        ("get", f"{WEBHOOKS}/{SOME_ID}", "DELETE"),
        ("get", f"{WEBHOOKS}/{SOME_ID}/test", "POST"),
        ("post", f"{WEBHOOKS}/{SOME_ID}/failures", "GET"),
    ],
)
def test_wrong_method_on_a_webhook_route_is_405_problem(client, method, path, allowed):
    response = getattr(client, method)(path)
    assert_problem(response, 405, "method_not_allowed")
    assert allowed in response.headers["Allow"]


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
        assert Subscription.get_by_id(theirs["id"]).deleted_at is None
    assert count(Event) == 1 and count(Delivery) == 1  # only the one add_failures made
    assert count(Delivery, Delivery.status == "pending") == 1
    failures = client.get(f"{path}/failures", headers=bearer(token_a)).get_json()
    assert len(failures["data"]) == 2


def test_create_does_not_wait_on_a_hanging_dns_server(make_app, make_key):
    release = threading.Event()

    def hanging(host, port):
        release.wait(10)
        return ["93.184.216.34"]

    app = make_app(resolver=hanging, create_dns_timeout=0.2)
    token = make_key().token
    try:
        response = app.test_client().post(
            WEBHOOKS, json={"url": "https://slow.example.com/"}, headers=bearer(token)
        )
    finally:
        release.set()
    body = assert_problem(response, 422, "host_unresolvable")
    assert body["errors"][0]["field"] == "url"
    assert count(Subscription) == 0
