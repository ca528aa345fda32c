"""The dispatcher as real processes: two at once, SIGKILL mid-batch (of a drain, and of
deliveries a publish woke it for), SIGTERM, polling."""

from __future__ import annotations

import collections
import datetime as dt
import ipaddress
import json
import signal
import subprocess
import time

import pytest

from dispatcher.dispatch import Dispatcher
from harness.dispatcher import dispatcher_env, start_dispatcher
from harness.net import wait_for
from harness.receivers import Receiver, SilentReceiver
from partner_api import clock as clock_module
from partner_api import provisioning
from partner_api.config import Config
from partner_api.db import database, write_transaction
from partner_api.delivery.outbox import publish_event
from partner_api.models import Delivery

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def seed(subscribe, receiver: Receiver, events: int) -> list[str]:
    """An org, a subscription to the receiver's IP literal, and `events` published events."""
    with database.connection_context():
        org = provisioning.create_org("Acme")
    subscribe(org.id, receiver.url())
    with database.connection_context():
        return [publish_event(org.id, "vc.test.ping", {"n": n})[0].id for n in range(events)]


def delivery_statuses() -> collections.Counter:
    with database.connection_context():
        return collections.Counter(d.status for d in Delivery.select())


def received_event_ids(receiver: Receiver) -> collections.Counter:
    return collections.Counter(json.loads(r["body"])["id"] for r in receiver.requests)


