"""Operating the service: find, show, replay and recover deliveries, stats, and retention, through
the work functions and the admin CLI, on SQLite and PostgreSQL, with the fake clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

import pytest

from dispatcher import __main__ as dispatcher_main
from dispatcher.dispatch import Dispatcher
from harness.receivers import Receiver
from partner_api import cli, ids
from partner_api import clock as clock_module
from partner_api.config import describe_database_url
from partner_api.db import database
from partner_api.delivery import replay, retention, stats
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import delete_subscription, disable_subscription
from partner_api.errors import DomainError
from partner_api.migrations import YOYO_TABLES
from partner_api.models import Delivery, DeliveryFailure, DispatcherPoll, Event, Subscription

from .conftest import delivery_row, failure_audit

FAIL = (500, {}, b"boom")
OK = (200, {}, b"ok")


@pytest.fixture
def world(app, config, clock, make_key):
    """An org with a helper to publish pings to its subscriptions."""
    org, _, _ = make_key()

    class World:
        org_id = org.id

        def publish(self, sub, n=0):
            with database.connection_context():
                _, [delivery] = publish_event(
                    sub.org_id, "vc.test.ping", {"n": n}, subscription_id=sub.id
                )
            return delivery

    return World()


@pytest.fixture
def dispatcher(config):
    made = Dispatcher(dataclasses.replace(config, retry_schedule=(60,)))  # 2 attempts
    yield made
    made.close()


def run(runner, *args):
    """Invoke the CLI; returns (exit code, stdout+stderr)."""
    result = runner.invoke(args=list(args))
    return result.exit_code, result.output


def run_json(runner, *args):
    """The --json output; an object's `database` (checked here) is left out."""
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    if isinstance(found, dict):
        url = runner.app.config["PARTNER_API"].database_url
        assert found.pop("database") == describe_database_url(url)
    return found


