"""What can happen to a delivery, and to a subscription's delivery state: every write to
`deliveries`, `delivery_failures` and a subscription's status is a function here.

A delivery:

    create ──► pending ──lease──► (in flight) ──delivered──► delivered
                 ▲  │                   │
                 │  │                   ├─failed, retries left──► pending (due later)
                 │  │                   └─failed, last attempt──► dead_lettered
                 │  └─hold (subscription disabled)──► held ──release (enabled)──► pending
                 └──────────── replay (delivered or dead_lettered) ◄──────────────┘
    pending or held ──cancel (subscription deleted)──► cancelled
    delivered, dead_lettered or cancelled, past the retention ──prune──► (gone)

A subscription: enabled ──disable (operator, partner, or a failure streak: auto-disable)──►
disabled ──enable──► enabled; either ──delete──► deleted (its open deliveries cancelled).
Its url, events and description change only through `change_subscription`.

The rules, each stated once here:
- A delivery of a disabled subscription is held, never pending (`_open_status`).
- A finished delivery's `next_attempt_at` is when it finished; retention and `stats` count
  from it (`_finished`).
- A change that makes deliveries due now wakes the dispatchers once it commits
  (`_due_now`); polling finds the rest.
- Every change clears the lease token, so an attempt in flight whose delivery changed under
  it cannot overwrite the new state; an attempt's outcome is written only under its lease.
- Every pending delivery's subscription has a `due_work` row due at or before the delivery
  (`_note_due`, `settle_due_work`): what makes a delivery pending or due sooner lowers it, and
  the claim reads only the rows that are due.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterable

from peewee import fn

from partner_api import clock, ids
from partner_api.config import Config
from partner_api.db import by_backend, database, locked, write_transaction
from partner_api.delivery import retry, wake
from partner_api.models import (
    Delivery,
    DeliveryFailure,
    DeliveryHistory,
    DeliveryStatus,
    Event,
    Subscription,
    SubscriptionStatus,
)

AUTO_DISABLE_REASON = "disabled after {count} consecutive failed delivery attempts"
OPERATOR_DISABLE_REASON = "disabled by an operator"
PARTNER_DISABLE_REASON = "paused by the partner"


def _open_status(subscription_status: str) -> str:
    """Held while its subscription is disabled, pending (due) otherwise."""
    if subscription_status == SubscriptionStatus.ENABLED:
        return DeliveryStatus.PENDING
    return DeliveryStatus.HELD


def _due_now(due: dict[str, dt.datetime]) -> None:
    """Deliveries of these subscriptions were just made pending and due now: their due_work
    rows say so (`_note_due`), and the dispatchers are woken once the transaction commits."""
    if due:
        _note_due(due)
        wake.work_due()


def _finished(status: str, now: dt.datetime) -> dict:
    """The columns of a delivery that has just finished: its `next_attempt_at` is now."""
    return {"status": status, "next_attempt_at": now, "lease_token": None}


# -- create (the outbox) ---------------------------------------------------------------------


def create_deliveries(
    event: Event, subscriptions: Iterable[Subscription], now: dt.datetime
) -> list[Delivery]:
    """One delivery of `event` per subscription, due now (held if the subscription is
    disabled). The caller's transaction also wrote the event: both commit or neither."""
    created = [
        Delivery.create(
            id=ids.new_id("dlv"),
            event=event,
            subscription=subscription,
            status=_open_status(subscription.status),
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for subscription in subscriptions
    ]
    _due_now({d.subscription_id: now for d in created if d.status == DeliveryStatus.PENDING})
    return created


# -- due work: which subscriptions a claim reads ---------------------------------------------

# One row per subscription; both backends run the same statements. A write that may make work
# due sooner lowers due_at (never raises it) and bumps version, which `settle_due_work` checks.
# Runs with every publish and every batch of outcomes: one upsert by primary key (and one
# due_work_due index entry) per subscription touched, whatever the table's size.
_NOTE_DUE_SQL = (
    "INSERT INTO due_work (subscription_id, due_at, version) VALUES {rows} "
    "ON CONFLICT (subscription_id) DO UPDATE SET due_at = CASE WHEN excluded.due_at < "
    "due_work.due_at THEN excluded.due_at ELSE due_work.due_at END, "
    "version = due_work.version + 1"
)
# Per subscription, one probe of deliveries_subscription_due (MIN over an index prefix), so it
# costs the same whatever the subscription's backlog.
_EARLIEST_PENDING_SQL = (
    "SELECT h.subscription_id, (SELECT MIN(d.next_attempt_at) FROM deliveries d "
    "WHERE d.subscription_id = h.subscription_id AND d.status = {p}) "
    "FROM due_work h WHERE h.subscription_id IN ({ids})"
)
_MOVE_DUE_SQL = "UPDATE due_work SET due_at = {p} WHERE subscription_id = {p} AND version = {p}"
_DROP_DUE_SQL = "DELETE FROM due_work WHERE subscription_id = {p} AND version = {p}"


def _note_due(due: dict[str, dt.datetime]) -> None:
    """These subscriptions have a delivery pending from the given time on: make their
    due_work rows due no later than that. In id order, so two writers cannot deadlock."""
    if not due:
        return
    p = database.param
    subs = sorted(due)
    rows = ", ".join([f"({p}, {p}, 1)"] * len(subs))
    params = [value for sub in subs for value in (sub, due[sub])]
    database.execute_sql(_NOTE_DUE_SQL.format(rows=rows), params)


def settle_due_work(read_versions: dict[str, int]) -> None:
    """A claim (in its transaction) found nothing it may send for these subscriptions, whose
    due_work rows it read at `read_versions`: move each row to the subscription's earliest
    pending delivery (a leased one counts at its lease's end), or delete it when none is
    pending. A row whose version moved since was written by something that made work pending
    (a publish, a retry, a release): it is left as that write made it."""
    if not read_versions:
        return
    subs = sorted(read_versions)
    sql = _sql(_EARLIEST_PENDING_SQL, len(subs))
    earliest = dict(database.execute_sql(sql, [DeliveryStatus.PENDING, *subs]).fetchall())
    for sub in subs:  # in id order, like _note_due
        if earliest.get(sub) is None:
            database.execute_sql(_sql(_DROP_DUE_SQL), [sub, read_versions[sub]])
        else:
            database.execute_sql(_sql(_MOVE_DUE_SQL), [earliest[sub], sub, read_versions[sub]])


# -- lease (the claim) -------------------------------------------------------------------------

# Written out once: building them with the query builder on every claim was a third of the
# dispatcher's CPU in a profile. `{p}` is the driver's placeholder.
_LEASE_SQL = (
    "UPDATE deliveries SET next_attempt_at = {p}, lease_token = {p} "
    "WHERE id IN ({ids}) AND status = {p} AND next_attempt_at <= {p} RETURNING id"
)
_OLDEST_DUE_SQL = (
    "SELECT id FROM deliveries WHERE subscription_id = {p} AND status = {p} "
    "AND next_attempt_at <= {p} ORDER BY next_attempt_at LIMIT {p}"
)
# PostgreSQL: pick every chosen subscription's oldest due rows and lease them in one round trip.
_LEASE_OLDEST_DUE_PG_SQL = (
    "UPDATE deliveries SET next_attempt_at = %s, lease_token = %s WHERE id IN ("
    "SELECT d.id FROM unnest(%s::text[], %s::int[]) AS wanted (sub, n) CROSS JOIN LATERAL ("
    "SELECT id FROM deliveries WHERE subscription_id = wanted.sub AND status = %s "
    "AND next_attempt_at <= %s ORDER BY next_attempt_at LIMIT wanted.n "
    "FOR UPDATE SKIP LOCKED) AS d) RETURNING id, subscription_id"
)


def _sql(template: str, count: int = 0) -> str:
    p = database.param
    return template.format(
        p=p, ids=", ".join([p] * count), cases=" ".join([f"WHEN {p} THEN {p}"] * count)
    )


def lease(delivery_ids: list[str], now: dt.datetime, until: dt.datetime, token: str) -> list[str]:
    """Stamp the lease (`token`, invisible to claims until `until`) on those still due; returns
    the ids leased."""
    if not delivery_ids:
        return []
    params = [until, token, *delivery_ids, DeliveryStatus.PENDING, now]
    cursor = database.execute_sql(_sql(_LEASE_SQL, len(delivery_ids)), params)
    return [row[0] for row in cursor.fetchall()]


def lease_oldest_due(
    wanted: dict[str, int], now: dt.datetime, until: dt.datetime, token: str
) -> dict[str, list[str]]:
    """Lease each subscription's `wanted[sub]` oldest due deliveries; {subscription: [ids]}.
    Rows another dispatcher is leasing right now are skipped, not waited for."""
    lease_on = by_backend(sqlite=_lease_oldest_due_sqlite, postgres=_lease_oldest_due_postgres)
    return lease_on(wanted, now, until, token)


def _lease_oldest_due_postgres(wanted, now, until, token) -> dict[str, list[str]]:
    """One statement: the picks lock with SKIP LOCKED."""
    leased: dict[str, list[str]] = collections.defaultdict(list)
    subs = list(wanted)
    params = [until, token, subs, [wanted[s] for s in subs], DeliveryStatus.PENDING, now]
    for delivery_id, sub in database.execute_sql(_LEASE_OLDEST_DUE_PG_SQL, params):
        leased[sub].append(delivery_id)
    return leased


def _lease_oldest_due_sqlite(wanted, now, until, token) -> dict[str, list[str]]:
    """A select per subscription and one update; the write lock (BEGIN IMMEDIATE) is held."""
    sql = _sql(_OLDEST_DUE_SQL)
    picked = {
        sub: [
            row[0] for row in database.execute_sql(sql, [sub, DeliveryStatus.PENDING, now, count])
        ]
        for sub, count in wanted.items()
    }
    got = set(lease([d for chosen in picked.values() for d in chosen], now, until, token))
    return {sub: [d for d in chosen if d in got] for sub, chosen in picked.items()}


def lease_oldest(limit: int, now: dt.datetime, until: dt.datetime, token: str) -> list[str]:
    """Lease the `limit` oldest due deliveries of any enabled subscription (no sharing rules:
    tools and tests)."""
    query = (
        Delivery.select(Delivery.id)
        .where((Delivery.status == DeliveryStatus.PENDING) & (Delivery.next_attempt_at <= now))
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    )
    found = [row[0] for row in locked(query, "FOR UPDATE SKIP LOCKED").tuples()]
    return lease(found, now, until, token)


def release(claims: Iterable) -> None:
    """Give leased deliveries back, due now, to be claimed (or held or cancelled) afresh.
    `claims` have `.id`, `.lease_token` and `.subscription_id`."""
    now = clock.now()
    with write_transaction():
        released = set()
        for claim in claims:
            if (
                Delivery.update(next_attempt_at=now, lease_token=None)
                .where(_owned(claim))
                .execute()
            ):
                released.add(claim.subscription_id)
        _note_due(dict.fromkeys(released, now))


def _owned(claim):
    return (Delivery.id == claim.id) & (Delivery.lease_token == claim.lease_token)


# -- outcomes: delivered, failed → retry or dead-letter, auto-disable --------------------------

# attempts + 1 is the claim's attempt: only the lease holder writes, once.
_DELIVERED_SQL = (
    "UPDATE deliveries SET status = {p}, delivered_at = {p}, next_attempt_at = {p}, "
    "attempts = attempts + 1, lease_token = NULL, "
    "response_status = CAST(CASE id {cases} END AS INTEGER), "
    "duration_ms = CAST(CASE id {cases} END AS INTEGER) "
    "WHERE lease_token = {p} AND id IN ({ids}) RETURNING id"
)
_STREAK_ENDED_SQL = (
    "UPDATE webhook_subscriptions SET consecutive_failures = 0, failing_since = NULL "
    "WHERE id IN ({ids}) AND consecutive_failures <> 0"
)


def record_outcomes(outcomes, config: Config) -> list[str]:
    """Record many attempts' outcomes in one write transaction; for each, what happens next:
    `delivered`, `retry_at:<time>`, `dead_lettered` or `lease_lost` (another dispatcher owns
    the delivery now, and records its own attempt). `outcomes` are (claim, result) pairs."""
    now = clock.now()
    steps: dict[str, str] = {}
    with write_transaction():
        delivered = [(claim, result) for claim, result in outcomes if result.ok]
        for claim in _record_delivered(delivered, now):
            steps[claim.id] = "delivered"
        # By subscription: each failure updates its subscription's row, and two dispatchers
        # taking those row locks in one order cannot deadlock each other.
        failed = sorted(
            ((claim, result) for claim, result in outcomes if not result.ok),
            key=lambda outcome: outcome[0].subscription_id,
        )
        retries: dict[str, dt.datetime] = {}
        for claim, result in failed:
            failure = _record_failure(claim, result, config, now)
            steps[claim.id] = _next_step(failure)
            if failure is not None and not failure.dead_lettered:
                sub = claim.subscription_id
                retries[sub] = min(
                    failure.next_attempt_at, retries.get(sub, failure.next_attempt_at)
                )
        _note_due(retries)  # last, after every delivery row: one lock order with the claim
    return [steps.get(claim.id, "lease_lost") for claim, _ in outcomes]


def _record_delivered(outcomes, now: dt.datetime) -> list:
    """Mark delivered (one statement per claim batch), with the answer's status and duration,
    and end the subscriptions' failure streaks; returns the claims whose lease still held.
    The SET clause is `_finished(DELIVERED, now)` written out, plus the attempt's answer."""
    by_token = collections.defaultdict(list)
    for claim, result in outcomes:
        by_token[claim.lease_token].append((claim, result))
    done = []
    for token, group in by_token.items():
        statuses = [v for claim, result in group for v in (claim.id, result.status_code)]
        durations = [v for claim, result in group for v in (claim.id, result.duration_ms)]
        params = [DeliveryStatus.DELIVERED, now, now, *statuses, *durations, token]
        params += [claim.id for claim, _ in group]
        cursor = database.execute_sql(_sql(_DELIVERED_SQL, len(group)), params)
        updated = {row[0] for row in cursor.fetchall()}
        done.extend(claim for claim, _ in group if claim.id in updated)
    streaks = sorted({claim.subscription_id for claim in done})
    if streaks:
        database.execute_sql(_sql(_STREAK_ENDED_SQL, len(streaks)), streaks)
    return done


def _record_failure(claim, result, config: Config, now: dt.datetime):
    """Audit a failed attempt, schedule the next one or dead-letter, and count the failure
    towards auto-disable. None if the lease was lost."""
    # Since the last replay, the schedule starts again; the attempt's number keeps counting.
    in_round = claim.attempt - claim.attempts_before_replay
    next_at = retry.next_attempt_at(in_round, config.retry_schedule, now)
    dead = next_at is None
    columns = (
        _finished(DeliveryStatus.DEAD_LETTERED, now)
        if dead
        else {"status": DeliveryStatus.PENDING, "next_attempt_at": next_at, "lease_token": None}
    )
    updated = Delivery.update(attempts=claim.attempt, **columns).where(_owned(claim)).execute()
    if not updated:
        return None
    failure = DeliveryFailure.create(
        id=ids.new_id("att"),
        delivery=claim.id,
        subscription=claim.subscription_id,
        event=claim.event.id,
        event_type=claim.event.type,
        attempt=claim.attempt,
        attempted_at=now,
        duration_ms=result.duration_ms,
        error_kind=result.error_kind,
        error_message=result.error_message or result.error_kind,
        response_status=result.status_code,
        response_excerpt=result.response_excerpt,
        next_attempt_at=next_at,
        dead_lettered=dead,
    )
    _count_failure(claim.subscription_id, now, config)
    return failure


def _next_step(failure) -> str:
    if failure is None:
        return "lease_lost"
    if failure.dead_lettered:
        return "dead_lettered"
    return f"retry_at:{clock.isoformat(failure.next_attempt_at)}"


def _count_failure(subscription_id: str, now: dt.datetime, config: Config) -> None:
    """One more consecutive failure (the streak's first one stamps `failing_since`); the
    subscription is auto-disabled once the streak is long enough (`_streak_disables`)."""
    [subscription] = list(
        Subscription.update(
            consecutive_failures=Subscription.consecutive_failures + 1,
            failing_since=fn.COALESCE(Subscription.failing_since, now),
        )
        .where(Subscription.id == subscription_id)
        .returning(Subscription)
        .execute()
    )  # one round trip: the row as updated
    enabled = subscription.status == SubscriptionStatus.ENABLED
    if enabled and not _streak_disables(subscription, now, config):
        return
    if enabled:
        reason = AUTO_DISABLE_REASON.format(count=subscription.consecutive_failures)
        _set_disabled(subscription_id, reason, now)
    # Also when another thread disabled it meanwhile: this delivery was just set pending.
    hold(subscription_id)


def _streak_disables(subscription: Subscription, now: dt.datetime, config: Config) -> bool:
    """The auto-disable rule: PARTNER_API_AUTO_DISABLE_AFTER consecutive failed attempts, and
    the streak began at least PARTNER_API_AUTO_DISABLE_MIN_SECONDS ago (0: the count alone).
    A receiver down for a short deploy is retried, not disabled."""
    if subscription.consecutive_failures < config.auto_disable_after:
        return False
    lasted = now - (subscription.failing_since or now)
    return lasted >= dt.timedelta(seconds=config.auto_disable_min_seconds)


# -- hold, release, cancel: a subscription's state changes ----------------------------------


def hold(subscription_id: str) -> int:
    """The subscription is disabled: park its pending deliveries where claims never look.

    Deliveries in flight keep their lease, so their outcome is still recorded; the outcome
    writer (or the next claim, if their dispatcher died) holds them afterwards.
    """
    return (
        Delivery.update(status=DeliveryStatus.HELD)
        .where(
            (Delivery.subscription == subscription_id)
            & (Delivery.status == DeliveryStatus.PENDING)
            & Delivery.lease_token.is_null()
        )
        .execute()
    )


def hold_due(subscription_ids: list[str], now: dt.datetime) -> None:
    """Due rows a claim met on disabled subscriptions (e.g. leased by a dispatcher that died):
    hold them like their other deliveries. The subscriptions are read again and locked first
    (FOR SHARE on PostgreSQL), so an enable either commits before (its subscription is enabled
    and its rows stay pending) or waits for this claim (and then releases what it held).
    (Deleting a subscription cancels every open row, leased or not, so no pending row outlives
    its subscription.)"""
    still_disabled = [
        sub.id
        for sub in locked(
            Subscription.select(Subscription.id).where(
                Subscription.id.in_(subscription_ids)
                & (Subscription.status == SubscriptionStatus.DISABLED)
                & Subscription.live()
            ),
            "FOR SHARE",
        )
    ]
    if not still_disabled:
        return
    Delivery.update(status=DeliveryStatus.HELD, lease_token=None).where(
        (Delivery.status == DeliveryStatus.PENDING)
        & (Delivery.next_attempt_at <= now)
        & Delivery.subscription.in_(still_disabled)
    ).execute()


def release_held(subscription_id: str) -> int:
    """The subscription is enabled again: its held deliveries are due now."""
    now = clock.now()
    released = (
        Delivery.update(status=DeliveryStatus.PENDING, next_attempt_at=now, lease_token=None)
        .where(
            (Delivery.subscription == subscription_id) & (Delivery.status == DeliveryStatus.HELD)
        )
        .execute()
    )
    if released:
        _due_now({subscription_id: now})
    return released


def cancel_open(subscription_id: str) -> int:
    """The subscription is gone: nothing pending or held will ever be sent."""
    return (
        Delivery.update(**_finished(DeliveryStatus.CANCELLED, clock.now()))
        .where(
            (Delivery.subscription == subscription_id) & Delivery.status.in_(DeliveryStatus.OPEN)
        )
        .execute()
    )


def _set_disabled(subscription_id: str, reason: str, now: dt.datetime) -> None:
    Subscription.update(
        status=SubscriptionStatus.DISABLED, disabled_reason=reason, disabled_at=now
    ).where(Subscription.id == subscription_id).execute()


def disable(subscription: Subscription, reason: str = OPERATOR_DISABLE_REASON) -> None:
    """Disable a live subscription (in the caller's write transaction): its pending
    deliveries are held until it is enabled. A disabled one keeps its first reason."""
    if subscription.status != SubscriptionStatus.ENABLED:
        return
    _set_disabled(subscription.id, reason, clock.now())
    hold(subscription.id)


def enable(subscription: Subscription) -> None:
    """Enable a live subscription (in the caller's write transaction): its failure streak
    starts again from 0 and its held deliveries are due now."""
    Subscription.update(
        status=SubscriptionStatus.ENABLED,
        disabled_reason=None,
        disabled_at=None,
        consecutive_failures=0,
        failing_since=None,
    ).where(Subscription.id == subscription.id).execute()
    release_held(subscription.id)


# What a partner may change in place; the id, the secret and the delivery state stay.
CHANGEABLE = frozenset({"url", "events", "description"})


def change_subscription(subscription: Subscription, **fields) -> None:
    """Change a live subscription's `url`, `events` or `description` (in the caller's write
    transaction, values already checked). Its open deliveries stay as they are: they go to
    the new URL when claimed, and an event type no longer subscribed is still delivered."""
    unknown = set(fields) - CHANGEABLE
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    if fields:
        Subscription.update(**fields).where(Subscription.id == subscription.id).execute()


def delete(subscription: Subscription) -> None:
    """Delete a live subscription (in the caller's write transaction) and cancel its pending
    and held deliveries, so none is ever sent."""
    Subscription.update(deleted_at=clock.now()).where(Subscription.id == subscription.id).execute()
    cancel_open(subscription.id)


# -- replay ----------------------------------------------------------------------------------

REPLAYABLE = (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD_LETTERED)
OPERATOR, PARTNER = "operator", "partner"  # who replayed a delivery


def replay(
    delivery_ids: list[str], subscription: Subscription, actor: str, statuses=REPLAYABLE
) -> int:
    """Make these finished deliveries of `subscription` due again (held while it is
    disabled), and record who replayed them; returns how many. Attempt numbers keep counting
    and every earlier attempt stays in the history; the retry schedule starts again."""
    if actor not in (OPERATOR, PARTNER):
        raise ValueError(f"unknown actor {actor!r}")
    now = clock.now()
    which = (
        Delivery.id.in_(delivery_ids)
        & (Delivery.subscription == subscription.id)
        & Delivery.status.in_(statuses)
    )
    history = _successes_kept(which)
    replayed = list(
        Delivery.update(
            status=_open_status(subscription.status),
            attempts_before_replay=Delivery.attempts,
            next_attempt_at=now,
            lease_token=None,
            delivered_at=None,
            response_status=None,
            duration_ms=None,
        )
        .where(which)
        .returning(Delivery.id, Delivery.attempts)
        .tuples()
        .execute()
    )
    history += [
        _history_row(delivery_id, DeliveryHistory.REPLAYED, now, attempts, actor=actor)
        for delivery_id, attempts in replayed
    ]
    if history:
        DeliveryHistory.insert_many(history).execute()
    if replayed and _open_status(subscription.status) == DeliveryStatus.PENDING:
        _due_now({subscription.id: now})
    return len(replayed)


def _successes_kept(which) -> list[dict]:
    """History rows for the delivered ones among `which`: the row holds only its latest success
    (failed attempts are in the failure audit), kept before the row is sent again."""
    return [
        _history_row(
            row.id,
            DeliveryHistory.DELIVERED,
            row.delivered_at,
            row.attempts,
            response_status=row.response_status,
            duration_ms=row.duration_ms,
        )
        for row in Delivery.select().where(which & (Delivery.status == DeliveryStatus.DELIVERED))
    ]


def _history_row(
    delivery_id, kind, at, attempt, response_status=None, duration_ms=None, actor=None
):
    """One delivery_history row, every column named (a multi-row insert takes its columns from
    the first row)."""
    return {
        "id": ids.new_id("hst"),
        "delivery": delivery_id,
        "kind": kind,
        "at": at,
        "attempt": attempt,
        "response_status": response_status,
        "duration_ms": duration_ms,
        "actor": actor,
    }


# -- prune -----------------------------------------------------------------------------------


def prune_finished(status: str, cutoff: dt.datetime, batch_size: int) -> tuple[int, int]:
    """One transaction: delete up to `batch_size` deliveries of a finished `status` that
    finished before `cutoff`, and their audit rows; returns (deliveries, audit rows)."""
    if status not in DeliveryStatus.FINISHED:
        raise ValueError(f"{status!r} is not a finished status")
    with write_transaction():
        # (status, next_attempt_at) is the deliveries_due index: no scan of live rows.
        query = (
            Delivery.select(Delivery.id)
            .where((Delivery.status == status) & (Delivery.next_attempt_at < cutoff))
            .limit(batch_size)
        )
        # A replay holding one of these rows keeps it; other pruners take other rows.
        found = [row[0] for row in locked(query, "FOR UPDATE SKIP LOCKED").tuples()]
        if not found:
            return 0, 0
        failures = DeliveryFailure.delete().where(DeliveryFailure.delivery.in_(found)).execute()
        DeliveryHistory.delete().where(DeliveryHistory.delivery.in_(found)).execute()
        deleted = Delivery.delete().where(Delivery.id.in_(found)).execute()
    return deleted, failures
