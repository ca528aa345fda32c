"""The Idempotency-Key header on POST /webhooks and POST /webhooks/{id}/test: a retry gets the
first answer and does no work twice, reuse with another request and bad keys are refused with
nothing changed, racing requests make one thing, keys expire after 24 hours and are pruned.
SQLite and PostgreSQL, the fake clock."""

from __future__ import annotations

import json
import threading

import pytest

from partner_api import idempotency_keys
from partner_api.db import database
from partner_api.delivery import retention
from partner_api.models import Delivery, Event, IdempotencyKey, Subscription
from partner_api.web import idempotency

from .conftest import GOOD_URL, WEBHOOKS, assert_problem, bearer, count, created

KEY = "4f1c2d9e-7b1a-4c55-9a7e-2f0d3c1b8e6a"
DAY = 24 * 3600


def create(client, token, key=KEY, **body):
    body.setdefault("url", GOOD_URL)
    headers = bearer(token) | ({} if key is None else {"Idempotency-Key": key})
    return client.post(WEBHOOKS, json=body, headers=headers)


def ping(client, token, subscription, key=KEY, secret=None):
    headers = bearer(token) | ({} if key is None else {"Idempotency-Key": key})
    body = {"secret": secret or subscription["secret"]}
    return client.post(f"{WEBHOOKS}/{subscription['id']}/test", json=body, headers=headers)


def things():
    """What the work makes: subscriptions, events, deliveries, stored keys."""
    return tuple(count(model) for model in (Subscription, Event, Delivery, IdempotencyKey))


@pytest.fixture
def token(make_key):
    return make_key().token


def test_a_retried_create_answers_the_first_answer_and_creates_one_subscription(
    client, token, clock
):
    first = create(client, token, description="orders")
    assert first.status_code == 201, first.get_data(as_text=True)
    clock.advance(3600)
    again = create(client, token, description="orders")
    assert again.status_code == 201
    assert again.get_json() == first.get_json()  # the secret included
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Cache-Control"] == "no-store"
    assert again.headers["X-RateLimit-Limit"] == "600"
    assert count(Subscription) == 1
    # Key order and spacing of the body do not make another request.
    same = client.post(
        WEBHOOKS,
        data=json.dumps({"url": GOOD_URL, "description": "orders"}, indent=3),
        content_type="application/json",
        headers=bearer(token) | {"Idempotency-Key": KEY},
    )
    assert same.status_code == 201 and same.get_json() == first.get_json()
    assert count(Subscription) == 1


def test_a_retried_test_ping_answers_the_first_answer_and_publishes_once(client, token):
    subscription = created(client, token)
    first = ping(client, token, subscription)
    assert first.status_code == 202, first.get_data(as_text=True)
    again = ping(client, token, subscription)
    assert again.status_code == 202 and again.get_json() == first.get_json()
    assert count(Event) == 1 and count(Delivery) == 1


def test_without_a_key_every_request_does_the_work(client, token):
    create(client, token, key=None)
    create(client, token, key=None)
    assert count(Subscription) == 2 and count(IdempotencyKey) == 0


def test_the_same_key_with_another_body_is_refused_and_nothing_changes(client, token):
    subscription = create(client, token).get_json()
    ping(client, token, subscription, key="ping-1")
    before = things()
    response = create(client, token, description="another")
    body = assert_problem(response, 422, "idempotency_key_reused")
    assert body["errors"] == [
        {"location": "headers", "field": "Idempotency-Key", "message": body["detail"]}
    ]
    other = created(client, token)
    response = ping(client, token, other, key="ping-1")  # another subscription's path
    assert_problem(response, 422, "idempotency_key_reused")
    assert things()[1:] == before[1:] and things()[0] == before[0] + 1  # `other` only


@pytest.mark.parametrize(
    "key",
    [
        "",
        " ",
        " leading-space",
        "trailing-space ",
        "x" * 256,
        "tab\tinside",
        "caf\u00e9",
        "del\x7f",
    ],
)
def test_a_malformed_key_is_refused_and_nothing_changes(client, token, key):
    subscription = created(client, token)
    before = things()
    body = assert_problem(create(client, token, key=key), 422, "invalid_idempotency_key")
    assert body["errors"][0]["field"] == "Idempotency-Key"
    assert_problem(ping(client, token, subscription, key=key), 422, "invalid_idempotency_key")
    assert things() == before


def test_the_longest_and_the_shortest_keys_are_accepted(client, token):
    for key in ("k", "~" * 255, "a key with spaces inside"):
        assert create(client, token, key=key).status_code == 201
    assert count(IdempotencyKey) == 3