def assert_refused(runner, args, fragment):
    """One `error: …` line (after the line naming the database, if the command ran), a
    non-zero exit, no traceback, nothing on stdout."""
    result = runner.invoke(args=list(args))
    assert result.exit_code != 0 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("database: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0]


row, audit = delivery_row, failure_audit


def dead_letter(dispatcher, clock, delivery_id):
    """Two failed attempts (schedule (60,)): the delivery is dead-lettered."""
    dispatcher.run_until_idle()
    clock.advance(60)
    dispatcher.run_until_idle()
    assert row(delivery_id).status == "dead_lettered"


def snapshot():
    with database.connection_context():
        return [
            (d.id, d.status, d.attempts, d.next_attempt_at) for d in Delivery.select()
        ], DeliveryFailure.select().count()


# --- webhooks list ---------------------------------------------------------------------------


def test_webhooks_list_shows_status_failure_streak_and_disabled_reason(
    subscribe, runner, world, make_key, clock
):
    healthy = subscribe(world.org_id)
    clock.advance(1)
    broken = subscribe(world.org_id)
    with database.connection_context():
        # By hand: the state an auto-disable leaves after 20 failed attempts (a failure streak
        # of 20), which the lifecycle reaches only through 20 real attempts.
        Subscription.update(
            status="disabled", consecutive_failures=20, disabled_reason="too many failures"
        ).where(Subscription.id == broken.id).execute()
    other_org, _, _ = make_key(org_name="Other")
    subscribe(other_org.id)
    listed = run_json(runner, "webhooks", "list", "--org", world.org_id)
    assert [s["id"] for s in listed] == [healthy.id, broken.id]
    assert listed[1]["status"] == "disabled" and listed[1]["consecutive_failures"] == 20
    assert listed[1]["disabled_reason"] == "too many failures"
    assert len(run_json(runner, "webhooks", "list")) == 3
    code, text = run(runner, "webhooks", "list")
    assert code == 0 and "too many failures" in text and "FAILURES" in text


def test_webhooks_list_shows_every_type_as_star(subscribe, runner, world):
    every = subscribe(world.org_id)  # events omitted: every type, present and future
    named = subscribe(world.org_id, "http://127.0.0.1:9/b", ["vc.test.ping"])
    listed = {s["id"]: s["events"] for s in run_json(runner, "webhooks", "list")}
    assert listed == {every.id: ["*"], named.id: ["vc.test.ping"]}
    result = runner.invoke(args=["webhooks", "list"])
    header, *rows = result.stdout.splitlines()
    assert result.exit_code == 0 and "EVENTS" in header
    events_column = header.index("EVENTS")
    assert sorted(row[events_column:].split()[0] for row in rows) == ["*", "vc.test.ping"]


def test_webhooks_list_of_an_unknown_org_is_refused(runner, world):
    assert_refused(runner, ["webhooks", "list", "--org", "org_nope"], "no org")


# --- deliveries list / show ------------------------------------------------------------------


def test_deliveries_list_is_newest_first_and_filters(subscribe, runner, world, clock):
    first, second = subscribe(world.org_id), subscribe(world.org_id)
    made = []
    for n in range(3):
        made.append(world.publish(first, n))
        clock.advance(1)
    held_sub = subscribe(world.org_id)
    disable_subscription(held_sub.id)
    held = world.publish(held_sub)
    clock.advance(1)
    made.append(world.publish(second))
    everything = run_json(runner, "deliveries", "list")
    assert [d["id"] for d in everything] == [
        made[3].id,
        held.id,
        made[2].id,
        made[1].id,
        made[0].id,
    ]
    by_sub = run_json(runner, "deliveries", "list", "--subscription", first.id, "--limit", "2")
    assert [d["id"] for d in by_sub] == [made[2].id, made[1].id]
    assert [d["id"] for d in run_json(runner, "deliveries", "list", "--status", "held")] == [
        held.id
    ]
    assert len(run_json(runner, "deliveries", "list", "--org", world.org_id)) == 5
    assert everything[0]["event_type"] == "vc.test.ping" and everything[0]["status"] == "pending"
    result = runner.invoke(args=["deliveries", "list", "--status", "delivered"])
    assert result.exit_code == 0 and result.stdout.strip() == "no deliveries"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--status", "lost"], "--status must be one of pending, held, delivered"),
        (["--limit", "0"], "--limit must be a whole number from 1 to 1000"),
        (["--limit", "ten"], "--limit must be a whole number"),
        (["--limit", "1001"], "--limit must be a whole number"),
        (["--limit", "²"], "--limit must be a whole number"),
        (["--org", "org_nope"], "no org"),
        (["--subscription", "wh_nope"], "no webhook subscription"),
    ],
)
def test_deliveries_list_refuses_bad_filters(runner, world, args, fragment):
    assert_refused(runner, ["deliveries", "list", *args], fragment)


def test_deliveries_show_has_the_event_and_every_failed_attempt(
    subscribe, runner, world, clock, dispatcher
):
    with Receiver([FAIL]) as receiver:
        sub = subscribe(world.org_id, receiver.url())
        delivery = world.publish(sub, 7)
        dead_letter(dispatcher, clock, delivery.id)
    shown = run_json(runner, "deliveries", "show", delivery.id)
    assert shown["status"] == "dead_lettered" and shown["attempts"] == 2
    assert shown["event"]["data"] == {"n": 7} and shown["event"]["type"] == "vc.test.ping"
    assert [a["attempt"] for a in shown["attempt_log"]] == [1, 2]
    first, last = shown["attempt_log"]
    assert first["outcome"] == "http_status" and first["status"] == 500
    assert first["next_attempt_at"] is not None and last["dead_lettered"] is True
    assert all(a["duration_ms"] is not None and a["error"] for a in shown["attempt_log"])
    code, text = run(runner, "deliveries", "show", delivery.id)
    assert code == 0 and "http_status" in text and "500" in text and sub.url in text


