"""The delivery pipeline in-process: signing, retries, dead-letter, auto-disable, SSRF at delivery.

Real local receivers, real database (SQLite and PostgreSQL), a fake clock: no test waits for a
retry interval.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import threading

import pytest

from dispatcher.dispatch import Dispatcher
from harness.net import wait_for
from harness.receivers import Receiver, SilentReceiver
from partner_api import clock as clock_module
from partner_api import provisioning
from partner_api.db import database
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.shares import SharePolicy, Subscriber
from partner_api.delivery.subscriptions import delete_subscription, disable_subscription
from partner_api.models import Delivery, DeliveryFailure, Subscription

from .conftest import bearer, delivery_row, failure_audit

HOOKS = "/api/v1/partner/webhooks"
SCHEDULE = (60, 300, 1800, 7200, 21600, 86400)


@pytest.fixture
def partner(client, make_key):
    """(org, token) of a partner allowed to manage webhooks."""
    org, _, token = make_key()
    return org, token


@pytest.fixture
def dispatcher_factory(config):
    made = []

    def make(**overrides):
        dispatcher = Dispatcher(dataclasses.replace(config, **overrides))
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


def ping(client, token, subscription):
    response = client.post(
        f"{HOOKS}/{subscription.id}/test",
        json={"secret": subscription.secret},
        headers=bearer(token),
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()


delivery = delivery_row


def subscription_row(subscription_id) -> Subscription:
    with database.connection_context():
        return Subscription.get_by_id(subscription_id)


failures = failure_audit


def independent_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def test_ping_is_delivered_signed_with_the_documented_envelope(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver() as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        sent = ping(client, token, sub)
        assert dispatcher_factory().run_until_idle() == 1
    [request] = receiver.requests
    headers, body = request["headers"], request["body"]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("PartnerAPI-Webhooks/")
    assert headers["Host"] == f"receiver.test:{receiver.port}"
    assert headers["X-VC-Timestamp"] == str(clock_module.unix(clock.current))
    assert headers["X-VC-Signature"] == independent_signature(
        sub.secret, headers["X-VC-Timestamp"], body
    )
    envelope = json.loads(body)
    assert set(envelope) == {"event", "id", "subscription_id", "occurred_at", "data"}
    assert envelope["event"] == "vc.test.ping"
    assert envelope["id"] == sent["event_id"]
    assert envelope["subscription_id"] == sub.id
    assert envelope["occurred_at"] == clock_module.isoformat(clock.current)
    assert dt.datetime.fromisoformat(envelope["occurred_at"]).tzinfo is not None
    row = delivery(sent["delivery_id"])
    assert row.status == "delivered" and row.attempts == 1 and row.lease_token is None


def test_retry_has_fresh_timestamp_same_body_and_event_id(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver([(500, {}, b"down"), (200, {}, b"ok")]) as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        sent = ping(client, token, sub)
        dispatcher = dispatcher_factory()
        dispatcher.run_until_idle()
        clock.advance(60)
        dispatcher.run_until_idle()
    first, second = receiver.requests
    assert first["body"] == second["body"]
    assert json.loads(second["body"])["id"] == sent["event_id"]
    assert int(second["headers"]["X-VC-Timestamp"]) == int(first["headers"]["X-VC-Timestamp"]) + 60
    for request in (first, second):
        assert request["headers"]["X-VC-Signature"] == independent_signature(
            sub.secret, request["headers"]["X-VC-Timestamp"], request["body"]
        )
    assert delivery(sent["delivery_id"]).status == "delivered"


def test_schedule_is_followed_exactly_and_seventh_failure_dead_letters(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver([(503, {}, b"unavailable")]) as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        sent = ping(client, token, sub)
        dispatcher = dispatcher_factory()
        assert dispatcher.run_until_idle() == 1
        for attempt, wait in enumerate(SCHEDULE, start=1):
            row = delivery(sent["delivery_id"])
            assert row.status == "pending" and row.attempts == attempt
            assert row.next_attempt_at == clock.current + dt.timedelta(seconds=wait)
            clock.advance(wait - 1)
            assert dispatcher.run_until_idle() == 0, f"sent early before attempt {attempt + 1}"
            clock.advance(1)
            assert dispatcher.run_until_idle() == 1
        assert len(receiver.requests) == 7
        clock.advance(10 * 86400)
        assert dispatcher.run_until_idle() == 0
    row = delivery(sent["delivery_id"])
    assert row.status == "dead_lettered" and row.attempts == 7
    audit = failures(sent["delivery_id"])
    assert [f.attempt for f in audit] == [1, 2, 3, 4, 5, 6, 7]
    assert [bool(f.dead_lettered) for f in audit] == [False] * 6 + [True]
    assert audit[-1].next_attempt_at is None
    assert all(f.error_kind == "http_status" and f.response_status == 503 for f in audit)
    assert audit[0].response_excerpt == "unavailable"


def test_custom_schedule_sets_the_number_of_attempts(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver([(500, {}, b"")]) as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        sent = ping(client, token, sub)
        dispatcher = dispatcher_factory(retry_schedule=(5,))
        dispatcher.run_until_idle()
        clock.advance(5)
        dispatcher.run_until_idle()
    assert delivery(sent["delivery_id"]).status == "dead_lettered"
    assert len(receiver.requests) == 2


def test_twenty_consecutive_failures_disable_and_enable_resumes_held_deliveries(
    subscribe, client, partner, clock, dispatcher_factory, runner
):
    org, token = partner
    with Receiver([(500, {}, b"")] * 20 + [(200, {}, b"")]) as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        with database.connection_context():
            ids = [publish_event(org.id, "vc.test.ping", {"n": n})[1][0].id for n in range(20)]
        dispatcher = dispatcher_factory(auto_disable_min_seconds=0)  # the count alone
        dispatcher.run_until_idle()
        assert len(receiver.requests) == 20
        row = subscription_row(sub.id)
        assert row.status == "disabled" and row.consecutive_failures == 20
        assert "20 consecutive failed" in row.disabled_reason
        assert row.disabled_at == clock.current
        assert {delivery(i).status for i in ids} == {"held"}
        listed = client.get(HOOKS, headers=bearer(token)).get_json()["data"][0]
        assert listed["status"] == "disabled" and listed["disabled_reason"] == row.disabled_reason
        assert listed["disabled_at"] == clock_module.isoformat(clock.current)
        response = client.post(
            f"{HOOKS}/{sub.id}/test", json={"secret": sub.secret}, headers=bearer(token)
        )
        assert response.status_code == 409
        assert response.get_json()["code"] == "subscription_disabled"
        clock.advance(86400)
        assert dispatcher.run_until_idle() == 0
        assert len(receiver.requests) == 20

        result = runner.invoke(args=["webhooks", "enable", sub.id])
        assert result.exit_code == 0, result.output
        assert dispatcher.run_until_idle() == 20
    assert {delivery(i).status for i in ids} == {"delivered"}
    row = subscription_row(sub.id)
    assert row.status == "enabled" and row.consecutive_failures == 0
    assert row.disabled_reason is None


def test_enable_unknown_subscription_fails_cleanly(runner):
    result = runner.invoke(args=["webhooks", "enable", "wh_missing"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "error: No webhook subscription with id 'wh_missing'."


def test_a_success_resets_the_consecutive_failure_count(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver([(500, {}, b"")] * 3 + [(200, {}, b"")]) as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        with database.connection_context():
            for n in range(3):
                publish_event(org.id, "vc.test.ping", {"n": n})
        dispatcher = dispatcher_factory(dispatch_workers=1)
        dispatcher.run_until_idle()
        assert subscription_row(sub.id).consecutive_failures == 3
        clock.advance(60)
        dispatcher.run_until_idle()
    assert subscription_row(sub.id).consecutive_failures == 0


def test_redirect_is_a_failure_and_is_not_followed(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver() as target:
        redirect = [(302, {"Location": target.url("other.test")}, b"")]
        with Receiver(redirect) as receiver:
            sub = subscribe(org.id, receiver.url("receiver.test"))
            sent = ping(client, token, sub)
            dispatcher_factory().run_until_idle()
    assert target.requests == []
    [failure] = failures(sent["delivery_id"])
    assert failure.error_kind == "redirect" and failure.response_status == 302


def test_name_rebound_to_a_private_address_is_blocked_at_delivery(
    subscribe, client, partner, clock, config, resolver, dispatcher_factory
):
    org, token = partner
    resolver.table["rebind.test"] = ["93.184.216.34"]
    with Receiver() as private_listener:
        sub = subscribe(org.id, private_listener.url("rebind.test"))
        sent = ping(client, token, sub)
        resolver.table["rebind.test"] = ["127.0.0.1"]
        dispatcher_factory(webhook_allow_cidrs=()).run_until_idle()
    assert private_listener.connections == 0 and private_listener.requests == []
    [failure] = failures(sent["delivery_id"])
    assert failure.error_kind == "address_blocked"
    # The audit the partner reads names the host, not what it now resolves to.
    assert "rebind.test" in failure.error_message and "127.0.0.1" not in failure.error_message
    assert delivery(sent["delivery_id"]).status == "pending"


def test_unresolvable_name_at_delivery_is_a_dns_error(
    subscribe, client, partner, clock, resolver, dispatcher_factory
):
    org, token = partner
    with Receiver() as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        sent = ping(client, token, sub)
        del resolver.table["receiver.test"]
        dispatcher_factory().run_until_idle()
    assert receiver.requests == []
    assert failures(sent["delivery_id"])[0].error_kind == "dns_error"


def test_deleted_subscription_receives_nothing_more(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver([(500, {}, b"")]) as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        sent = ping(client, token, sub)
        dispatcher = dispatcher_factory()
        dispatcher.run_until_idle()
        assert len(receiver.requests) == 1
        assert client.delete(f"{HOOKS}/{sub.id}", headers=bearer(token)).status_code == 204
        clock.advance(86400 * 2)
        assert dispatcher.run_until_idle() == 0
    assert len(receiver.requests) == 1
    assert delivery(sent["delivery_id"]).status == "cancelled"


def test_lease_lost_attempt_does_not_overwrite_the_new_owner(
    subscribe, client, partner, clock, dispatcher_factory
):
    from dispatcher.transport import AttemptResult
    from partner_api.delivery.claims import claim_due_deliveries
    from partner_api.delivery.lifecycle import record_outcomes

    org, token = partner
    sub = subscribe(org.id, "http://receiver.test:9/hook")
    sent = ping(client, token, sub)
    config = dispatcher_factory().config
    with database.connection_context():
        [stale] = claim_due_deliveries(10, config.lease_seconds)
        clock.advance(config.lease_seconds + 1)
        [fresh] = claim_due_deliveries(10, config.lease_seconds)
        assert fresh.id == stale.id and fresh.lease_token != stale.lease_token
        result = AttemptResult(False, 500, "http_status", "HTTP 500", None, 5)
        assert record_outcomes([(stale, result)], config) == ["lease_lost"]
        assert DeliveryFailure.select().count() == 0
        [step] = record_outcomes([(fresh, result)], config)
        assert step.startswith("retry_at:")
        assert DeliveryFailure.select().count() == 1
    assert delivery(sent["delivery_id"]).attempts == 1


def test_claim_takes_only_due_pending_deliveries_up_to_the_limit(
    subscribe, client, partner, clock, dispatcher_factory
):
    from partner_api.delivery.claims import claim_due_deliveries

    org, token = partner
    subscribe(org.id, "http://receiver.test:9/hook")
    with database.connection_context():
        for n in range(5):
            publish_event(org.id, "vc.test.ping", {"n": n})
        first = claim_due_deliveries(3, 60)
        second = claim_due_deliveries(10, 60)
        third = claim_due_deliveries(10, 60)
    assert len(first) == 3 and len(second) == 2 and third == []
    assert not {c.id for c in first} & {c.id for c in second}
    assert [c.attempt for c in first + second] == [1] * 5


def test_one_poll_keeps_draining_while_batches_are_full(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver() as receiver:
        for _ in range(7):
            subscribe(org.id, receiver.url("receiver.test"))
        with database.connection_context():
            publish_event(org.id, "vc.test.ping", {})
        dispatcher = dispatcher_factory(dispatch_batch_size=2, dispatch_workers=8)
        assert dispatcher.poll() == 7
        dispatcher.wait_in_flight()
    assert len(receiver.requests) == 7


def test_a_slow_subscription_with_a_backlog_gets_at_most_half_the_senders(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver(delay=2.0) as slow, Receiver() as fast:
        slow_sub = subscribe(org.id, slow.url("receiver.test"))
        fast_sub = subscribe(org.id, fast.url("other.test"))
        dispatcher = dispatcher_factory(dispatch_workers=4)
        with database.connection_context():  # one answer each: both are tried, neither fails
            for sub in (slow_sub, fast_sub):
                publish_event(org.id, "vc.test.ping", {}, subscription_id=sub.id)
        dispatcher.run_until_idle()
        slow.requests.clear()
        fast.requests.clear()
        with database.connection_context():
            for n in range(6):
                publish_event(org.id, "vc.test.ping", {"n": n}, subscription_id=slow_sub.id)
            for n in range(3):
                publish_event(org.id, "vc.test.ping", {"n": n}, subscription_id=fast_sub.id)
        poll = threading.Thread(target=dispatcher.run_until_idle)
        poll.start()
        started = clock_module.monotonic()
        while len(fast.requests) < 3 and clock_module.monotonic() - started < 1.8:
            fast.first_request.wait(0.02)
        assert len(fast.requests) == 3  # served while the slow receiver still sleeps
        while len(slow.requests) < 2 and clock_module.monotonic() - started < 1.8:
            slow.first_request.wait(0.02)
        assert len(slow.requests) == 2  # its share: half of the 4 senders (slow, not failing)
        poll.join(30)
        # The same poll went on with the backlog as the slow senders freed up.
        assert not poll.is_alive()
    assert len(slow.requests) == 6
    with database.connection_context():
        assert {d.status for d in Delivery.select()} == {"delivered"}


def test_a_slow_endpoint_does_not_hold_back_the_others(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver(delay=1.5) as slow, Receiver() as fast:
        slow_sub = subscribe(org.id, slow.url("receiver.test"))
        fast_sub = subscribe(org.id, fast.url("other.test"))
        dispatcher = dispatcher_factory(dispatch_workers=2)
        # The fast receiver has answered before: a healthy subscription. (Two untried ones
        # would share the one probe that 2 senders allow; see "How senders are shared".)
        with database.connection_context():
            publish_event(org.id, "vc.test.ping", {"n": -1}, subscription_id=fast_sub.id)
        dispatcher.run_until_idle()
        assert len(fast.requests) == 1
        with database.connection_context():
            publish_event(org.id, "vc.test.ping", {}, subscription_id=slow_sub.id)
            for n in range(5):
                publish_event(org.id, "vc.test.ping", {"n": n}, subscription_id=fast_sub.id)
        started = clock_module.monotonic()
        dispatcher.poll()
        # One sender is stuck on the slow receiver; the other serves the fast one meanwhile.
        while len(fast.requests) < 6 and clock_module.monotonic() - started < 1.2:
            dispatcher.poll()
            fast.first_request.wait(0.02)
        assert len(fast.requests) == 6
        assert len(slow.requests) == 1  # arrived, its answer still 1.5 s away
        dispatcher.run_until_idle()
    assert len(slow.requests) == 1


def test_events_published_while_disabled_are_held_then_sent_on_enable(
    subscribe, client, partner, clock, dispatcher_factory, runner
):
    org, token = partner
    with Receiver() as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        with database.connection_context():
            disable_subscription(sub.id, "test")
            [held] = publish_event(org.id, "vc.test.ping", {})[1]
        assert held.status == "held"
        dispatcher = dispatcher_factory()
        assert dispatcher.run_until_idle() == 0
        assert runner.invoke(args=["webhooks", "enable", sub.id]).exit_code == 0
        assert dispatcher.run_until_idle() == 1
    assert len(receiver.requests) == 1
    assert delivery(held.id).status == "delivered"


def test_disable_keeps_the_outcome_of_attempts_in_flight(
    subscribe, client, partner, clock, dispatcher_factory
):
    from dispatcher.transport import AttemptResult
    from partner_api.delivery.claims import claim_due_deliveries
    from partner_api.delivery.lifecycle import record_outcomes

    org, token = partner
    sub = subscribe(org.id, "http://receiver.test:9/hook")
    with database.connection_context():
        in_flight_id = publish_event(org.id, "vc.test.ping", {"n": 1})[1][0].id
        [in_flight] = claim_due_deliveries(10, 60)
        waiting_id = publish_event(org.id, "vc.test.ping", {"n": 2})[1][0].id
        # The subscription gets disabled (e.g. by another sender's 20th failure) meanwhile.
        disable_subscription(sub.id)
        ok = AttemptResult(True, 200, None, None, None, 5)
        assert record_outcomes([(in_flight, ok)], dispatcher_factory().config) == ["delivered"]
    assert delivery(in_flight_id).status == "delivered"
    assert delivery(waiting_id).status == "held"


def test_delivery_leased_by_a_dead_dispatcher_of_a_disabled_subscription_is_held(
    subscribe, client, partner, clock, dispatcher_factory
):
    from partner_api.delivery.claims import claim_due_deliveries

    org, token = partner
    sub = subscribe(org.id, "http://receiver.test:9/hook")
    with database.connection_context():
        delivery_id = publish_event(org.id, "vc.test.ping", {})[1][0].id
        claim_due_deliveries(10, 60)  # this dispatcher "dies" holding the lease
        disable_subscription(sub.id)
        clock.advance(61)
        assert claim_due_deliveries(10, 60) == []
    assert delivery(delivery_id).status == "held"


def test_binary_answer_with_nul_bytes_is_audited_not_looped(
    subscribe, client, partner, clock, dispatcher_factory
):
    org, token = partner
    with Receiver([(500, {}, b"oops\x00binary\xff")]) as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        sent = ping(client, token, sub)
        dispatcher_factory().run_until_idle()
    [failure] = failures(sent["delivery_id"])
    assert failure.response_excerpt == "oops\ufffdbinary\ufffd"
    row = delivery(sent["delivery_id"])
    assert row.attempts == 1
    assert row.next_attempt_at == clock.current + dt.timedelta(seconds=60)


def test_claim_gives_a_subscription_at_most_its_share_and_takes_the_oldest_first(
    subscribe, client, partner, clock, dispatcher_factory
):
    from partner_api.delivery.claims import claim_due_deliveries

    org, token = partner
    busy = subscribe(org.id, "http://receiver.test:9/busy")
    other = subscribe(org.id, "http://other.test:9/other")
    with database.connection_context():
        busy_ids = []
        for n in range(6):
            busy_ids.append(
                publish_event(org.id, "vc.test.ping", {"n": n}, subscription_id=busy.id)[1][0].id
            )
            clock.advance(1)
        other_ids = [
            publish_event(org.id, "vc.test.ping", {}, subscription_id=other.id)[1][0].id
            for _ in range(2)
        ]
        policy = SharePolicy(senders=6)  # a healthy subscription's share: 3
        tried = {sub.id: Subscriber(sub.id, org.id) for sub in (busy, other)}
        claims = claim_due_deliveries(4, 60, policy=policy, running={busy.id: 1}, known=tried)
    claimed = [c.id for c in claims]
    assert [i for i in claimed if i in busy_ids] == busy_ids[:2]  # oldest first, to the share
    assert {i for i in claimed if i not in busy_ids} == set(other_ids)
    with database.connection_context():
        more = claim_due_deliveries(4, 60, policy=policy, running={busy.id: 3}, known=tried)
    assert more == []


def test_claim_holds_rows_of_disabled_subscriptions_and_deleting_cancels_leased_ones(
    subscribe, client, partner, clock, dispatcher_factory
):
    from partner_api.delivery.claims import claim_due_deliveries

    org, token = partner
    disabled = subscribe(org.id, "http://receiver.test:9/a")
    deleted = subscribe(org.id, "http://receiver.test:9/b")
    enabled = subscribe(org.id, "http://receiver.test:9/c")
    with database.connection_context():
        stale = [
            publish_event(org.id, "vc.test.ping", {}, subscription_id=sub.id)[1][0].id
            for sub in (disabled, deleted)
        ]
        claim_due_deliveries(10, 60)  # a dispatcher leases both, then dies
        disable_subscription(disabled.id)
        delete_subscription(org.id, deleted.id)
        clock.advance(61)
        fresh = publish_event(org.id, "vc.test.ping", {}, subscription_id=enabled.id)[1][0].id
        claims = claim_due_deliveries(1, 60)
    assert [c.id for c in claims] == [fresh]
    assert [delivery(i).status for i in stale] == ["held", "cancelled"]


def test_the_documented_verification_recipe_accepts_a_real_delivery(
    subscribe, client, partner, clock, dispatcher_factory, monkeypatch
):
    import re
    import time

    from partner_api.config import ROOT

    docs = (ROOT / "docs" / "partners.md").read_text()
    [recipe] = [b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "def verify" in b]
    namespace: dict = {}
    exec(recipe, namespace)  # noqa: S102 (our own docs)
    org, token = partner
    with Receiver() as receiver:
        sub = subscribe(org.id, receiver.url("receiver.test"))
        ping(client, token, sub)
        dispatcher_factory().run_until_idle()
    [request] = receiver.requests
    timestamp, signature = (
        request["headers"]["X-VC-Timestamp"],
        request["headers"]["X-VC-Signature"],
    )
    monkeypatch.setattr(time, "time", lambda: int(timestamp) + 10)
    assert namespace["verify"](sub.secret, timestamp, signature, request["body"])
    assert not namespace["verify"](sub.secret, timestamp, signature, request["body"] + b" ")
    monkeypatch.setattr(time, "time", lambda: int(timestamp) + 301)
    assert not namespace["verify"](sub.secret, timestamp, signature, request["body"])


def test_claim_probes_untried_and_failing_subscriptions_one_at_a_time(
    subscribe, client, partner, clock
):
    from partner_api.delivery.claims import claim_due_deliveries

    org, token = partner
    new = subscribe(org.id, "http://receiver.test:9/new")
    failing = subscribe(org.id, "http://other.test:9/failing")
    with database.connection_context():
        Subscription.update(consecutive_failures=3).where(Subscription.id == failing.id).execute()
        for _ in range(4):
            for sub in (new, failing):
                publish_event(org.id, "vc.test.ping", {}, subscription_id=sub.id)
        claims = claim_due_deliveries(10, 60, policy=SharePolicy(senders=10))
        tried = {new.id: Subscriber(new.id, org.id)}  # it answered since
        more = claim_due_deliveries(10, 60, policy=SharePolicy(senders=10), known=tried)
    assert sorted(c.subscription_id for c in claims) == sorted([new.id, failing.id])
    assert [c.failing for c in claims if c.subscription_id == failing.id] == [True]
    # Running nothing, the tried subscription gets its share; the failing one one more probe.
    assert sorted(c.subscription_id for c in more).count(new.id) == 3
    assert sorted(c.subscription_id for c in more).count(failing.id) == 1


def test_an_untried_subscription_is_sent_while_failing_probes_hold_what_they_may(
    subscribe, client, clock, dispatcher_factory
):
    """Eight endpoints of two partners that never answer, failing in the database (as after a
    restart: untried by this dispatcher too), hold their most of 10 senders: five probes. A
    new partner's first ping starts at once beside them, long before any probe times out."""
    dispatcher = dispatcher_factory(poll_interval=0.2, delivery_timeout=60)
    with SilentReceiver() as dead, Receiver() as fresh:
        with database.connection_context():
            dead_orgs = [provisioning.create_org(f"Dead {n}").id for n in range(2)]
            new_org = provisioning.create_org("New partner").id
        dead_subs = [subscribe(dead_orgs[n % 2], dead.url(f"/dead/{n}")) for n in range(8)]
        new_sub = subscribe(new_org, fresh.url("receiver.test"))
        with database.connection_context():
            Subscription.update(consecutive_failures=1).where(
                Subscription.id.in_([sub.id for sub in dead_subs])
            ).execute()
            for _ in range(3):
                for sub in dead_subs:
                    publish_event(sub.org_id, "vc.test.ping", {}, subscription_id=sub.id)
        poll = threading.Thread(target=dispatcher.poll)
        poll.start()
        try:
            assert wait_for(lambda: dead.requests >= 5, 10), "the dead endpoints were not probed"
            with database.connection_context():
                publish_event(new_org, "vc.test.ping", {}, subscription_id=new_sub.id)
            assert fresh.first_request.wait(10), "the first ping waited for the probes"
            probes = dead.requests  # still the five of before: no probe ended or started
        finally:
            dispatcher.stop()
    poll.join(30)  # the dead receiver is gone: the probes end at once
    dispatcher.wait_in_flight()
    assert probes == SharePolicy(10).suspect_budget == 5
    assert len(fresh.requests) == 1
    with database.connection_context():
        sent = Delivery.get(Delivery.subscription == new_sub.id)
    assert sent.status == "delivered"


def test_a_claim_that_waited_is_checked_before_it_is_sent(subscribe, client, partner, clock):
    """A claim held back in a ready queue is sent only if its lease still holds and its
    subscription is still enabled; the others are given back, due now."""
    from partner_api.delivery.claims import claim_due_deliveries, still_sendable
    from partner_api.delivery.lifecycle import release

    org, token = partner
    subs = [subscribe(org.id, f"http://receiver.test:9/{n}") for n in range(3)]
    with database.connection_context():
        for sub in subs:
            publish_event(org.id, "vc.test.ping", {}, subscription_id=sub.id)
        claims = claim_due_deliveries(10, 60)
        by_sub = {claim.subscription_id: claim for claim in claims}
        kept, deleted, disabled = (by_sub[sub.id] for sub in subs)
        delete_subscription(org.id, deleted.subscription_id)
        disable_subscription(disabled.subscription_id)
        assert still_sendable(claims) == [kept]
        release([deleted, disabled])
    assert delivery(deleted.id).status == "cancelled"  # the delete cancelled it; stays so
    given_back = delivery(disabled.id)
    assert given_back.lease_token is None and given_back.next_attempt_at == clock.current
    assert delivery(kept.id).lease_token == kept.lease_token
