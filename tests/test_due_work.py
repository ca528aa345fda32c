"""Cost follows the work due: claims read only the subscriptions whose due_work row is due, and
choose exactly as the full scan of every live subscription did; every lifecycle write keeps
each pending delivery's subscription a row due no later than it; a publish that commits while
a claim settles a row keeps it (PostgreSQL). SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import datetime as dt
import random
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dispatcher.transport import AttemptResult
from harness.seed import idle_subscriptions
from partner_api import db as db_module
from partner_api import provisioning
from partner_api.db import database, write_transaction
from partner_api.delivery import claims, lifecycle, shares
from partner_api.delivery.claims import claim_due_deliveries
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import (
    delete_subscription,
    disable_subscription,
    enable_subscription,
)
from partner_api.models import Delivery, DeliveryStatus, DueWork, Subscription, SubscriptionStatus

POLICY = shares.SharePolicy(senders=6)
OK = AttemptResult(True, 200, None, None, None, 5)
FAILED = AttemptResult(False, 500, "http_status", "receiver answered 500", "oops", 5)

# The claim's query before due_work: every live subscription, each probed for due work. Kept
# here as the oracle the new claim must agree with.
FULL_SCAN_SQL = (
    "SELECT s.id, s.org_id, s.status, s.consecutive_failures, "
    "(SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.subscription_id = s.id "
    "AND d.status = {p} AND d.next_attempt_at <= {p}) "
    "FROM webhook_subscriptions s WHERE s.deleted_at IS NULL"
)


def full_scan_subscribers(now: dt.datetime, known: dict) -> dict[str, shares.Subscriber]:
    """The claim's choice of who has work due as it was, the oldest work first (ties by id)."""
    sql = FULL_SCAN_SQL.format(p=database.param)
    cursor = database.execute_sql(sql, (DeliveryStatus.PENDING, now))
    rows = sorted(
        (row for row in cursor.fetchall() if row[4] is not None), key=lambda r: (str(r[4]), r[0])
    )
    disabled = [row[0] for row in rows if row[2] != SubscriptionStatus.ENABLED]
    if disabled:
        lifecycle.hold_due(disabled, now)
    return {
        sub_id: shares.Subscriber(
            sub_id,
            org_id,
            failing=failures > 0,
            slow=known[sub_id].slow if sub_id in known else False,
            untried=known[sub_id].untried if sub_id in known else True,
        )
        for sub_id, org_id, status, failures, _ in rows
        if status == SubscriptionStatus.ENABLED
    }


def rolled_back(work):
    """What `work()` returns, with everything it wrote undone."""
    with database.atomic() as transaction:
        result = work()
        transaction.rollback()
    return result


def pending_without_a_row_due_in_time() -> list[tuple]:
    """Pending deliveries whose subscription has no due_work row due at or before them."""
    return sql(
        "SELECT d.id, d.subscription_id, d.next_attempt_at, h.due_at FROM deliveries d "
        "LEFT JOIN due_work h ON h.subscription_id = d.subscription_id "
        "WHERE d.status = ? AND (h.due_at IS NULL OR h.due_at > d.next_attempt_at)",
        (DeliveryStatus.PENDING,),
    )


def sql(statement: str, params: tuple = ()) -> list[tuple]:
    return database.execute_sql(statement.replace("?", database.param), params).fetchall()


