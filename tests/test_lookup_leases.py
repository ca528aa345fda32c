"""The caps on DNS lookups in flight for webhook URL checks: the lease bookkeeping (taken only
while a lookup runs, given back however it ends, expiring when its process died) and the
answers over a cap, on both backends."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import socket
import threading

import pytest

from partner_api.db import database
from partner_api.delivery import lookup_leases
from partner_api.delivery.dns import resolver_with_deadline
from partner_api.errors import DomainError
from partner_api.models import DnsLookupLease, Subscription

from .conftest import (
    WEBHOOKS,
    assert_problem,
    bearer,
    count,
    create,
    created,
)

DEADLINE = 5.0  # the default create_dns_timeout
EXPIRY = DEADLINE + lookup_leases.LEASE_MARGIN_SECONDS


@pytest.fixture
def caps(config):
    """The configuration with the shipped caps: 1 lookup per org, 2 in all."""
    return dataclasses.replace(config, dns_lookups_per_org=1, dns_lookups_total=2)


def refusal(org_id, config) -> DomainError:
    with pytest.raises(DomainError) as caught:
        lookup_leases.acquire(org_id, config)
    return caught.value


def test_a_lookup_holds_a_lease_only_while_it_runs(db, caps):
    seen = []

    def resolver(host, port):
        seen.append((lookup_leases.in_flight("org_a"), lookup_leases.in_flight()))
        return ["93.184.216.34"]

    resolve = lookup_leases.leased_resolver("org_a", resolver, caps)
    assert resolve("hooks.example.com", 443) == ["93.184.216.34"]
    assert seen == [(1, 1)]
    assert lookup_leases.in_flight() == 0 and count(DnsLookupLease) == 0


@pytest.mark.parametrize(
    "failure",
    [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), RuntimeError("bug")],
    ids=["lookup_fails", "resolver_raises"],
)
def test_the_lease_is_given_back_when_the_lookup_fails_or_raises(db, caps, failure):
    def resolver(host, port):
        assert lookup_leases.in_flight("org_a") == 1
        raise failure

    with pytest.raises(type(failure)):
        lookup_leases.leased_resolver("org_a", resolver, caps)("hooks.example.com", 443)
    assert count(DnsLookupLease) == 0


def test_the_lease_is_given_back_when_the_lookup_runs_past_its_deadline(db, caps):
    answer = threading.Event()

    def hanging(host, port):
        answer.wait(10)
        return ["93.184.216.34"]

    resolve = lookup_leases.leased_resolver("org_a", resolver_with_deadline(hanging, 0.1), caps)
    try:
        with pytest.raises(TimeoutError):
            resolve("hooks.example.com", 443)
        assert count(DnsLookupLease) == 0  # the lookup still runs; the worker is free again
    finally:
        answer.set()


def test_an_org_at_its_cap_is_refused_with_the_seconds_until_its_lookup_ends(db, caps, clock):
    lookup_leases.acquire("org_a", caps)
    first = refusal("org_a", caps)
    # A lookup under a second old is most likely a normal one, ending in milliseconds...
    assert (first.code, first.retry_after) == ("dns_lookups_in_flight", 1)
    clock.advance(1)
    # ...an older one may be hung: it has surely ended by its lease's expiry.
    assert refusal("org_a", caps).retry_after == EXPIRY - 1
    clock.advance(3)
    assert refusal("org_a", caps).retry_after == EXPIRY - 4
    clock.advance(EXPIRY - 4 - 0.5)
    assert refusal("org_a", caps).retry_after == 1  # never 0: "retry now" would be wrong
    assert count(DnsLookupLease) == 1  # a refusal writes nothing


def test_another_org_still_gets_a_lookup_until_every_slot_is_taken(db, caps):
    held = lookup_leases.acquire("org_a", caps)
    lookup_leases.acquire("org_b", caps)  # org_a's hung lookup costs org_b nothing
    busy = refusal("org_c", caps)
    assert (busy.code, busy.retry_after) == ("dns_lookups_busy", 1)
    lookup_leases.release(held)
    lookup_leases.acquire("org_c", caps)
    assert lookup_leases.in_flight() == 2


def test_a_lease_left_by_a_killed_process_expires(db, caps, clock):
    lookup_leases.acquire("org_a", caps)  # never released: its worker was killed mid-lookup
    lookup_leases.acquire("org_b", caps)
    clock.advance(EXPIRY - 0.001)
    assert refusal("org_a", caps).code == "dns_lookups_in_flight"
    clock.advance(0.001)
    assert lookup_leases.in_flight() == 0
    lookup_leases.acquire("org_a", caps)
    assert count(DnsLookupLease) == 1  # the next lease deleted the expired ones


def test_the_total_cap_holds_when_workers_race_for_the_last_slots(app, caps):
    racing = dataclasses.replace(caps, dns_lookups_per_org=100, dns_lookups_total=3)
    start = threading.Barrier(12)

    def take(n: int) -> str:
        start.wait()
        with database.connection_context():
            try:
                return lookup_leases.acquire(f"org_{n}", racing) and "leased"
            except DomainError as refused:
                return refused.code

    for _round in range(3):  # a race: several rounds give a missing lock several chances
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(take, range(12)))
        assert sorted(outcomes) == ["dns_lookups_busy"] * 9 + ["leased"] * 3
        assert count(DnsLookupLease) == 3
        with database.connection_context():
            DnsLookupLease.delete().execute()


# --- the answers, through the API ---------------------------------------------------------------


@pytest.fixture
def stalled(make_app, caps):
    """An app whose lookups of `stalled.example.com` wait until `.answer` is set, and a way to
    start a create for it in the background (`.start(token, **headers)`, returning its future
    once the lookup runs)."""

    class Stalled:
        answer = threading.Event()
        calls = threading.Semaphore(0)

        def resolver(self, host, port):
            if host == "stalled.example.com":
                self.calls.release()
                self.answer.wait(10)
            return ["93.184.216.34"]

    stall = Stalled()
    stall.app = make_app(dns_lookups_per_org=1, dns_lookups_total=2, resolver=stall.resolver)
    pool = concurrent.futures.ThreadPoolExecutor(4)

    def start(token, **headers):
        client = stall.app.test_client()
        body = {"url": "https://stalled.example.com/hook"}
        future = pool.submit(client.post, WEBHOOKS, json=body, headers=bearer(token) | headers)
        assert stall.calls.acquire(timeout=10), "the create never reached its lookup"
        return future

    stall.start = start
    yield stall
    stall.answer.set()
    pool.shutdown()


def test_a_create_over_its_orgs_cap_answers_429_at_once_and_another_org_is_served(
    stalled, make_key
):
    hung_org, other_org = make_key(), make_key(org_name="Other")
    client = stalled.app.test_client()
    own = created(client, hung_org.token)
    waiting = stalled.start(hung_org.token)

    over = create(client, hung_org.token)
    body = assert_problem(over, 429, "dns_lookups_in_flight")
    assert 1 <= int(over.headers["Retry-After"]) <= EXPIRY and "X-RateLimit-Limit" in over.headers
    assert "lookup" in body["detail"]
    patched = client.patch(
        f"{WEBHOOKS}/{own['id']}",
        json={"url": "https://other.example.com/"},
        headers=bearer(hung_org.token),
    )
    assert_problem(patched, 429, "dns_lookups_in_flight")
    unchanged = client.get(f"{WEBHOOKS}/{own['id']}", headers=bearer(hung_org.token))
    assert unchanged.json["url"] == own["url"]
    created(client, other_org.token)  # the hung lookup costs the other org nothing

    stalled.answer.set()
    assert waiting.result(timeout=10).status_code == 201
    assert created(client, hung_org.token)["url"] == "https://hooks.example.com/partner-api"


def test_a_create_or_patch_when_every_slot_is_taken_answers_503_at_once(stalled, make_key):
    first, second, third = (make_key(org_name=name) for name in ("A", "B", "C"))
    client = stalled.app.test_client()
    made = created(client, third.token)
    waiting = [stalled.start(first.token), stalled.start(second.token)]

    over = create(client, third.token)
    assert_problem(over, 503, "dns_lookups_busy")
    assert 1 <= int(over.headers["Retry-After"]) <= EXPIRY
    patched = client.patch(
        f"{WEBHOOKS}/{made['id']}",
        json={"url": "https://other.example.com/"},
        headers=bearer(third.token),
    )
    assert_problem(patched, 503, "dns_lookups_busy")
    assert count(Subscription) == 1  # nothing changed

    stalled.answer.set()
    assert [future.result(timeout=10).status_code for future in waiting] == [201, 201]
    assert count(DnsLookupLease) == 0


def test_a_retry_refused_while_the_first_request_resolves_gets_the_first_answer(stalled, make_key):
    partner = make_key()
    key = {"Idempotency-Key": "create-1"}
    body = {"url": "https://stalled.example.com/hook"}
    client = stalled.app.test_client()
    first = stalled.start(partner.token, **key)

    early = client.post(WEBHOOKS, json=body, headers=bearer(partner.token) | key)
    assert_problem(early, 429, "dns_lookups_in_flight")

    stalled.answer.set()
    made = first.result(timeout=10)
    assert made.status_code == 201
    again = client.post(WEBHOOKS, json=body, headers=bearer(partner.token) | key)
    assert again.status_code == 201 and again.json == made.json
    assert count(Subscription) == 1