def test_deliveries_show_of_a_delivered_delivery_lists_the_success(
    subscribe, runner, world, clock, dispatcher
):
    with Receiver([FAIL, OK]) as receiver:
        delivery = world.publish(subscribe(world.org_id, receiver.url()))
        dispatcher.run_until_idle()
        clock.advance(60)
        dispatcher.run_until_idle()
    log = run_json(runner, "deliveries", "show", delivery.id)["attempt_log"]
    assert [(a["attempt"], a["outcome"]) for a in log] == [(1, "http_status"), (2, "delivered")]
    assert log[1]["status"] == 200 and log[1]["duration_ms"] >= 0 and log[1]["error"] is None


@pytest.mark.parametrize("delivery_id", ["dlv_nope", "dlv_" + "a" * 26, ""])
def test_deliveries_show_of_an_unknown_delivery_is_refused(runner, world, delivery_id):
    assert_refused(runner, ["deliveries", "show", delivery_id], "no delivery")


# --- replay ----------------------------------------------------------------------------------


def test_replay_sends_the_same_event_again_and_keeps_counting(
    subscribe, runner, world, clock, dispatcher
):
    with Receiver([FAIL, FAIL, FAIL, OK]) as receiver:
        sub = subscribe(world.org_id, receiver.url())
        delivery = world.publish(sub)
        dead_letter(dispatcher, clock, delivery.id)
        clock.advance(3600)
        assert run_json(runner, "deliveries", "replay", delivery.id) == {
            "delivery_id": delivery.id,
            "status": "pending",
        }
        replayed = row(delivery.id)
        assert replayed.attempts == 2 and replayed.attempts_before_replay == 2
        assert replayed.next_attempt_at == clock.current
        assert dispatcher.run_until_idle() == 1  # within one poll
        # The schedule starts again: the next retry is the schedule's first, 60 s later.
        assert row(delivery.id).next_attempt_at == clock.current + dt.timedelta(seconds=60)
        clock.advance(60)
        dispatcher.run_until_idle()
        bodies = [json.loads(r["body"]) for r in receiver.requests]
    assert len(bodies) == 4 and {b["id"] for b in bodies} == {delivery.event_id}
    final = row(delivery.id)
    assert final.status == "delivered" and final.attempts == 4
    # The audit keeps the first round's attempts beside the replay's, numbered on.
    assert [(f.attempt, bool(f.dead_lettered)) for f in audit(delivery.id)] == [
        (1, False),
        (2, True),
        (3, False),
    ]
    shown = run_json(runner, "deliveries", "show", delivery.id)
    assert [(a["attempt"], a["outcome"]) for a in shown["attempt_log"]] == [
        (1, "http_status"),
        (2, "http_status"),
        (3, "http_status"),
        (4, "delivered"),
    ]
    assert shown["replays"] == [
        {
            "replayed_at": clock_module.isoformat(clock.current - dt.timedelta(seconds=60)),
            "by": "operator",
            "after_attempt": 2,
        }
    ]


def test_a_replayed_delivery_is_not_shown_as_delivered_until_it_is_again(
    subscribe, runner, world, clock, dispatcher
):
    with Receiver([OK]) as receiver:
        delivery = world.publish(subscribe(world.org_id, receiver.url()))
        dispatcher.run_until_idle()
        clock.advance(10)
        run_json(runner, "deliveries", "replay", delivery.id)
    pending = row(delivery.id)
    assert pending.status == "pending" and pending.delivered_at is None
    assert pending.response_status is None and pending.duration_ms is None
    [listed] = run_json(runner, "deliveries", "list")
    assert listed["status"] == "pending" and listed["delivered_at"] is None
    shown = run_json(runner, "deliveries", "show", delivery.id)
    assert [(a["attempt"], a["outcome"]) for a in shown["attempt_log"]] == [(1, "delivered")]