def test_claims_beside_thousands_of_idle_subscriptions_choose_as_the_full_scan_did(
    config, clock, subscribe, make_key, monkeypatch
):
    rng = random.Random(17)
    orgs = [make_key(org_name=f"org {n}").org.id for n in range(3)]
    busy = [subscribe(orgs[n % 3], f"http://receiver.test:9/busy/{n}") for n in range(8)]
    with database.connection_context():
        idle_subscriptions("idle", orgs[:1], 2500)
        waiting = []  # claims a dispatcher holds without an outcome yet (or that it lost)
        compared = 0
        for round_ in range(14):
            for _ in range(rng.randint(0, 6)):
                sub = rng.choice(busy)
                publish_event(sub.org_id, "vc.test.ping", {"r": round_}, subscription_id=sub.id)
                clock.advance(rng.choice([0, 0, 1]))
            if round_ == 4:
                disable_subscription(busy[1].id)
            if round_ == 7:
                delete_subscription(busy[2].org_id, busy[2].id)
            if round_ == 9:
                enable_subscription(busy[1].id)
            known = {
                sub.id: shares.Subscriber(sub.id, sub.org_id, slow=rng.random() < 0.3)
                for sub in busy
                if rng.random() < 0.7
            }
            running = collections.Counter({sub.id: rng.randint(0, 2) for sub in busy[:3]})
            claimed, chose = claim_as_the_full_scan_would(
                clock.current, known, running, monkeypatch
            )
            compared += chose
            assert pending_without_a_row_due_in_time() == []
            waiting += claimed
            rng.shuffle(waiting)
            done, waiting = waiting[: len(waiting) // 2], waiting[len(waiting) // 2 :]
            outcomes = [(c, OK if rng.random() < 0.6 else FAILED) for c in done]
            lifecycle.record_outcomes(outcomes, config)
            assert pending_without_a_row_due_in_time() == []
            clock.advance(rng.choice([0, 1, 30, 61, 400]))
        assert compared >= 10  # most rounds had work due to choose from
        # What the idle subscriptions cost a claim: nothing in due_work.
        assert DueWork.select().where(DueWork.subscription.startswith("wh_idle")).count() == 0
        assert DueWork.select().count() <= len(busy)


def test_a_claim_moves_a_row_without_due_work_to_the_earliest_pending_or_deletes_it(
    config, clock, subscribe, make_key
):
    org = make_key().org.id
    leased_only, finished = subscribe(org), subscribe(org)
    with database.connection_context():
        for sub in (leased_only, finished):
            publish_event(org, "vc.test.ping", {}, subscription_id=sub.id)
        first = claim_due_deliveries(10, 60, policy=POLICY)
        lifecycle.record_outcomes(
            [(c, OK) for c in first if c.subscription_id == finished.id], config
        )
        rows = {row.subscription_id: row.due_at for row in DueWork.select()}
        assert rows == {leased_only.id: clock.current, finished.id: clock.current}
        assert claim_due_deliveries(10, 60, policy=POLICY) == []
        # The leased delivery counts at its lease's end; the finished one needs no row.
        rows = {row.subscription_id: row.due_at for row in DueWork.select()}
        assert rows == {leased_only.id: clock.current + dt.timedelta(seconds=60)}
        clock.advance(61)
        (again,) = claim_due_deliveries(10, 60, policy=POLICY)  # its dispatcher died
        assert again.subscription_id == leased_only.id and again.attempt == 1


def claim_as_the_full_scan_would(now, known, running, monkeypatch) -> tuple[list, bool]:
    """Claim, after checking that the claim's choice of who has work due, and what it leases,
    are the full scan's on the same rows; returns (the claims, whether anything was due)."""
    expected = rolled_back(lambda: full_scan_subscribers(now, known))
    found = rolled_back(lambda: claims._subscribers_with_work_due(now, known))
    assert list(found.items()) == list(expected.items())

    def claim():
        return claim_due_deliveries(5, 60, policy=POLICY, running=running, known=known, headroom=2)

    with monkeypatch.context() as patch:
        patch.setattr(claims, "_subscribers_with_work_due", full_scan_subscribers)
        as_before = rolled_back(claim)
    claimed = claim()
    assert sorted(c.id for c in claimed) == sorted(c.id for c in as_before)
    return claimed, bool(expected)


# -- the rule every lifecycle write keeps ----------------------------------------------------

STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["publish", "claim", "deliver", "fail", "release", "disable", "enable", "delete"]
            + ["replay", "advance"]
        ),
        st.integers(0, 3),
    ),
    max_size=30,
)
SECONDS = [0, 1, 30, 61, 301, 4000]
LEASE = 600  # longer than the first retry, so a failure makes its delivery due sooner


