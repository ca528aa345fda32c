"""POST /webhooks: create a subscription, its validation and its SSRF checks."""

from __future__ import annotations

import base64
import json
import logging
import threading

import pytest

from partner_api import clock as clock_module
from partner_api import ids
from partner_api.db import database
from partner_api.delivery.event_types import EVENT_TYPES
from partner_api.delivery.outbox import publish_event
from partner_api.models import Event, Subscription

from .conftest import (
    GOOD_URL,
    RFC3339_UTC,
    SUBSCRIPTION_FIELDS,
    WEBHOOKS,
    assert_problem,
    bearer,
    count,
    create,
    created,
    listed_ids,
)

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