def test_a_replay_keeps_the_earlier_success_visible(subscribe, runner, world, clock, dispatcher):
    with Receiver([OK, FAIL, OK]) as receiver:
        delivery = world.publish(subscribe(world.org_id, receiver.url()))
        dispatcher.run_until_idle()
        clock.advance(10)
        run_json(runner, "deliveries", "replay", delivery.id)
        dispatcher.run_until_idle()  # attempt 2 fails
        clock.advance(60)
        dispatcher.run_until_idle()  # attempt 3 delivers
    shown = run_json(runner, "deliveries", "show", delivery.id)
    log = [(a["attempt"], a["outcome"], a["status"]) for a in shown["attempt_log"]]
    assert log == [(1, "delivered", 200), (2, "http_status", 500), (3, "delivered", 200)]
    assert shown["delivered_at"] == clock_module.isoformat(clock.current)  # the latest one
    assert [(r["by"], r["after_attempt"]) for r in shown["replays"]] == [("operator", 1)]
    code, text = run(runner, "deliveries", "show", delivery.id)
    table = text.split("\n\n", 1)[1].splitlines()[1:]  # the attempts table, less its header
    assert code == 0 and [line.split()[2] for line in table] == [
        "delivered",
        "replayed",
        "http_status",
        "delivered",
    ]
    assert "by operator" in table[1]


def test_a_delivered_delivery_can_be_replayed(subscribe, runner, world, clock, dispatcher):
    with Receiver([OK]) as receiver:
        delivery = world.publish(subscribe(world.org_id, receiver.url()))
        dispatcher.run_until_idle()
        assert row(delivery.id).status == "delivered"
        run_json(runner, "deliveries", "replay", delivery.id)
        dispatcher.run_until_idle()
        assert len(receiver.requests) == 2
    assert row(delivery.id).status == "delivered"


def test_replay_for_a_disabled_subscription_is_held_until_enabled(
    subscribe, runner, world, clock, dispatcher
):
    with Receiver([FAIL, FAIL, OK]) as receiver:
        sub = subscribe(world.org_id, receiver.url())
        delivery = world.publish(sub)
        dead_letter(dispatcher, clock, delivery.id)
        disable_subscription(sub.id)
        answer = run_json(runner, "deliveries", "replay", delivery.id)
        assert answer == {"delivery_id": delivery.id, "status": "held"}
        assert dispatcher.run_until_idle() == 0
        run_json(runner, "webhooks", "enable", sub.id)
        assert dispatcher.run_until_idle() == 1
    assert row(delivery.id).status == "delivered"


def test_replay_of_a_pending_or_held_delivery_is_refused_and_changes_nothing(
    subscribe, runner, world
):
    pending = world.publish(subscribe(world.org_id))
    disabled = subscribe(world.org_id)
    disable_subscription(disabled.id)
    held = world.publish(disabled)
    before = snapshot()
    assert_refused(runner, ["deliveries", "replay", pending.id], "is pending")
    assert_refused(runner, ["deliveries", "replay", held.id], "is held")
    assert snapshot() == before


def test_replay_of_a_deleted_subscriptions_delivery_is_refused(
    subscribe, runner, world, clock, dispatcher
):
    with Receiver([FAIL]) as receiver:
        sub = subscribe(world.org_id, receiver.url())
        dead = world.publish(sub)
        dead_letter(dispatcher, clock, dead.id)
    cancelled = world.publish(sub)
    with database.connection_context():
        delete_subscription(world.org_id, sub.id)
    before = snapshot()
    assert_refused(runner, ["deliveries", "replay", dead.id], "is deleted")
    assert_refused(runner, ["deliveries", "replay", cancelled.id], "is deleted")
    assert snapshot() == before
    assert row(dead.id).status == "dead_lettered" and row(cancelled.id).status == "cancelled"


@pytest.mark.parametrize("delivery_id", ["dlv_nope", "wh_" + "a" * 26])
def test_replay_of_an_unknown_delivery_is_refused(subscribe, runner, world, delivery_id):
    assert_refused(runner, ["deliveries", "replay", delivery_id], "no delivery")


# --- recover ---------------------------------------------------------------------------------


