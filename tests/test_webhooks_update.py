"""GET and PATCH /webhooks/{id}: read one subscription; change its URL, events or description;
pause and resume it. Every refusal changes nothing, and the row lock keeps a PATCH racing a
DELETE or a publish from breaking the lifecycle's rules."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import threading

import pytest
from playhouse.shortcuts import model_to_dict

from partner_api import clock as clock_module
from partner_api.db import database
from partner_api.delivery import lifecycle
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import update_subscription
from partner_api.errors import DomainError
from partner_api.models import Delivery, Subscription

from .conftest import (
    SUBSCRIPTION_FIELDS,
    WEBHOOKS,
    assert_problem,
    bearer,
    created,
)

PAUSED = "paused by the partner"
OTHER_URL = "https://other.example.com/receiver"


def patch(client, token, subscription_id, body):
    return client.patch(f"{WEBHOOKS}/{subscription_id}", json=body, headers=bearer(token))


def stored(subscription_id) -> dict:
    """The subscription row as stored now, every column."""
    with database.connection_context():
        return model_to_dict(Subscription.get_by_id(subscription_id), recurse=False)


def delivery_states(subscription_id) -> list[tuple]:
    with database.connection_context():
        return sorted(
            (d.id, d.status, d.next_attempt_at, d.lease_token)
            for d in Delivery.select().where(Delivery.subscription == subscription_id)
        )


def publish(subscription_id) -> str:
    """A ping to this subscription, queued now; returns the delivery id."""
    with database.connection_context():
        org_id = Subscription.get_by_id(subscription_id).org_id
        _, [delivery] = publish_event(
            org_id, "vc.test.ping", {"n": 1}, subscription_id=subscription_id
        )
    return delivery.id


def statuses(subscription_id) -> dict[str, str]:
    with database.connection_context():
        return {
            d.id: d.status
            for d in Delivery.select().where(Delivery.subscription == subscription_id)
        }


def auto_disable(subscription_id, failures=20):
    """The state an auto-disable leaves after a failure streak (reached for real only through
    that many attempts), written through the lifecycle as the dispatcher would."""
    with database.connection_context(), database.atomic():
        subscription = Subscription.get_by_id(subscription_id)
        Subscription.update(consecutive_failures=failures, failing_since=clock_module.now()).where(
            Subscription.id == subscription_id
        ).execute()
        lifecycle.disable(subscription, lifecycle.AUTO_DISABLE_REASON.format(count=failures))


# --- GET /webhooks/{id} ---------------------------------------------------------------------------


def test_get_shows_the_subscription_as_the_list_does_and_never_its_secret(client, make_key):
    token = make_key().token
    made = created(client, token, description="Production receiver")
    created(client, token)  # another one, not shown
    response = client.get(f"{WEBHOOKS}/{made['id']}", headers=bearer(token))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == SUBSCRIPTION_FIELDS
    listed = client.get(WEBHOOKS, headers=bearer(token)).get_json()["data"]
    assert body == next(item for item in listed if item["id"] == made["id"])
    assert body == {key: value for key, value in made.items() if key != "secret"}
    assert made["secret"] not in response.get_data(as_text=True)
    assert response.headers["X-RateLimit-Limit"] == "600"


@pytest.mark.parametrize("which", ["malformed", "unknown", "other org's", "deleted"])
def test_get_and_patch_of_an_id_not_the_callers_is_404_and_change_nothing(client, make_key, which):
    token = make_key().token
    mine = created(client, token)
    theirs = created(client, make_key(org_name="Other").token)
    gone = created(client, token)
    assert client.delete(f"{WEBHOOKS}/{gone['id']}", headers=bearer(token)).status_code == 204
    target = {
        "malformed": "wh_nope",
        "unknown": "wh_" + "a" * 26,
        "other org's": theirs["id"],
        "deleted": gone["id"],
    }[which]
    before = {sub["id"]: stored(sub["id"]) for sub in (mine, theirs, gone)}

    assert_problem(
        client.get(f"{WEBHOOKS}/{target}", headers=bearer(token)), 404, "subscription_not_found"
    )
    for body in ({"description": "mine now"}, {"status": "disabled"}, {"url": OTHER_URL}):
        assert_problem(patch(client, token, target, body), 404, "subscription_not_found")
    assert {sub["id"]: stored(sub["id"]) for sub in (mine, theirs, gone)} == before


def test_patch_of_an_unknown_id_answers_404_without_resolving_the_new_url(make_app, make_key):
    looked_up = []

    def resolver(host, port):
        looked_up.append(host)
        return ["93.184.216.34"]

    client = make_app(resolver=resolver).test_client()
    token = make_key().token
    response = patch(client, token, "wh_" + "a" * 26, {"url": OTHER_URL})
    assert_problem(response, 404, "subscription_not_found")
    assert looked_up == []


# --- PATCH: changing url, events, description -----------------------------------------------------


def test_patch_changes_url_events_and_description_and_keeps_id_and_secret(client, make_key, clock):
    token = make_key().token
    made = created(client, token, events=["*"], description="old")
    before = stored(made["id"])
    clock.advance(60)
    response = patch(
        client,
        token,
        made["id"],
        {"url": "HTTPS://Other.Example.COM:443", "events": ["vc.test.ping"], "description": "new"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == SUBSCRIPTION_FIELDS
    assert body["id"] == made["id"] and body["created_at"] == made["created_at"]
    assert body["url"] == "https://other.example.com/"  # normalised as on create
    assert body["events"] == ["vc.test.ping"] and body["description"] == "new"
    assert body["status"] == "enabled"
    assert "secret" not in body
    after = stored(made["id"])
    assert after["secret"] == before["secret"] == made["secret"]
    changed = {key for key in after if after[key] != before[key]}
    assert changed == {"url", "events", "description"}
    assert client.get(f"{WEBHOOKS}/{made['id']}", headers=bearer(token)).get_json() == body


def test_patch_of_one_field_leaves_the_others_as_they_are(client, make_key):
    token = make_key().token
    made = created(client, token, events=["vc.test.ping"], description="kept")
    before = stored(made["id"])
    response = patch(client, token, made["id"], {"description": ""})
    assert response.status_code == 200
    after = stored(made["id"])
    assert after == dict(before, description="")


def test_patched_events_follow_the_create_rules(client, make_key):
    token = make_key().token
    made = created(client, token, events=["vc.test.ping"])
    every = patch(client, token, made["id"], {"events": ["*", "*"]})
    assert every.get_json()["events"] == ["*"]
    named = patch(client, token, made["id"], {"events": ["vc.test.ping", "vc.test.ping"]})
    assert named.get_json()["events"] == ["vc.test.ping"]


def test_pending_deliveries_go_to_the_new_url(client, make_key):
    token = make_key().token
    made = created(client, token)
    pending = publish(made["id"])
    assert patch(client, token, made["id"], {"url": OTHER_URL}).status_code == 200
    with database.connection_context():
        delivery = Delivery.get_by_id(pending)
        assert delivery.status == "pending" and delivery.subscription.url == OTHER_URL


# --- PATCH: refusals, each changing nothing -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": None}, "url"),
        ({"events": None}, "events"),
        ({"description": None}, "description"),
        ({"status": None}, "status"),
        ({"status": "paused"}, "status"),
        ({"status": "ENABLED"}, "status"),
        ({"url": 42}, "url"),
        ({"events": []}, "events"),
        ({"events": "vc.test.ping"}, "events"),
        ({"events": [7]}, "events.0"),
        ({"description": "x" * 501}, "description"),
        ({"description": "bell\x07"}, "description"),
        ({"secret": "whsec_mine"}, "secret"),
        ({"id": "wh_" + "b" * 26}, "id"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"description": "fine", "disabled_reason": "x"}, "disabled_reason"),
    ],
)
def test_invalid_patch_body_is_422_validation_error_and_changes_nothing(
    client, make_key, body, field
):
    token = make_key().token
    made = created(client, token, description="before")
    before = stored(made["id"])
    problem = assert_problem(patch(client, token, made["id"], body), 422, "validation_error")
    assert field in [error["field"] for error in problem["errors"]]
    assert all(error["location"] == "json" for error in problem["errors"])
    assert stored(made["id"]) == before


@pytest.mark.parametrize("raw", ["{}", ""], ids=["empty-object", "no-body"])
def test_a_patch_naming_no_field_is_422_no_fields_and_changes_nothing(client, make_key, raw):
    token = make_key().token
    made = created(client, token)
    before = stored(made["id"])
    response = client.patch(
        f"{WEBHOOKS}/{made['id']}",
        data=raw,
        headers=bearer(token),
        content_type="application/json",
    )
    problem = assert_problem(response, 422, "no_fields")
    assert "url, events, description, status" in problem["detail"]
    assert stored(made["id"]) == before


@pytest.mark.parametrize("body", [[{"description": "x"}], "x", 7, None])
def test_a_patch_body_that_is_not_an_object_is_422_and_changes_nothing(client, make_key, body):
    token = make_key().token
    made = created(client, token)
    before = stored(made["id"])
    response = client.patch(
        f"{WEBHOOKS}/{made['id']}",
        data=json.dumps(body),
        headers=bearer(token),
        content_type="application/json",
    )
    assert response.status_code == 422
    assert response.get_json()["code"] in ("validation_error", "no_fields")
    assert stored(made["id"]) == before


def test_broken_or_non_json_patch_body_is_refused_and_changes_nothing(client, make_key):
    token = make_key().token
    made = created(client, token)
    before = stored(made["id"])
    url = f"{WEBHOOKS}/{made['id']}"
    broken = client.patch(
        url, data='{"url": ', headers=bearer(token), content_type="application/json"
    )
    assert_problem(broken, 400, "invalid_json")
    form = client.patch(url, data={"description": "x"}, headers=bearer(token))
    assert_problem(form, 415, "unsupported_media_type")
    assert stored(made["id"]) == before


@pytest.mark.parametrize(
    ("events", "code"),
    [
        (["vc.test.ping", "vc.lead.created"], "unknown_event_type"),
        (["*", "vc.test.ping"], "event_types_with_wildcard"),
    ],
)
def test_patched_events_outside_the_catalogue_are_422_and_change_nothing(
    client, make_key, events, code
):
    token = make_key().token
    made = created(client, token)
    before = stored(made["id"])
    # A valid pause and description beside them are not applied either.
    body = {"events": events, "status": "disabled", "description": "new"}
    problem = assert_problem(patch(client, token, made["id"], body), 422, code)
    assert problem["errors"][0]["field"] == "events"
    assert stored(made["id"]) == before


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/partner-api", "url_scheme_not_allowed"),
        ("ftp://hooks.example.com/partner-api", "url_scheme_not_allowed"),
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
def test_a_patched_url_gets_the_create_time_checks_and_a_refusal_changes_nothing(
    strict_client, make_key, url, code
):
    token = make_key().token
    made = created(strict_client, token)
    before = stored(made["id"])
    body = {"url": url, "description": "new", "status": "disabled"}
    problem = assert_problem(patch(strict_client, token, made["id"], body), 422, code)
    assert problem["errors"] == [{"location": "json", "field": "url", "message": problem["detail"]}]
    assert "10.0.0.5" not in json.dumps(problem)
    assert stored(made["id"]) == before


def test_a_patched_url_does_not_wait_on_a_hanging_dns_server(make_app, make_key, client):
    release = threading.Event()

    def hanging(host, port):
        if host == "slow.example.com":
            release.wait(10)
        return ["93.184.216.34"]

    slow_client = make_app(resolver=hanging, create_dns_timeout=0.2).test_client()
    token = make_key().token
    made = created(slow_client, token)
    before = stored(made["id"])
    try:
        response = patch(slow_client, token, made["id"], {"url": "https://slow.example.com/"})
    finally:
        release.set()
    assert_problem(response, 422, "host_unresolvable")
    assert stored(made["id"]) == before


# --- PATCH: pausing and resuming ------------------------------------------------------------------


def test_pausing_holds_pending_and_new_deliveries_and_says_the_partner_paused_it(
    client, make_key, clock
):
    org, _, token = make_key()
    made = created(client, token)
    pending = publish(made["id"])
    response = patch(client, token, made["id"], {"status": "disabled"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "disabled" and body["disabled_reason"] == PAUSED
    assert body["disabled_at"] == clock_module.isoformat(clock.current)
    later = publish(made["id"])
    assert statuses(made["id"]) == {pending: "held", later: "held"}
    # Pausing again keeps the first pause's time.
    clock.advance(60)
    again = patch(client, token, made["id"], {"status": "disabled"}).get_json()
    assert again == body


def test_resuming_a_paused_subscription_releases_its_held_deliveries(client, make_key, clock):
    org, _, token = make_key()
    made = created(client, token)
    patch(client, token, made["id"], {"status": "disabled"})
    held = publish(made["id"])
    clock.advance(300)
    response = patch(client, token, made["id"], {"status": "enabled"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "enabled"
    assert body["disabled_reason"] is None and body["disabled_at"] is None
    [(delivery_id, status, due, lease)] = delivery_states(made["id"])
    assert (delivery_id, status, due, lease) == (held, "pending", clock.current, None)


def test_resuming_an_auto_disabled_subscription_is_exactly_the_operators_enable(
    client, make_key, runner, clock
):
    org, _, token = make_key()
    by_partner = created(client, token)
    by_operator = created(client, token)
    for made in (by_partner, by_operator):
        publish(made["id"])
        auto_disable(made["id"])
        assert stored(made["id"])["status"] == "disabled"
    clock.advance(3600)

    assert patch(client, token, by_partner["id"], {"status": "enabled"}).status_code == 200
    result = runner.invoke(args=["webhooks", "enable", by_operator["id"]])
    assert result.exit_code == 0, result.output

    def state(subscription_id):
        row = stored(subscription_id)
        deliveries = [
            (status, due, lease) for _, status, due, lease in delivery_states(subscription_id)
        ]
        return {k: v for k, v in row.items() if k not in ("id", "secret", "created_at")}, deliveries

    assert state(by_partner["id"]) == state(by_operator["id"])
    row, deliveries = state(by_partner["id"])
    assert row["status"] == "enabled" and row["consecutive_failures"] == 0
    assert row["failing_since"] is None and row["disabled_reason"] is None
    assert deliveries == [("pending", clock.current, None)]


def test_pausing_an_auto_disabled_subscription_keeps_its_reason(client, make_key):
    token = make_key().token
    made = created(client, token)
    auto_disable(made["id"])
    before = stored(made["id"])
    response = patch(client, token, made["id"], {"status": "disabled"})
    assert response.status_code == 200
    assert response.get_json()["disabled_reason"] == before["disabled_reason"]
    assert stored(made["id"]) == before


def test_enabling_an_enabled_subscription_leaves_its_failure_streak(client, make_key, clock):
    token = make_key().token
    made = created(client, token)
    with database.connection_context():
        Subscription.update(consecutive_failures=3, failing_since=clock.current).where(
            Subscription.id == made["id"]
        ).execute()
    before = stored(made["id"])
    response = patch(client, token, made["id"], {"status": "enabled"})
    assert response.status_code == 200 and response.get_json()["consecutive_failures"] == 3
    assert stored(made["id"]) == before


def test_a_new_url_and_a_resume_apply_together(client, make_key):
    token = make_key().token
    made = created(client, token)
    auto_disable(made["id"])
    response = patch(client, token, made["id"], {"url": OTHER_URL, "status": "enabled"})
    assert response.status_code == 200
    row = stored(made["id"])
    assert (row["url"], row["status"], row["consecutive_failures"]) == (OTHER_URL, "enabled", 0)


# --- the operator sees the partner's actions ------------------------------------------------------


def test_a_pause_and_a_resume_show_in_webhooks_list(client, make_key, runner):
    token = make_key().token
    made = created(client, token)
    assert patch(client, token, made["id"], {"status": "disabled"}).status_code == 200

    result = runner.invoke(args=["webhooks", "list", "--json"])
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    assert (listed["status"], listed["disabled_reason"]) == ("disabled", PAUSED)
    text = runner.invoke(args=["webhooks", "list"]).stdout
    assert PAUSED in text and "disabled" in text

    assert patch(client, token, made["id"], {"status": "enabled"}).status_code == 200
    [listed] = json.loads(runner.invoke(args=["webhooks", "list", "--json"]).stdout)
    assert (listed["status"], listed["disabled_reason"]) == ("enabled", None)
    assert PAUSED not in runner.invoke(args=["webhooks", "list"]).stdout


# --- concurrency ----------------------------------------------------------------------------------


def race(*calls):
    """Run the calls in threads released together; returns their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(run, call) for call in calls]]


