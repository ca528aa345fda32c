"""API, dispatcher and admin CLI through a real PgBouncer in transaction pooling mode.

Everything talks to PostgreSQL through PgBouncer (`pool_mode = transaction`, 10 server
connections): init-db, the CLI, gunicorn with several workers and a polling dispatcher (whose
LISTEN alone, needing a session, goes straight to PostgreSQL). Each transaction may land on
another server connection, so nothing may rely on session state; any 5xx fails the test.
"""

from __future__ import annotations

import concurrent.futures
import json
import tempfile
from pathlib import Path

import pytest
import requests

from harness.dispatcher import dispatcher_env, start_dispatcher
from harness.net import ME_PATH, wait_for
from harness.pgbouncer import PgBouncer, pgbouncer_binary
from harness.receivers import Receiver
from harness.servers import start_gunicorn
from partner_api.db import bind, database, drop_tables

from .conftest import POSTGRES_URL, WEBHOOKS, bearer
from .test_cli import flask

pytestmark = [
    pytest.mark.skipif(not POSTGRES_URL, reason="PARTNER_API_TEST_POSTGRES_URL is not set"),
    pytest.mark.skipif(
        pgbouncer_binary() is None, reason="pgbouncer is not installed (make pgbouncer)"
    ),
]
WORKERS = 3


class Stack:
    """The pooled URL, the API's base URL, and the admin CLI on the pooled URL."""

    def __init__(self, pooled_url: str, base: str):
        self.pooled_url = pooled_url
        self.base = base

    def cli(self, *args: str):
        result = flask(*args, "--json", env={"DATABASE_URL": self.pooled_url})
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return json.loads(result.stdout)

    def call(self, method: str, path: str, token: str, body=None) -> requests.Response:
        """One request; a 5xx answer fails the test there and then."""
        response = requests.request(
            method, self.base + path, json=body, headers=bearer(token), timeout=30
        )
        assert response.status_code < 500, response.text
        return response


@pytest.fixture(scope="module")
def stack():
    bind(POSTGRES_URL)
    drop_tables()  # the only direct connection: a scratch schema, as conftest starts each test
    database.close()
    with tempfile.TemporaryDirectory() as scratch, PgBouncer(POSTGRES_URL) as pooled:
        logs = Path(scratch)
        init = flask("init-db", env={"DATABASE_URL": pooled})
        assert init.returncode == 0, init.stderr
        # As docs/production.md lays it out: LISTEN needs a session, so it goes straight to
        # PostgreSQL; a short poll keeps the test from depending on the wake.
        env = dispatcher_env(
            pooled,
            PARTNER_API_POLL_INTERVAL="0.2",
            PARTNER_API_DISPATCHER_LISTEN_URL=POSTGRES_URL,
        )
        dispatcher_log = logs / "dispatcher.log"
        with open(dispatcher_log, "w") as out:
            dispatcher = start_dispatcher(env, stdout=out)
        api = start_gunicorn(env, logs / "gunicorn.log", workers=WORKERS, config=None)
        try:
            yield Stack(pooled, api.base)
        finally:
            api.stop()
            dispatcher.terminate()
            assert dispatcher.wait(timeout=30) == 0
        for log in (api.log(), dispatcher_log.read_text()):
            assert "Traceback" not in log and "prepared statement" not in log, log[-3000:]


@pytest.fixture(scope="module")
def token(stack) -> str:
    """A key provisioned with the admin CLI through PgBouncer."""
    org = stack.cli("orgs", "create", "Acme")
    key = stack.cli(
        "keys", "create", "--org", org["id"], "--scope", "webhooks:manage", "--rate-limit", "10000"
    )
    return key["token"]


def test_me_answers_every_concurrent_request_through_pgbouncer(stack, token):
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: stack.call("GET", ME_PATH, token), range(400)))
    assert [a.status_code for a in answers] == [200] * 400
    assert {a.json()["org"]["name"] for a in answers} == {"Acme"}
    # Each hit counted once, across workers and server connections: 400 different headrooms
    # (unless the burst straddled a minute's window boundary).
    if len({a.headers["X-RateLimit-Reset"] for a in answers}) == 1:
        assert len({a.headers["X-RateLimit-Remaining"] for a in answers}) == 400


def test_revoked_key_is_refused_at_once_through_pgbouncer(stack):
    org = stack.cli("orgs", "create", "Revoked Inc")
    key = stack.cli("keys", "create", "--org", org["id"])
    assert stack.call("GET", ME_PATH, key["token"]).status_code == 200
    stack.cli("keys", "revoke", key["id"])
    assert stack.call("GET", ME_PATH, key["token"]).status_code == 401


def arrivals(receiver: Receiver) -> list[str]:
    """The event id of every delivery the receiver read, in order."""
    return [json.loads(request["body"])["id"] for request in receiver.requests]


def statuses(page: requests.Response) -> set[str]:
    """The statuses of a page of the delivery log."""
    return {delivery["status"] for delivery in page.json()["data"]}


def test_pings_arrive_and_are_listed_redelivered_replayed_and_counted(stack, token):
    with Receiver() as receiver:
        created = stack.call("POST", WEBHOOKS, token, {"url": receiver.url()})
        assert created.status_code == 201, created.text
        subscription = created.json()
        ping = f"{WEBHOOKS}/{subscription['id']}/test"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            pings = list(
                pool.map(
                    lambda _: stack.call("POST", ping, token, {"secret": subscription["secret"]}),
                    range(40),
                )
            )
        assert [p.status_code for p in pings] == [202] * 40
        events = {p.json()["event_id"] for p in pings}
        assert wait_for(lambda: set(arrivals(receiver)) == events, 30), arrivals(receiver)

        listed = f"{WEBHOOKS}/{subscription['id']}/deliveries?limit=100"
        assert wait_for(lambda: statuses(stack.call("GET", listed, token)) == {"delivered"}, 30)
        delivery = pings[0].json()
        redeliver = f"{WEBHOOKS}/{subscription['id']}/deliveries/{delivery['delivery_id']}"
        assert stack.call("POST", redeliver + "/redeliver", token).status_code == 202
        assert wait_for(lambda: arrivals(receiver).count(delivery["event_id"]) == 2, 30)
        assert wait_for(
            lambda: stack.call("GET", redeliver, token).json()["status"] == "delivered", 30
        )
        replayed = stack.cli("deliveries", "replay", delivery["delivery_id"])
        assert replayed["delivery_id"] == delivery["delivery_id"]
        assert wait_for(lambda: arrivals(receiver).count(delivery["event_id"]) == 3, 30)
        assert wait_for(lambda: stack.cli("stats")["pending"] == 0, 30)

    stats = stack.cli("stats")
    assert stats["delivered_last_hour"] == 40 and stats["dead_lettered"] == 0
    assert stats["dispatcher_stopped"] is False