@pytest.fixture
def outage(subscribe, world, clock, dispatcher):
    """A subscription with three dead letters whose events occurred 5 h, 3 h and 1 h ago (and
    one delivered), now that the receiver is back."""
    with Receiver([FAIL]) as receiver:
        sub = subscribe(world.org_id, receiver.url())
        dead = []
        for n in range(3):
            if n:
                clock.advance(2 * 3600 - 60)
            dead.append(world.publish(sub, n))
            dead_letter(dispatcher, clock, dead[-1].id)  # takes 60 s
        clock.advance(3600 - 60)
    return sub, dead


def test_recover_replays_dead_letters_since_a_time_once(runner, world, clock, outage, dispatcher):
    sub, dead = outage
    assert run_json(runner, "webhooks", "recover", sub.id, "--since", "4h") == {"replayed": 2}
    assert [row(d.id).status for d in dead] == ["dead_lettered", "pending", "pending"]
    assert run_json(runner, "webhooks", "recover", sub.id, "--since", "4h") == {"replayed": 0}
    with Receiver([OK]) as receiver:
        with database.connection_context():
            Subscription.update(url=receiver.url()).where(Subscription.id == sub.id).execute()
        assert dispatcher.run_until_idle() == 2
    assert [row(d.id).status for d in dead] == ["dead_lettered", "delivered", "delivered"]


def test_recover_takes_an_rfc3339_time_with_an_offset(runner, world, clock, outage):
    sub, dead = outage
    with database.connection_context():
        occurred = Event.get_by_id(dead[1].event_id).occurred_at
    local = (occurred.replace(tzinfo=dt.UTC)).astimezone(dt.timezone(dt.timedelta(hours=2)))
    answer = run_json(runner, "webhooks", "recover", sub.id, "--since", local.isoformat())
    assert answer == {"replayed": 2}  # "at or after": the event at exactly that time counts
    code, text = run(runner, "webhooks", "recover", sub.id, "--since", "3d")
    assert code == 0 and "replayed 1 dead-lettered deliveries" in text


@pytest.mark.parametrize("since", ["yesterday", "2026-11-27T10:00:00", "2026-11-27", "2w", ""])
def test_recover_refuses_a_bad_since_and_changes_nothing(runner, world, outage, since):
    sub, _ = outage
    before = snapshot()
    assert_refused(runner, ["webhooks", "recover", sub.id, "--since", since], "--since")
    assert snapshot() == before


def test_recover_refuses_unknown_and_deleted_subscriptions(runner, world, outage):
    sub, _ = outage
    assert_refused(runner, ["webhooks", "recover", "wh_nope", "--since", "1d"], "no webhook")
    with database.connection_context():
        delete_subscription(world.org_id, sub.id)
    before = snapshot()
    assert_refused(runner, ["webhooks", "recover", sub.id, "--since", "1d"], "is deleted")
    assert snapshot() == before


def test_recover_works_in_batches_and_reports_progress(world, outage, clock, monkeypatch):
    sub, dead = outage
    monkeypatch.setattr(replay, "RECOVER_BATCH", 2)
    told = []
    with database.connection_context():
        _, found = replay.dead_letters_since(sub.id, clock.current - dt.timedelta(days=1))
        count = replay.replay_dead_letters(sub.id, found, told.append)
    assert count == 3 and told == [2, 1]
    assert {row(d.id).status for d in dead} == {"pending"}


def test_recover_shows_progress_on_a_terminal_only(runner, world, outage, monkeypatch):
    sub, dead = outage
    monkeypatch.setattr(cli, "PROGRESS_FROM", 2)
    monkeypatch.setattr(cli, "_on_terminal", lambda: False)
    code, piped = run(runner, "webhooks", "recover", sub.id, "--since", "4h")
    assert code == 0 and "replaying" not in piped and "replayed 2" in piped
    monkeypatch.setattr(cli, "_on_terminal", lambda: True)
    code, shown = run(runner, "webhooks", "recover", sub.id, "--since", "1d")
    assert code == 0 and "replaying" not in shown and "replayed 1" in shown  # below 2: no bar
    with database.connection_context():
        Delivery.update(status="dead_lettered").where(
            Delivery.id.in_([d.id for d in dead])
        ).execute()
    code, shown = run(runner, "webhooks", "recover", sub.id, "--since", "1d")
    assert code == 0 and "replaying" in shown and "replayed 3" in shown