def test_two_dispatchers_never_send_the_same_delivery_twice(subscribe, database_url):
    with Receiver() as receiver:
        event_ids = seed(subscribe, receiver, 120)
        processes = [
            start_dispatcher(
                dispatcher_env(
                    database_url,
                    PARTNER_API_DISPATCH_BATCH_SIZE="3",
                    PARTNER_API_DISPATCH_WORKERS="4",
                ),
                "--once",
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    counts = received_event_ids(receiver)
    assert set(counts) == set(event_ids)
    assert max(counts.values()) == 1, "a delivery was sent twice"
    assert delivery_statuses() == {"delivered": 120}
    # Both processes took part, so the test exercised concurrent claiming.
    assert all("outcome=ok" in output for output in outputs), outputs


def start_woken(database_url: str, events: list[str], **settings) -> subprocess.Popen:
    """A long-running dispatcher polling once an hour: once it listens, the events are
    published in one transaction, so what it sends was woken by that publish."""
    process = start_dispatcher(
        dispatcher_env(database_url, PARTNER_API_POLL_INTERVAL="3600", **settings)
    )
    listening = "wake on publish: listening"
    assert wait_for(lambda: listening in (process.stdout.readline() or ""), 30)
    with database.connection_context(), write_transaction():
        org_id = provisioning.list_orgs()[0].id
        events += [publish_event(org_id, "vc.test.ping", {"n": n})[0].id for n in range(8)]
    return process


@pytest.mark.parametrize("woken", [False, True], ids=["once", "woken"])
def test_dispatcher_killed_mid_batch_loses_nothing(subscribe, database_url, woken):
    with Receiver(delay=30) as receiver:
        settings = {"PARTNER_API_DISPATCH_WORKERS": "4"}
        if woken:
            event_ids = seed(subscribe, receiver, 0)
            process = start_woken(database_url, event_ids, **settings)
        else:
            event_ids = seed(subscribe, receiver, 8)
            process = start_dispatcher(dispatcher_env(database_url, **settings), "--once")
        assert receiver.first_request.wait(30), "the dispatcher never sent anything"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        receiver.delay = 0
        in_flight_before_kill = len(receiver.requests)
        assert delivery_statuses() == {"pending": 8}
        with database.connection_context():
            leased = Delivery.select().where(Delivery.lease_token.is_null(False)).count()

        config = Config(
            database_url=database_url, webhook_allow_cidrs=LOOPBACK, allow_http_webhooks=True
        )
        real_now = clock_module.now()
        clock_module.set_clock(lambda: real_now)
        try:
            survivor = Dispatcher(config)
            # What the dead process leased is not due until the lease runs out.
            claimed_now = survivor.run_until_idle()
            clock_module.set_clock(
                lambda: real_now + dt.timedelta(seconds=config.lease_seconds + 1)
            )
            claimed_after_lease = survivor.run_until_idle()
            survivor.close()
        finally:
            clock_module.reset_clock()
    # One subscription may use half of the 4 senders: 2 attempts were in flight, and the
    # process may have died before giving back the rest of its claim.
    assert 1 <= in_flight_before_kill <= 2 <= leased <= 4
    assert claimed_now == 8 - leased
    assert claimed_after_lease == leased
    assert delivery_statuses() == {"delivered": 8}
    assert set(received_event_ids(receiver)) == set(event_ids)


def test_sigterm_lets_in_flight_attempts_finish_and_exits_zero(subscribe, database_url):
    with Receiver(delay=1.0) as receiver:
        seed(subscribe, receiver, 1)
        process = start_dispatcher(dispatcher_env(database_url, PARTNER_API_POLL_INTERVAL="0.2"))
        assert receiver.first_request.wait(30)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert delivery_statuses() == {"delivered": 1}
    assert "outcome=ok" in output and "dispatcher stopped" in output


def test_polling_dispatcher_picks_up_a_new_event_within_a_poll_interval(subscribe, database_url):
    with Receiver() as receiver:
        seed(subscribe, receiver, 0)
        process = start_dispatcher(dispatcher_env(database_url, PARTNER_API_POLL_INTERVAL="0.5"))
        try:
            assert wait_for(lambda: "polling every" in (process.stdout.readline() or ""), 30)
            with database.connection_context():
                org_id = provisioning.list_orgs()[0].id
                publish_event(org_id, "vc.test.ping", {})
            published = time.monotonic()
            assert receiver.first_request.wait(10)
            assert time.monotonic() - published < 3
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)
    assert process.returncode == 0


@pytest.mark.parametrize(
    "name,value", [("PARTNER_API_POLL_INTERVAL", "-1"), ("PARTNER_API_RETRY_SCHEDULE", "60,x")]
)
def test_bad_configuration_stops_the_dispatcher_with_one_line(tmp_path, name, value):
    env = dispatcher_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", **{name: value})
    process = start_dispatcher(env, "--once", stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip().count("\n") == 0 and name in stderr


@pytest.mark.parametrize("mode", [(), ("--once",)], ids=["polling", "once"])
def test_sigint_then_sigterm_still_finishes_in_flight_and_exits_zero(subscribe, database_url, mode):
    with Receiver(delay=1.0) as receiver:
        seed(subscribe, receiver, 1)
        process = start_dispatcher(
            dispatcher_env(database_url, PARTNER_API_POLL_INTERVAL="0.2"), *mode
        )
        assert receiver.first_request.wait(30)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert delivery_statuses() == {"delivered": 1}


def _ping_latency(org_id: str, subscription_id: str, receiver: Receiver, timeout: float):
    """Seconds from publishing an event to the receiver reading it (None: not within timeout)."""
    with database.connection_context():
        event, _ = publish_event(org_id, "vc.test.ping", {}, subscription_id=subscription_id)
    published = time.monotonic()
    if wait_for(lambda: event.id in received_event_ids(receiver), timeout):
        return time.monotonic() - published
    return None


def test_a_healthy_subscription_is_not_held_behind_dead_receivers(subscribe, database_url):
    """Six new dead endpoints of one partner, three deliveries each, hold what they may of four
    senders: one probe each, at most three at once, the last sender kept for endpoints that
    answer. Another partner's (answering) endpoint still gets its events within a poll."""
    with SilentReceiver() as dead, Receiver() as healthy:
        with database.connection_context():
            dead_org = provisioning.create_org("Dead endpoints").id
            healthy_org = provisioning.create_org("Healthy").id
        dead_subs = [subscribe(dead_org, dead.url(f"/dead/{n}")).id for n in range(6)]
        healthy_sub = subscribe(healthy_org, healthy.url()).id
        process = start_dispatcher(
            dispatcher_env(
                database_url,
                PARTNER_API_DISPATCH_WORKERS="4",
                PARTNER_API_DELIVERY_TIMEOUT="6",
                PARTNER_API_POLL_INTERVAL="0.5",
            )
        )
        # An established partner: its endpoint has answered this dispatcher before.
        assert _ping_latency(healthy_org, healthy_sub, healthy, timeout=10) is not None
        with database.connection_context():
            for _ in range(3):
                for sub in dead_subs:
                    publish_event(dead_org, "vc.test.ping", {}, subscription_id=sub)
        try:
            assert wait_for(lambda: dead.requests >= 3, 10), "the dead endpoints were not tried"
            first = _ping_latency(healthy_org, healthy_sub, healthy, timeout=5)
            time.sleep(0.3)
            second = _ping_latency(healthy_org, healthy_sub, healthy, timeout=5)
            dead_seen = dead.requests  # one sender of four is kept from them: never all four
        finally:
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=30)[0]
    assert dead_seen == 3, output
    assert first is not None and first < 1.5, output
    assert second is not None and second < 1.5, output
    assert process.returncode == 0, output


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_dispatcher_recovers_when_postgresql_drops_its_connections(subscribe, database_url):
    """pg_terminate_backend on every connection of the dispatcher, twice, while it sends: it
    reconnects by itself, every event is delivered once, nothing stays leased."""
    with Receiver() as receiver:
        event_ids = seed(subscribe, receiver, 20)
        process = start_dispatcher(dispatcher_env(database_url, PARTNER_API_POLL_INTERVAL="0.3"))
        try:
            assert wait_for(lambda: len(received_event_ids(receiver)) >= 20, 20)
            for round_ in range(2):
                with database.connection_context():
                    database.execute_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    org_id = provisioning.list_orgs()[0].id
                    event_ids += [
                        publish_event(org_id, "vc.test.ping", {"round": round_, "n": n})[0].id
                        for n in range(10)
                    ]
                wanted = set(event_ids)
                assert wait_for(lambda w=wanted: set(received_event_ids(receiver)) >= w, 20), (
                    "not every event was delivered after the connections were dropped"
                )
        finally:
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert delivery_statuses() == {"delivered": 40}
    with database.connection_context():
        assert Delivery.select().where(Delivery.lease_token.is_null(False)).count() == 0
    assert max(received_event_ids(receiver).values()) == 1