@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
# The writes that make a delivery due sooner than its row, once a claim has settled the row to a
# lease's end or deleted it: a retry, a release, a replay, an enable.
@example(steps=[("publish", 0), ("claim", 0), ("claim", 0), ("fail", 0)])
@example(steps=[("publish", 1), ("claim", 0), ("claim", 0), ("release", 0)])
@example(steps=[("publish", 2), ("claim", 0), ("deliver", 0), ("claim", 0), ("replay", 2)])
@example(steps=[("publish", 0), ("disable", 0), ("claim", 0), ("enable", 0)])
def test_every_pending_delivery_has_a_row_due_no_later_after_any_lifecycle_write(
    config, clock, subscribe, steps
):
    """Random sequences of everything the lifecycle does to deliveries; after each step every
    pending delivery's subscription has a due_work row due at or before it."""
    with database.connection_context():
        org = provisioning.create_org("property").id
    subs = [subscribe(org, f"http://receiver.test:9/{n}") for n in range(4)]
    held: list = []  # claims leased and not yet recorded
    with database.connection_context():
        for step, n in steps:
            held = _apply(step, n, subs, held, config, clock)
            assert pending_without_a_row_due_in_time() == [], (step, n)
        # And the rows lead somewhere: once everything is due, claims find every pending one.
        clock.advance(10**6)
        while claim_due_deliveries(50, 60, policy=shares.SharePolicy(senders=50)):
            pass
        assert pending_without_a_row_due_in_time() == []
        due = sql(
            "SELECT COUNT(*) FROM deliveries d JOIN webhook_subscriptions s "
            "ON s.id = d.subscription_id WHERE s.status = 'enabled' AND s.deleted_at IS NULL "
            "AND d.status = 'pending' AND d.next_attempt_at <= ?",
            (clock.current,),
        )
        assert due == [(0,)]


def _apply(step: str, n: int, subs: list, held: list, config, clock) -> list:
    """Do one step through the lifecycle's callers; returns the claims still held."""
    sub = subs[n]
    live = Subscription.get_by_id(sub.id).deleted_at is None
    if step == "publish" and live:
        publish_event(sub.org_id, "vc.test.ping", {}, subscription_id=sub.id)
    elif step == "claim":
        held = held + claim_due_deliveries(n + 1, LEASE, policy=POLICY, headroom=2)
    elif step in ("deliver", "fail") and held:
        lifecycle.record_outcomes([(held[0], OK if step == "deliver" else FAILED)], config)
        held = held[1:]
    elif step == "release" and held:
        lifecycle.release(held[: n + 1])
        held = held[n + 1 :]
    elif step == "disable" and live:
        disable_subscription(sub.id)
    elif step == "enable" and live:
        enable_subscription(sub.id)
    elif step == "delete" and live and n == 3:  # rarely: a deleted one takes no more steps
        delete_subscription(sub.org_id, sub.id)
    elif step == "replay" and live:
        with write_transaction():
            finished = [d.id for d in Delivery.select().where(Delivery.subscription == sub.id)]
            lifecycle.replay(finished, Subscription.get_by_id(sub.id), lifecycle.OPERATOR)
    elif step == "advance":
        clock.advance(SECONDS[n] if n < len(SECONDS) else 0)
    return held


# -- PostgreSQL: a publish during a claim's settling keeps its row -----------------------------


@pytest.mark.parametrize("before", ["leased", "delivered"])
def test_a_publish_committed_while_a_claim_settles_keeps_its_row(
    database_url, config, clock, subscribe, make_key, monkeypatch, before
):
    """On PostgreSQL a claim (READ COMMITTED) reads the row, finds nothing due, and settles it;
    a publish on another connection commits in between. The claim must leave the publish's
    row as it is: moved to the lease's end, or deleted, the new delivery would wait or be lost."""
    if not db_module.is_postgres():
        pytest.skip("SQLite's write lock makes a claim and a publish take turns")
    org = make_key().org.id
    sub = subscribe(org)
    with database.connection_context():
        publish_event(org, "vc.test.ping", {}, subscription_id=sub.id)
        (first,) = claim_due_deliveries(1, 60, policy=POLICY)
        if before == "delivered":
            lifecycle.record_outcomes([(first, OK)], config)
    settling, published = threading.Event(), threading.Event()
    execute_sql = database.obj.execute_sql

    def paused_before_settling(sql, params=None):
        if sql.startswith(("UPDATE due_work", "DELETE FROM due_work")):
            settling.set()
            assert published.wait(30)
        return execute_sql(sql, params)

    claimed = []

    def claim_on_its_own_connection():
        with database.connection_context():
            claimed.extend(claim_due_deliveries(1, 60, policy=POLICY))

    monkeypatch.setattr(database.obj, "execute_sql", paused_before_settling)
    claimer = threading.Thread(target=claim_on_its_own_connection)
    claimer.start()
    assert settling.wait(30)
    monkeypatch.setattr(database.obj, "execute_sql", execute_sql)
    with database.connection_context():
        _, (fresh,) = publish_event(org, "vc.test.ping", {}, subscription_id=sub.id)
    published.set()
    claimer.join(30)
    assert not claimer.is_alive() and claimed == []
    with database.connection_context():
        assert pending_without_a_row_due_in_time() == []
        assert DueWork.get_by_id(sub.id).due_at <= clock.current
        (taken,) = claim_due_deliveries(1, 60, policy=POLICY)
    assert taken.id == fresh.id