def test_recover_of_a_disabled_subscription_holds_the_replays(runner, world, outage):
    sub, dead = outage
    disable_subscription(sub.id)
    code, text = run(runner, "webhooks", "recover", sub.id, "--since", "1d")
    assert code == 0 and "held until" in text
    assert {row(d.id).status for d in dead} == {"held"}


def test_since_parsing():
    now = dt.datetime(2026, 11, 27, 12, 0, 0)
    assert replay.parse_since("2h", now) == dt.datetime(2026, 11, 27, 10, 0, 0)
    assert replay.parse_since("3d", now) == dt.datetime(2026, 11, 24, 12, 0, 0)
    assert replay.parse_since("30m", now) == dt.datetime(2026, 11, 27, 11, 30, 0)
    assert replay.parse_since("2026-11-27T09:00:00Z", now) == dt.datetime(2026, 11, 27, 9)
    assert replay.parse_since("2026-11-27T09:00:00-01:00", now) == dt.datetime(2026, 11, 27, 10)
    with pytest.raises(DomainError) as refused:
        replay.parse_since("soon", now)
    assert refused.value.code == "invalid_since"


# --- stats -----------------------------------------------------------------------------------


def test_stats_counts_the_queue_and_shows_a_stopped_dispatcher(
    subscribe, runner, world, clock, dispatcher, config
):
    code, text = run(runner, "stats")
    assert code == 0 and "none: no dispatcher is polling" in text
    with Receiver([FAIL, FAIL, OK]) as receiver:
        sub = subscribe(world.org_id, receiver.url())
        dead = world.publish(sub)
        dead_letter(dispatcher, clock, dead.id)  # 2 failed attempts
        delivered = world.publish(sub)
        dispatcher.run_until_idle()
        assert row(delivered.id).status == "delivered"
    clock.advance(5)
    due_old = world.publish(sub)
    clock.advance(20)
    world.publish(sub)  # due now too, younger
    later = world.publish(sub)
    with database.connection_context():
        Delivery.update(next_attempt_at=clock.current + dt.timedelta(hours=1)).where(
            Delivery.id == later.id
        ).execute()
        Delivery.update(
            lease_token="x" * 32, next_attempt_at=clock.current + dt.timedelta(seconds=60)
        ).where(Delivery.id == due_old.id).execute()  # leased: in flight
    disabled = subscribe(world.org_id)
    disable_subscription(disabled.id)
    world.publish(disabled)
    found = run_json(runner, "stats")
    assert found["pending"] == 3 and found["due_now"] == 1 and found["in_flight"] == 1
    assert found["oldest_due_age_seconds"] == 0
    assert found["held"] == 1 and found["dead_lettered"] == 1
    assert found["delivered_last_hour"] == 1 and found["failed_attempts_last_hour"] == 2
    assert found["disabled_subscriptions"] == 1
    assert found["last_poll_age_seconds"] == 25 and found["dispatcher_stopped"] is False
    assert [d["id"] for d in found["dispatchers"]] == [dispatcher.heartbeat.dispatcher_id]
    clock.advance(stats.stale_after(config.poll_interval) + 1)
    later_stats = run_json(runner, "stats")
    assert later_stats["dispatcher_stopped"] is True and later_stats["dispatchers"][0]["stopped"]
    assert later_stats["oldest_due_age_seconds"] == stats.stale_after(config.poll_interval) + 1
    code, text = run(runner, "stats")
    assert code == 0 and "STOPPED" in text and "dead-lettered          1" in text
    clock.advance(3600)
    assert run_json(runner, "stats")["delivered_last_hour"] == 0