def patched(app, token, subscription_id, body) -> int:
    return patch(app.test_client(), token, subscription_id, body).status_code


def deleted(app, token, subscription_id) -> int:
    url = f"{WEBHOOKS}/{subscription_id}"
    return app.test_client().delete(url, headers=bearer(token)).status_code


def test_a_patch_racing_a_delete_ends_deleted_with_no_open_delivery(app, make_key):
    token = make_key().token
    for _ in range(5):
        sub_id = created(app.test_client(), token)["id"]
        publish(sub_id)
        publish(sub_id)
        patch_status, delete_status = race(
            functools.partial(
                patched, app, token, sub_id, {"status": "enabled", "description": "x"}
            ),
            functools.partial(deleted, app, token, sub_id),
        )
        assert delete_status == 204 and patch_status in (200, 404)
        assert stored(sub_id)["deleted_at"] is not None
        assert set(statuses(sub_id).values()) == {"cancelled"}
        late = patch(app.test_client(), token, sub_id, {"description": "late"})
        assert_problem(late, 404, "subscription_not_found")


def test_a_pause_or_resume_racing_a_publish_leaves_every_delivery_in_step(app, make_key):
    token = make_key().token
    for _ in range(5):
        sub_id = created(app.test_client(), token)["id"]
        publish(sub_id)
        for status, open_status in (("disabled", "held"), ("enabled", "pending")):
            answer, _ = race(
                functools.partial(patched, app, token, sub_id, {"status": status}),
                functools.partial(publish, sub_id),
            )
            assert answer == 200
            assert set(statuses(sub_id).values()) == {open_status}


# --- the work function, without HTTP ------------------------------------------------------------


def test_update_subscription_refuses_what_the_schema_lets_through_only_by_mistake(
    db, config, subscribe, make_key
):
    org = make_key().org
    subscription = subscribe(org.id)
    before = stored(subscription.id)
    with pytest.raises(DomainError) as refused:
        update_subscription(org.id, subscription.id, {}, config)
    assert refused.value.code == "no_fields"
    for changes in ({"secret": "whsec_x"}, {"status": "paused"}):
        with pytest.raises(ValueError):
            update_subscription(org.id, subscription.id, changes, config)
    with pytest.raises(ValueError):
        lifecycle.change_subscription(subscription, status="disabled")
    assert stored(subscription.id) == before


def test_update_subscription_changes_and_pauses_in_one_call(db, config, subscribe, make_key):
    org = make_key().org
    subscription = subscribe(org.id)
    changed = update_subscription(
        org.id,
        subscription.id,
        {"description": "paused for a deploy", "status": "disabled"},
        config,
    )
    assert (changed.description, changed.status) == ("paused for a deploy", "disabled")
    assert changed.disabled_reason == lifecycle.PARTNER_DISABLE_REASON