def _waiting_for_a_lock() -> bool:
    """A session on this database waits for a row lock now (PostgreSQL)."""
    with database.connection_context():
        return sql(
            "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ) != [(0,)]


def claim_while_uncommitted(write, waits_for: str) -> list:
    """Run `write` in a write transaction on a connection of its own and, before it commits,
    a claim on another: the claim must wait for a lock `write` holds (it fails the test if it
    ends first). Once it waits, `write` commits; returns what the claim took."""
    written, commit = threading.Event(), threading.Event()
    claimed = []

    def write_and_hold():
        with database.connection_context(), write_transaction():
            write()
            written.set()
            assert commit.wait(30)

    def claim():
        with database.connection_context():
            claimed.extend(claim_due_deliveries(1, 60, policy=POLICY))

    writer = threading.Thread(target=write_and_hold)
    writer.start()
    assert written.wait(30)
    claimer = threading.Thread(target=claim)
    claimer.start()
    for _ in range(300):  # until the claim waits for a lock the write holds
        if _waiting_for_a_lock() or not claimer.is_alive():
            break
        threading.Event().wait(0.1)
    alive = claimer.is_alive()
    commit.set()
    writer.join(30)
    claimer.join(30)
    assert alive, f"the claim did not wait for the {waits_for}"
    assert not claimer.is_alive()
    return claimed


@pytest.mark.parametrize("before", ["leased", "delivered"])
def test_a_claim_settling_a_row_a_publish_holds_waits_and_keeps_it(
    database_url, config, clock, subscribe, make_key, before
):
    """The other order on PostgreSQL: a publish has written the row and not committed; the
    claim, which cannot see the publish's delivery, waits for the row, and once the publish
    commits leaves it as the publish made it."""
    if not db_module.is_postgres():
        pytest.skip("SQLite's write lock makes a claim and a publish take turns")
    org = make_key().org.id
    sub = subscribe(org)
    with database.connection_context():
        publish_event(org, "vc.test.ping", {}, subscription_id=sub.id)
        (first,) = claim_due_deliveries(1, 60, policy=POLICY)
        if before == "delivered":
            lifecycle.record_outcomes([(first, OK)], config)
    fresh = []

    def publish():
        fresh.extend(publish_event(org, "vc.test.ping", {}, subscription_id=sub.id)[1])

    assert claim_while_uncommitted(publish, "publish") == []
    with database.connection_context():
        assert pending_without_a_row_due_in_time() == []
        (taken,) = claim_due_deliveries(1, 60, policy=POLICY)
    assert taken.id == fresh[0].id


def test_a_claim_meeting_a_subscription_an_enable_is_committing_leaves_its_rows_pending(
    database_url, config, clock, subscribe, make_key
):
    """PostgreSQL: a claim reads a subscription as disabled while an enable of it has not
    committed. Holding the subscription's due rows then would leave them held under an enabled
    subscription for good; the claim waits for the enable instead, and holds nothing."""
    if not db_module.is_postgres():
        pytest.skip("SQLite's write lock makes a claim and an enable take turns")
    org = make_key().org.id
    sub = subscribe(org)
    with database.connection_context():
        publish_event(org, "vc.test.ping", {}, subscription_id=sub.id)
        (leased,) = claim_due_deliveries(1, 60, policy=POLICY)  # its dispatcher then dies
        disable_subscription(sub.id)  # leaves the leased row pending, under its lease
    clock.advance(61)  # the lease ran out: the row is due on a disabled subscription
    claimed = claim_while_uncommitted(
        lambda: lifecycle.enable(Subscription.get_by_id(sub.id)), "enable"
    )
    with database.connection_context():
        assert Delivery.get_by_id(leased.id).status == DeliveryStatus.PENDING
        assert [c.id for c in claimed or claim_due_deliveries(1, 60, policy=POLICY)] == [leased.id]