def test_each_dispatcher_stamps_its_own_poll_row(subscribe, world, clock, config):
    first, second = Dispatcher(config), Dispatcher(config)
    try:
        first.poll()
        clock.advance(10)
        second.poll()
        clock.advance(10)
        first.poll()
        with database.connection_context():
            polls = {p.dispatcher_id: p.last_poll_at for p in DispatcherPoll.select()}
    finally:
        first.close()
        second.close()
    assert polls == {
        first.heartbeat.dispatcher_id: clock.current,
        second.heartbeat.dispatcher_id: clock.current - dt.timedelta(seconds=10),
    }


def test_a_cleanly_stopped_dispatcher_shows_as_stopped_at_once(runner, world, clock, config):
    stopped, killed = Dispatcher(config), Dispatcher(config)
    try:
        stopped.poll()
        killed.poll()  # then "killed": it never gets to close()
        stopped.close()  # SIGTERM and the end of --once end here
        found = run_json(runner, "stats")
        assert [d["id"] for d in found["dispatchers"]] == [killed.heartbeat.dispatcher_id]
        assert found["dispatcher_stopped"] is False  # the killed one looks alive for a while
        clock.advance(stats.stale_after(config.poll_interval) + 1)
        found = run_json(runner, "stats")
        assert found["dispatcher_stopped"] is True and found["dispatchers"][0]["stopped"]
    finally:
        killed.close()
    found = run_json(runner, "stats")
    assert found["dispatcher_stopped"] is True and found["dispatchers"] == []
    assert found["last_poll_at"] is None
    code, text = run(runner, "stats")
    assert code == 0 and "none: no dispatcher is polling" in text


def test_a_dispatcher_that_stops_after_once_removes_its_row_at_once(world, clock, config):
    once = Dispatcher(config)
    once.run_until_idle()
    with database.connection_context():
        assert DispatcherPoll.select().count() == 1
    once.close()
    with database.connection_context():
        assert DispatcherPoll.select().count() == 0
        assert stats.collect_stats(config.poll_interval)["dispatcher_stopped"] is True


# --- prune -----------------------------------------------------------------------------------


@pytest.fixture
def history(subscribe, world, clock, dispatcher):
    """40 days ago: a delivered, a dead-lettered (with audit rows) and a cancelled delivery, an
    event with no subscriber, a held delivery; then the same again 2 days ago."""
    made = {}
    with Receiver([FAIL, FAIL, OK]) as receiver:
        for age in ("old", "new"):
            sub = subscribe(world.org_id, receiver.url())
            dead = world.publish(sub)
            dead_letter(dispatcher, clock, dead.id)
            receiver.responses = [OK]
            delivered = world.publish(sub)
            dispatcher.run_until_idle()
            receiver.responses = [FAIL]
            gone = subscribe(world.org_id)
            cancelled = world.publish(gone)
            with database.connection_context():
                delete_subscription(world.org_id, gone.id)
                lonely = Event.create(  # an event no subscription wanted
                    id=ids.new_id("evt"),
                    org=world.org_id,
                    type="vc.test.ping",
                    data={},
                    occurred_at=clock.current,
                )
                disable_subscription(sub.id)
            held = world.publish(sub)
            made[age] = {
                "dead": dead.id,
                "delivered": delivered.id,
                "cancelled": cancelled.id,
                "held": held.id,
                "lonely_event": lonely.id,
                "events": [dead.event_id, delivered.event_id, cancelled.event_id],
                "held_event": held.event_id,
            }
            clock.advance(38 * 86400 if age == "old" else 2 * 86400)
    return made


