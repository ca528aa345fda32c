"""Auto-disable after a streak that lasted: PARTNER_API_AUTO_DISABLE_AFTER consecutive failed
attempts AND PARTNER_API_AUTO_DISABLE_MIN_SECONDS since the streak's first failure (0: the
count alone). One success ends the streak. Outcomes are recorded through the lifecycle, the
clock is the test's."""

from __future__ import annotations

import dataclasses

import pytest

from dispatcher.transport import AttemptResult
from partner_api.config import Config, ConfigError
from partner_api.db import database
from partner_api.delivery import lifecycle
from partner_api.delivery.claims import claim_due_deliveries
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import create_subscription, enable_subscription
from partner_api.models import Delivery, Subscription
from partner_api.web.openapi import auto_disable_terms

FAILED = AttemptResult(False, 500, "http_status", "Receiver answered HTTP 500", None, 5)
OK = AttemptResult(True, 200, None, None, None, 5)


@pytest.fixture
def subscription(make_key, config, db):
    org = make_key().org
    sub, _ = create_subscription(org.id, "http://receiver.test:9/hook", None, "", config)
    return sub


def fail(subscription, config, times: int, result=FAILED) -> list[str]:
    """Publish `times` events and record a failed (or given) attempt of each."""
    for n in range(times):
        publish_event(subscription.org_id, "vc.test.ping", {"n": n})
    claims = claim_due_deliveries(times, 60)
    assert len(claims) == times
    return lifecycle.record_outcomes([(claim, result) for claim in claims], config)


def row(subscription) -> Subscription:
    return Subscription.get_by_id(subscription.id)


def test_a_burst_of_failures_during_a_short_outage_does_not_disable(subscription, config, clock):
    config = dataclasses.replace(config, auto_disable_after=20, auto_disable_min_seconds=3600)
    fail(subscription, config, 25)
    sub = row(subscription)
    assert sub.status == "enabled" and sub.consecutive_failures == 25
    assert sub.failing_since == clock.current
    clock.advance(3599)
    fail(subscription, config, 1)
    assert row(subscription).status == "enabled"


def test_a_streak_that_lasted_disables_and_holds(subscription, config, clock):
    config = dataclasses.replace(config, auto_disable_after=20, auto_disable_min_seconds=3600)
    started = clock.current
    fail(subscription, config, 20)
    clock.advance(3600)
    steps = fail(subscription, config, 1)
    sub = row(subscription)
    assert sub.status == "disabled" and sub.consecutive_failures == 21
    assert sub.failing_since == started and sub.disabled_at == clock.current
    assert "21 consecutive failed" in sub.disabled_reason
    assert steps[0].startswith("retry_at:")
    assert {d.status for d in Delivery.select()} == {"held"}


def test_the_count_alone_disables_when_the_minimum_is_zero(subscription, config, clock):
    config = dataclasses.replace(config, auto_disable_after=3, auto_disable_min_seconds=0)
    fail(subscription, config, 2)
    assert row(subscription).status == "enabled"
    fail(subscription, config, 1)
    assert row(subscription).status == "disabled"


def test_the_time_alone_does_not_disable(subscription, config, clock):
    config = dataclasses.replace(config, auto_disable_after=20, auto_disable_min_seconds=60)
    fail(subscription, config, 1)
    clock.advance(86400)
    fail(subscription, config, 1)
    assert row(subscription).status == "enabled"
    assert row(subscription).consecutive_failures == 2


def test_one_success_ends_the_streak_and_its_start(subscription, config, clock):
    config = dataclasses.replace(config, auto_disable_after=20, auto_disable_min_seconds=60)
    fail(subscription, config, 5)
    clock.advance(120)
    fail(subscription, config, 1, OK)
    sub = row(subscription)
    assert sub.consecutive_failures == 0 and sub.failing_since is None
    clock.advance(10)
    fail(subscription, config, 1)
    assert row(subscription).failing_since == clock.current  # a new streak starts now


def test_enable_starts_afresh(subscription, config, clock):
    config = dataclasses.replace(config, auto_disable_after=2, auto_disable_min_seconds=0)
    fail(subscription, config, 2)
    assert row(subscription).status == "disabled"
    enable_subscription(subscription.id)
    sub = row(subscription)
    assert sub.status == "enabled" and sub.consecutive_failures == 0
    assert sub.failing_since is None


def test_the_partner_sees_the_streak_and_its_start(subscription, config, clock, client, make_key):
    fail(subscription, config, 2)
    database.close()
    key = make_key(org=subscription.org)
    listed = client.get(
        "/api/v1/partner/webhooks", headers={"Authorization": f"Bearer {key.token}"}
    ).get_json()["data"][0]
    assert listed["consecutive_failures"] == 2
    assert listed["failing_since"] == "2026-11-27T12:00:30.000Z"


def test_the_minimum_is_read_from_the_environment():
    assert Config.from_env({}).auto_disable_min_seconds == 3600
    env = {"PARTNER_API_AUTO_DISABLE_MIN_SECONDS": "0"}
    assert Config.from_env(env).auto_disable_min_seconds == 0


@pytest.mark.parametrize("value", ["-1", "1.5", "soon", "99999999999"])
def test_a_bad_minimum_stops_the_start_naming_the_variable(value):
    with pytest.raises(ConfigError, match="PARTNER_API_AUTO_DISABLE_MIN_SECONDS"):
        Config.from_env({"PARTNER_API_AUTO_DISABLE_MIN_SECONDS": value})


def test_the_docs_state_the_rule_with_the_running_numbers(app, client):
    assert auto_disable_terms(Config()) == (
        "A subscription is disabled after 20 consecutive failed attempts once that streak "
        "has lasted 1h since its first failure; one successful attempt ends the streak. Its "
        "deliveries are then held until it is enabled again."
    )
    count_alone = auto_disable_terms(Config(auto_disable_after=5, auto_disable_min_seconds=0))
    assert count_alone.startswith("A subscription is disabled after 5 consecutive failed attempts;")
    document = client.get("/api/v1/partner/openapi.json").get_json()
    assert auto_disable_terms(app.config["PARTNER_API"]) in str(document["webhooks"])
