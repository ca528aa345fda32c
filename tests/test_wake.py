"""The wake on publish: a publish wakes a dispatcher at once on each backend, with a poll far
away; a rolled-back publish wakes nobody; without a listener, or with its channel gone, the
publish still answers 202 and polling delivers; behind PgBouncer in transaction mode the
dispatcher says once that it polls. And the next poll comes when the next retry is due."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import select
import signal
import socket
import threading

import psycopg2
import pytest

from dispatcher import __main__ as dispatcher_main
from dispatcher.dispatch import Dispatcher
from harness.dispatcher import dispatcher_env, start_dispatcher
from harness.net import wait_for
from harness.pgbouncer import PgBouncer, pgbouncer_binary
from harness.receivers import Receiver
from partner_api import provisioning
from partner_api.db import database, write_transaction
from partner_api.delivery import replay, subscriptions, wake
from partner_api.delivery.claims import next_due_after
from partner_api.delivery.outbox import publish_event
from partner_api.models import Delivery, Event

from .conftest import POSTGRES_URL, WEBHOOKS, bearer, created

LONG_POLL = "3600"  # far longer than any wait here: in time, only a wake can deliver
LISTENING = "wake on publish: listening on"


class RunningDispatcher:
    """`python -m dispatcher` with `env`, its output collected line by line as it comes."""

    def __init__(self, env: dict):
        self.process = start_dispatcher(env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def saw(self, text: str, timeout: float = 30) -> bool:
        return wait_for(lambda: any(text in line for line in self.lines), timeout)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        return "".join(self.lines)


@contextlib.contextmanager
def running_dispatcher(env: dict):
    dispatcher = RunningDispatcher(env)
    try:
        yield dispatcher
    finally:
        output = dispatcher.stop()
        assert dispatcher.process.returncode == 0, output
        assert "Traceback" not in output, output


def delivered(event_id: str) -> bool:
    with database.connection_context():
        return Delivery.get(Delivery.event == event_id).status == "delivered"


def received(receiver: Receiver) -> list[str]:
    return [json.loads(request["body"])["id"] for request in receiver.requests]


def one_subscriber(subscribe, receiver: Receiver) -> str:
    with database.connection_context():
        org = provisioning.create_org("Acme")
    subscribe(org.id, receiver.url())
    return org.id


def publish(org_id: str, n: int = 0) -> str:
    with database.connection_context():
        return publish_event(org_id, "vc.test.ping", {"n": n})[0].id


@pytest.mark.parametrize("wake_on", [True, False], ids=["wake", "no-wake"])
def test_a_publish_wakes_a_dispatcher_on_each_backend(subscribe, database_url, wake_on):
    """With an hour between polls, each publish is delivered within seconds when the dispatcher
    listens; with the wake off the same publish waits for the poll (so this test can fail)."""
    with Receiver() as receiver:
        org_id = one_subscriber(subscribe, receiver)
        first = publish(org_id)  # the start's poll takes it: after that, only a wake can
        env = dispatcher_env(
            database_url,
            PARTNER_API_POLL_INTERVAL=LONG_POLL,
            PARTNER_API_DISPATCHER_WAKE=str(wake_on).lower(),
        )
        with running_dispatcher(env) as dispatcher:
            assert wait_for(lambda: delivered(first), 30)
            if not wake_on:
                assert dispatcher.saw("wake on publish off (PARTNER_API_DISPATCHER_WAKE=false)")
                later = publish(org_id, 1)
                assert not wait_for(lambda: later in received(receiver), 3)
                return
            assert dispatcher.saw(LISTENING)
            for n in range(1, 4):
                event_id = publish(org_id, n)
                assert wait_for(lambda e=event_id: e in received(receiver), 20), dispatcher.lines
    assert sorted(received(receiver)) == sorted(set(received(receiver)))


class Ear:
    """Hears the wake channel as a dispatcher would, in order: SQLite, a socket in the wake
    directory; PostgreSQL, a LISTEN. `fence()` then `heard()`: everything before the fence."""

    FENCE = "fence"

    def __init__(self, database_url: str):
        self.database_url = database_url
        if database_url.startswith("sqlite"):
            directory = wake.socket_directory(database_url)
            directory.mkdir(exist_ok=True)
            self.path = str(directory / "ear")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(self.path)
        else:
            self.connection = psycopg2.connect(database_url)
            self.connection.autocommit = True
            self.connection.cursor().execute(f"LISTEN {wake.CHANNEL}")

    def fence(self) -> None:
        if self.database_url.startswith("sqlite"):
            self.sock.sendto(self.FENCE.encode(), self.path)
            return
        with contextlib.closing(psycopg2.connect(self.database_url)) as other:
            other.autocommit = True
            other.cursor().execute("SELECT pg_notify(%s, %s)", (wake.CHANNEL, self.FENCE))

    def heard(self) -> list[str]:
        """What arrived before the fence (a wake is '!' on SQLite, '' on PostgreSQL)."""
        heard = []
        while True:
            if self.database_url.startswith("sqlite"):
                self.sock.settimeout(10)
                messages = [self.sock.recv(64).decode()]
            else:
                assert select.select([self.connection], [], [], 10)[0], "the fence never came"
                self.connection.poll()
                messages = [n.payload for n in self.connection.notifies]
                self.connection.notifies.clear()
            for message in messages:
                if message == self.FENCE:
                    return heard
                heard.append(message)

    def close(self) -> None:
        if self.database_url.startswith("sqlite"):
            self.sock.close()
            os.unlink(self.path)
        else:
            self.connection.close()


def test_a_rolled_back_publish_wakes_nobody_and_loses_nothing(subscribe, database_url, config):
    with Receiver() as receiver:
        org_id = one_subscriber(subscribe, receiver)
        ear = Ear(database_url)
        try:
            with database.connection_context(), pytest.raises(RuntimeError), write_transaction():
                publish_event(org_id, "vc.test.ping", {"n": "rolled back"})
                raise RuntimeError("the request failed after the publish")
            ear.fence()
            assert ear.heard() == []
            kept = publish(org_id)
            ear.fence()
            assert len(ear.heard()) == 1
        finally:
            ear.close()
        dispatcher = Dispatcher(config)
        try:
            dispatcher.run_until_idle()
        finally:
            dispatcher.close()
    assert received(receiver) == [kept]
    with database.connection_context():
        assert [event.id for event in Event.select()] == [kept]


def test_a_redelivery_and_an_enable_wake_a_disable_and_a_delete_do_not(
    subscribe, database_url, config
):
    """Every write that makes work due now wakes once; one that makes nothing due, nobody."""
    with Receiver() as receiver:
        org_id = one_subscriber(subscribe, receiver)
        sent = publish(org_id)
        dispatcher = Dispatcher(config)
        try:
            dispatcher.run_until_idle()
        finally:
            dispatcher.close()
    ear = Ear(database_url)
    try:
        with database.connection_context():
            delivery = Delivery.get(Delivery.event == sent)
            subscription_id = delivery.subscription_id
            heard = []
            for change in (
                lambda: replay.replay_delivery(delivery.id),
                lambda: subscriptions.disable_subscription(subscription_id),
                lambda: publish_event(org_id, "vc.test.ping", {"n": "held"}),
                lambda: subscriptions.enable_subscription(subscription_id),
                lambda: subscriptions.enable_subscription(subscription_id),  # already: no-op
                lambda: subscriptions.delete_subscription(org_id, subscription_id),
            ):
                change()
                ear.fence()
                heard.append(len(ear.heard()))
    finally:
        ear.close()
    assert heard == [1, 0, 0, 1, 0, 0]


def test_several_dispatchers_are_all_woken_and_send_each_delivery_once(subscribe, database_url):
    with Receiver() as receiver:
        org_id = one_subscriber(subscribe, receiver)
        env = dispatcher_env(database_url, PARTNER_API_POLL_INTERVAL=LONG_POLL)
        with running_dispatcher(env) as one, running_dispatcher(env) as other:
            assert one.saw(LISTENING) and other.saw(LISTENING)
            if database_url.startswith("sqlite"):
                assert len(os.listdir(wake.socket_directory(database_url))) == 2
            with database.connection_context(), write_transaction():
                events = [publish_event(org_id, "vc.test.ping", {"n": n})[0].id for n in range(30)]
            assert wait_for(lambda: set(received(receiver)) == set(events), 30)
        if database_url.startswith("sqlite"):  # each removed its socket as it stopped
            assert os.listdir(wake.socket_directory(database_url)) == []
    assert sorted(received(receiver)) == sorted(events)


def test_without_a_listener_or_its_socket_the_api_answers_202_and_polling_delivers(
    client, make_key, database_url, config, tmp_path
):
    """No dispatcher has ever listened (no wake directory, nobody LISTENs); then, on SQLite,
    a dispatcher that died without removing its socket: the publish removes it."""
    _, _, token = make_key()
    with Receiver() as receiver:
        target = created(client, token, url=receiver.url())
        ping = f"{WEBHOOKS}/{target['id']}/test"
        first = client.post(ping, json={"secret": target["secret"]}, headers=bearer(token))
        stale = None
        if database_url.startswith("sqlite"):
            assert not wake.socket_directory(database_url).exists()
            wake.socket_directory(database_url).mkdir()
            stale = wake.socket_directory(database_url) / "gone"
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
                dead.bind(str(stale))  # closed without unlinking: a dispatcher killed -9
            (wake.socket_directory(database_url) / "not-a-socket").write_text("")
        second = client.post(ping, json={"secret": target["secret"]}, headers=bearer(token))
        assert (first.status_code, second.status_code) == (202, 202), second.get_data()
        if stale is not None:
            assert not stale.exists()
        dispatcher = Dispatcher(config)
        try:
            assert dispatcher.run_until_idle() == 2
        finally:
            dispatcher.close()
    assert sorted(received(receiver)) == sorted(
        answer.get_json()["event_id"] for answer in (first, second)
    )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_dropped_listen_session_is_reconnected_and_polling_delivers_meanwhile(
    subscribe, database_url
):
    with Receiver() as receiver:
        org_id = one_subscriber(subscribe, receiver)
        env = dispatcher_env(database_url, PARTNER_API_POLL_INTERVAL="1")
        with running_dispatcher(env) as dispatcher:
            assert dispatcher.saw(LISTENING)
            with database.connection_context():
                database.execute_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'partner-api-dispatcher-wake'"
                )
            assert dispatcher.saw("wake on publish: no session on")
            meanwhile = publish(org_id)
            assert wait_for(lambda: meanwhile in received(receiver), 20)
            assert wait_for(lambda: sum(LISTENING in line for line in dispatcher.lines) == 2, 30)
        output = "".join(dispatcher.lines)
    assert output.count("wake on publish: no session on") == 1, output


@pytest.mark.skipif(not POSTGRES_URL, reason="PARTNER_API_TEST_POSTGRES_URL is not set")
@pytest.mark.skipif(not pgbouncer_binary(), reason="pgbouncer is not installed (make pgbouncer)")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_listening_through_pgbouncer_in_transaction_mode_falls_back_to_polling_once(
    subscribe, database_url
):
    with Receiver() as receiver, PgBouncer(database_url, pool_mode="transaction") as pooled:
        org_id = one_subscriber(subscribe, receiver)
        env = dispatcher_env(
            database_url, PARTNER_API_POLL_INTERVAL="1", PARTNER_API_DISPATCHER_LISTEN_URL=pooled
        )
        with running_dispatcher(env) as dispatcher:
            assert dispatcher.saw("receives no notifications", timeout=wake.SELF_TEST_SECONDS + 30)
            event_id = publish(org_id)
            assert wait_for(lambda: event_id in received(receiver), 20)
        output = "".join(dispatcher.lines)
    assert output.count("wake on publish off") == 1, output
    assert LISTENING not in output
    assert "PARTNER_API_DISPATCHER_LISTEN_URL" in output


@pytest.mark.skipif(not pgbouncer_binary(), reason="pgbouncer is not installed (make pgbouncer)")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_listening_through_pgbouncer_in_session_mode_works(subscribe, database_url):
    with Receiver() as receiver, PgBouncer(database_url, pool_mode="session") as pooled:
        org_id = one_subscriber(subscribe, receiver)
        first = publish(org_id)
        env = dispatcher_env(
            database_url,
            PARTNER_API_POLL_INTERVAL=LONG_POLL,
            PARTNER_API_DISPATCHER_LISTEN_URL=pooled,
        )
        with running_dispatcher(env) as dispatcher:
            assert wait_for(lambda: delivered(first), 30)
            assert dispatcher.saw(LISTENING)
            event_id = publish(org_id, 1)
            assert wait_for(lambda: event_id in received(receiver), 20)


def test_the_next_poll_comes_when_a_retry_is_due_if_that_is_sooner(
    subscribe, database_url, config, clock
):
    """A failed attempt with a 2 s retry and an hour between polls: once its outcome is
    written, the dispatcher asks for a poll at the retry's due time."""
    config = dataclasses.replace(config, retry_schedule=(2,), poll_interval=3600)
    with Receiver(responses=((500, {}, b"down"),)) as receiver:
        org_id = one_subscriber(subscribe, receiver)
        with database.connection_context():
            assert next_due_after(clock.current) is None
        publish(org_id)
        dispatcher = Dispatcher(config)
        asked = []
        dispatcher.poll_by = asked.append
        try:
            dispatcher.poll()
            dispatcher.wait_in_flight()  # the attempt failed and its retry was written
        finally:
            dispatcher.close()
    retry_at = clock.current + dt.timedelta(seconds=2)
    assert asked[-1] == retry_at
    with database.connection_context():
        assert next_due_after(clock.current) == retry_at
        assert next_due_after(retry_at) is None


def test_a_poll_is_brought_forward_never_pushed_back(config):
    dispatcher = Dispatcher(config)
    try:
        scheduler = dispatcher_main._scheduler(dispatcher, config)
        poll_by = dispatcher_main.PollBy(scheduler)
        scheduled = scheduler.get_job("poll").next_run_time
        poll_by((scheduled + dt.timedelta(seconds=5)).astimezone(dt.UTC).replace(tzinfo=None))
        assert scheduler.get_job("poll").next_run_time == scheduled
        sooner = scheduled - dt.timedelta(seconds=1)
        poll_by(sooner.astimezone(dt.UTC).replace(tzinfo=None))
        assert scheduler.get_job("poll").next_run_time == sooner
    finally:
        dispatcher.close()