def test_prune_deletes_old_finished_deliveries_their_audit_and_orphaned_events(
    runner, world, history
):
    old, new = history["old"], history["new"]
    with database.connection_context():
        DispatcherPoll.create(
            dispatcher_id="dsp_old",
            hostname="h",
            pid=1,
            started_at=dt.datetime(2026, 1, 1),
            last_poll_at=dt.datetime(2026, 1, 1),
        )
    counts = run_json(runner, "prune")
    assert counts == {
        "deliveries": 3,
        "delivery_failures": 2,
        "events": 4,
        "dispatcher_polls": 1,
        "idempotency_keys": 0,
    }
    with database.connection_context():
        left = {d.id for d in Delivery.select()}
        events = {e.id for e in Event.select()}
        audited = {f.delivery_id for f in DeliveryFailure.select()}
    assert left == {old["held"], new["dead"], new["delivered"], new["cancelled"], new["held"]}
    assert audited == {new["dead"]}
    assert old["held_event"] in events  # still referred to by a held delivery
    assert not events & {old["lonely_event"], *old["events"]}
    assert {new["lonely_event"], *new["events"]} <= events
    assert run_json(runner, "prune") == {
        "deliveries": 0,
        "delivery_failures": 0,
        "events": 0,
        "dispatcher_polls": 0,
        "idempotency_keys": 0,
    }
    counts = run_json(runner, "prune", "--older-than", "1")
    assert counts["deliveries"] == 3 and counts["events"] == 4


def test_prune_in_small_batches_deletes_the_same(world, history):
    with database.connection_context():
        counts = retention.prune(30, batch_size=1)
    assert counts["deliveries"] == 3 and counts["delivery_failures"] == 2 and counts["events"] == 4


def test_prune_stops_between_batches_when_asked(world, history):
    with database.connection_context():
        counts = retention.prune(30, batch_size=1, should_stop=lambda: True)
        assert counts == dict.fromkeys(counts, 0)
        assert Delivery.select().count() == 8


@pytest.mark.parametrize("days", ["0", "-1", "ten", "3651", "1.5", "²"])
def test_prune_refuses_a_bad_retention_and_deletes_nothing(runner, world, history, days):
    before = snapshot()
    assert_refused(runner, ["prune", "--older-than", days], "--older-than")
    assert snapshot() == before


def test_the_dispatchers_daily_prune_logs_one_line(world, history, config, caplog):
    caplog.set_level(logging.INFO, logger="dispatcher")
    with database.connection_context():
        counts = dispatcher_main.prune_job(config)
    assert counts["deliveries"] == 3
    [line] = [r.getMessage() for r in caplog.records if "prune" in r.getMessage()]
    assert "older_than_days=30 deliveries=3 delivery_failures=2 events=4" in line


def test_the_dispatcher_schedules_the_daily_prune_beside_its_polls(config):
    dispatcher = Dispatcher(config)
    try:
        jobs = {job.id: job for job in dispatcher_main._scheduler(dispatcher, config).get_jobs()}
    finally:
        dispatcher.close()
    assert set(jobs) == {"poll", "prune"}
    assert jobs["prune"].trigger.interval == dt.timedelta(days=1)
    assert jobs["prune"].executor == "retention" != jobs["poll"].executor


def test_init_db_upgrades_a_database_from_before_stats_and_retention(database_url, runner):
    new_indexes = {
        "events": "events_occurred",
        "deliveries": "deliveries_event",
        "delivery_failures": "delivery_failures_event",
    }
    with database.connection_context():
        database.execute_sql("DROP TABLE dispatcher_polls")
        for column in ("response_status", "duration_ms"):  # SQLite 3.35+ and PostgreSQL
            database.execute_sql(f"ALTER TABLE deliveries DROP COLUMN {column}")
        for name in (*new_indexes.values(), "delivery_failures_delivery", "delivery_failures_time"):
            database.execute_sql(f"DROP INDEX {name}")
        for table in YOYO_TABLES:  # made before migrations existed: no record of any
            database.execute_sql(f"DROP TABLE {table}")
    assert run(runner, "init-db")[0] == 0
    with database.connection_context():
        assert "dispatcher_polls" in database.get_tables()
        columns = {c.name for c in database.get_columns("deliveries")}
        assert {"response_status", "duration_ms"} <= columns
        for table, index in new_indexes.items():
            assert index in {i.name for i in database.get_indexes(table)}
    assert run_json(runner, "stats")["last_poll_at"] is None