def test_keys_are_per_org_and_per_operation(client, token, make_key):
    mine = create(client, token).get_json()
    theirs = create(client, make_key(org_name="Other").token)
    assert theirs.status_code == 201 and theirs.get_json()["id"] != mine["id"]
    # The same key on the test ping is another key: it publishes.
    assert ping(client, token, mine).status_code == 202
    assert count(Subscription) == 2 and count(Event) == 1 and count(IdempotencyKey) == 3


def test_a_refused_request_is_not_remembered_so_the_key_can_be_retried(client, token):
    subscription = created(client, token)
    refused = ping(client, token, subscription, secret="whsec_wrong")
    assert_problem(refused, 403, "secret_mismatch")
    assert count(IdempotencyKey) == 0
    assert ping(client, token, subscription).status_code == 202
    assert count(Event) == 1


def test_a_refusal_by_scope_or_body_comes_before_the_key(client, make_key):
    read_only = make_key(scopes=("identity:read",)).token
    assert_problem(create(client, read_only), 403, "insufficient_scope")
    token = make_key().token
    assert_problem(create(client, token, url="nope"), 422, "invalid_url")
    assert things() == (0, 0, 0, 0)


def test_after_24_hours_the_key_is_forgotten_and_pruned(client, token, clock):
    first = create(client, token)
    clock.advance(DAY - 1)
    assert create(client, token).get_json() == first.get_json()
    clock.advance(2)
    again = create(client, token)  # a day and a second later: the work happens again
    assert again.status_code == 201 and again.get_json()["id"] != first.get_json()["id"]
    assert count(Subscription) == 2 and count(IdempotencyKey) == 1
    clock.advance(DAY - 1)
    assert create(client, token, description="changed").status_code == 422  # still the new one
    clock.advance(2)
    with database.connection_context():
        assert retention.prune(30)["idempotency_keys"] == 1
    assert count(IdempotencyKey) == 0 and count(Subscription) == 2


def test_the_prune_keeps_keys_younger_than_a_day(client, token, clock):
    create(client, token)
    clock.advance(DAY - 1)
    with database.connection_context():
        assert retention.prune(30)["idempotency_keys"] == 0
    assert count(IdempotencyKey) == 1


def run_together(how_many, request):
    """`request()` from `how_many` threads released at once; their answers."""
    barrier = threading.Barrier(how_many)
    answers = [None] * how_many

    def run(index):
        barrier.wait()
        answers[index] = request()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(how_many)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_racing_creates_with_one_key_create_one_subscription(make_app, token):
    # Caps out of reach: at the shipped ones (1 lookup per org) some of these would be refused
    # at once with 429 dns_lookups_in_flight (tests/test_lookup_leases.py), before this race.
    app = make_app(dns_lookups_per_org=100, dns_lookups_total=100)

    def request():
        response = create(app.test_client(), token)
        return response.status_code, response.get_json()

    answers = run_together(6, request)
    assert {status for status, _ in answers} == {201}
    assert len({body["id"] for _, body in answers}) == 1
    assert count(Subscription) == 1 and count(IdempotencyKey) == 1


def test_racing_test_pings_with_one_key_publish_one_event(app, client, token):
    subscription = created(client, token)

    def request():
        response = ping(app.test_client(), token, subscription)
        return response.status_code, response.get_json()

    answers = run_together(6, request)
    assert {status for status, _ in answers} == {202}
    assert len({body["event_id"] for _, body in answers}) == 1
    assert count(Event) == 1 and count(Delivery) == 1


def test_a_request_that_loses_the_race_after_its_lookup_rolls_back_and_answers_the_winner(
    client, token, monkeypatch
):
    """The window the races above may not hit every run: the other request commits between
    this one's lookup and its own commit. This one's subscription is rolled back."""
    looked_up = idempotency_keys.stored_answer
    winner = {"id": "wh_winner", "secret": "whsec_winner"}

    def other_request_commits_first(keyed):
        monkeypatch.setattr(idempotency.idempotency_keys, "stored_answer", looked_up)
        with database.atomic():
            answer = idempotency_keys.StoredAnswer(201, winner, {"Location": "/elsewhere"})
            idempotency_keys.record_answer(keyed, answer)
        return None

    monkeypatch.setattr(idempotency.idempotency_keys, "stored_answer", other_request_commits_first)
    response = create(client, token)
    assert response.status_code == 201
    assert response.get_json() == winner and response.headers["Location"] == "/elsewhere"
    assert count(Subscription) == 0 and count(IdempotencyKey) == 1
