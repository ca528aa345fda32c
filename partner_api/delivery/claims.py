"""Claiming due deliveries and recording what happened to each attempt.

A claim is a lease: it pushes `next_attempt_at` forward by the lease and stamps a fresh
`lease_token`, so several dispatchers never take the same delivery and a dead dispatcher's
deliveries come due again when the lease runs out. Every outcome write is guarded by the token.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import secrets

from partner_api import clock, ids
from partner_api.config import Config
from partner_api.db import database, is_postgres, write_transaction
from partner_api.delivery import retry, shares
from partner_api.delivery.history import hold_pending_deliveries
from partner_api.models import (
    Delivery,
    DeliveryFailure,
    DeliveryStatus,
    Event,
    Subscription,
    SubscriptionStatus,
)

AUTO_DISABLE_REASON = "disabled after {count} consecutive failed delivery attempts"


@dataclasses.dataclass(frozen=True)
class ClaimedDelivery:
    """What one attempt needs, read in the claiming transaction."""

    id: str
    lease_token: str
    attempt: int  # the number of the attempt about to be made, 1-based
    event: Event
    subscription_id: str
    url: str
    secret: str
    org_id: str = ""
    failing: bool = False  # the subscription's last attempt failed


def claim_due_deliveries(
    limit: int,
    lease_seconds: float,
    *,
    policy: shares.SharePolicy | None = None,
    running: collections.Counter | None = None,
    known: dict[str, shares.Subscriber] | None = None,
    headroom: int = 1,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries in one write transaction (BEGIN IMMEDIATE on SQLite,
    SKIP LOCKED on PostgreSQL): find who has work due, choose, lease, load.

    With a `policy`, the choice follows the sharing rules (`shares.choose`) given what is
    `running` per subscription and what the dispatcher `known`s of them (slowness); without,
    oldest first. Within one subscription, oldest first always. Due rows of a disabled
    subscription met on the way are held.
    """
    now = clock.now()
    token = secrets.token_hex(16)
    with write_transaction():
        if policy is None:
            _subscribers_with_work_due(now, {})  # holds what disabled subscriptions have due
            leased = _lease(_oldest_due(None, limit, now), now, lease_seconds, token)
        else:
            leased = _lease_within_shares(
                limit, lease_seconds, now, token, policy, running, known, headroom
            )
        rows = _load(leased)
    return [
        ClaimedDelivery(
            id=delivery_id,
            lease_token=token,
            attempt=attempts + 1,
            event=event,
            subscription_id=subscription_id,
            url=url,
            secret=secret,
            org_id=org_id,
            failing=failures > 0,
        )
        for delivery_id, attempts, subscription_id, org_id, url, secret, failures, event in rows
    ]


def _lease_within_shares(
    limit, lease_seconds, now, token, policy, running, known, headroom
) -> list[str]:
    """Choose by the sharing rules and lease, round after round: a subscription that has
    fewer due rows than it was given leaves its turn to the others."""
    known = known or {}
    due = _subscribers_with_work_due(now, known)
    subscribers = {**known, **due}
    running = collections.Counter(running or {})
    waiting = {sub: limit for sub in due}
    leased: list[str] = []
    while len(leased) < limit and waiting:
        wanted = shares.choose(waiting, subscribers, running, limit - len(leased), policy, headroom)
        if not wanted:
            break
        got = _lease_oldest_due(wanted, now, lease_seconds, token)
        for sub, count in wanted.items():
            mine = got.get(sub, [])
            leased.extend(mine)
            running[sub] += len(mine)
            waiting[sub] = 0 if len(mine) < count else waiting[sub] - len(mine)
        waiting = {sub: n for sub, n in waiting.items() if n > 0}
    return leased


# The claim's statements, written out once: building them with the query builder on every
# claim was a third of the dispatcher's CPU in a profile. `{p}` is the driver's placeholder.
_WORK_DUE_SQL = (
    "SELECT s.id, s.org_id, s.status, s.consecutive_failures, "
    "(SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.subscription_id = s.id "
    "AND d.status = {p} AND d.next_attempt_at <= {p}) "
    "FROM webhook_subscriptions s WHERE s.deleted_at IS NULL"
)
_OLDEST_DUE_SQL = (
    "SELECT id FROM deliveries WHERE {where} status = {p} AND next_attempt_at <= {p} "
    "ORDER BY next_attempt_at LIMIT {p}"
)
_LEASE_SQL = (
    "UPDATE deliveries SET next_attempt_at = {p}, lease_token = {p} "
    "WHERE id IN ({ids}) AND status = {p} AND next_attempt_at <= {p} RETURNING id"
)
_LOAD_SQL = (
    "SELECT d.id, d.attempts, d.subscription_id, s.org_id, s.url, s.secret, "
    "s.consecutive_failures, e.id, e.type, e.data, e.occurred_at "
    "FROM deliveries d JOIN events e ON e.id = d.event_id "
    "JOIN webhook_subscriptions s ON s.id = d.subscription_id "
    "WHERE d.id IN ({ids}) ORDER BY d.next_attempt_at, d.created_at"
)


# attempts + 1 is the claim's attempt: only the lease holder writes, once.
_DELIVERED_SQL = (
    # A finished delivery's next_attempt_at is when it finished (retention counts from it).
    "UPDATE deliveries SET status = {p}, delivered_at = {p}, next_attempt_at = {p}, "
    "attempts = attempts + 1, lease_token = NULL, "
    "response_status = CAST(CASE id {cases} END AS INTEGER), "
    "duration_ms = CAST(CASE id {cases} END AS INTEGER) "
    "WHERE lease_token = {p} AND id IN ({ids}) RETURNING id"
)
_STREAK_ENDED_SQL = (
    "UPDATE webhook_subscriptions SET consecutive_failures = 0 "
    "WHERE id IN ({ids}) AND consecutive_failures <> 0"
)


# PostgreSQL: pick every chosen subscription's oldest due rows and lease them in one round trip.
_LEASE_OLDEST_DUE_PG_SQL = (
    "UPDATE deliveries SET next_attempt_at = %s, lease_token = %s WHERE id IN ("
    "SELECT d.id FROM unnest(%s::text[], %s::int[]) AS wanted (sub, n) CROSS JOIN LATERAL ("
    "SELECT id FROM deliveries WHERE subscription_id = wanted.sub AND status = %s "
    "AND next_attempt_at <= %s ORDER BY next_attempt_at LIMIT wanted.n "
    "FOR UPDATE SKIP LOCKED) AS d) RETURNING id, subscription_id"
)


def _lease_oldest_due(wanted, now: dt.datetime, lease_seconds: float, token: str) -> dict:
    """Lease each subscription's `wanted[sub]` oldest due rows; {subscription: [ids]}. One
    statement on PostgreSQL; on SQLite (in process, the write lock already held) a select per
    subscription and one update."""
    until = now + dt.timedelta(seconds=lease_seconds)
    leased: dict[str, list[str]] = collections.defaultdict(list)
    if is_postgres():
        subs = list(wanted)
        params = [until, token, subs, [wanted[s] for s in subs], DeliveryStatus.PENDING, now]
        for delivery_id, sub in database.execute_sql(_LEASE_OLDEST_DUE_PG_SQL, params):
            leased[sub].append(delivery_id)
        return leased
    picked = {sub: _oldest_due(sub, count, now) for sub, count in wanted.items()}
    every = [delivery_id for chosen in picked.values() for delivery_id in chosen]
    got = set(_lease(every, now, lease_seconds, token))
    for sub, chosen in picked.items():
        leased[sub] = [delivery_id for delivery_id in chosen if delivery_id in got]
    return leased


_STILL_SENDABLE_SQL = (
    "SELECT d.id, d.lease_token FROM deliveries d "
    "JOIN webhook_subscriptions s ON s.id = d.subscription_id "
    "WHERE s.status = {p} AND s.deleted_at IS NULL AND d.id IN ({ids})"
)


def _sql(template: str, count: int = 0, where: str = "") -> str:
    p = database.param
    return template.format(
        p=p,
        ids=", ".join([p] * count),
        cases=" ".join([f"WHEN {p} THEN {p}"] * count),
        where=where.format(p=p),
    )


def _subscribers_with_work_due(now: dt.datetime, known: dict) -> dict[str, shares.Subscriber]:
    """Enabled subscriptions with due deliveries, the oldest work first. One index probe per
    live subscription (deliveries_subscription_due), so the cost follows the number of
    subscriptions, not the backlog. Due rows of disabled ones are held on the way."""
    cursor = database.execute_sql(_sql(_WORK_DUE_SQL), (DeliveryStatus.PENDING, now))
    rows = sorted((row for row in cursor.fetchall() if row[4] is not None), key=lambda r: str(r[4]))
    disabled = [row[0] for row in rows if row[2] != SubscriptionStatus.ENABLED]
    if disabled:
        _hold_due(disabled, now)
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


def _due(now: dt.datetime):
    return (Delivery.status == DeliveryStatus.PENDING) & (Delivery.next_attempt_at <= now)


def _oldest_due(subscription_id: str | None, count: int, now: dt.datetime) -> list[str]:
    """Ids of the `count` oldest due deliveries (of one subscription, unless None); rows
    another dispatcher is claiming right now are skipped, not waited for."""
    where, params = "", [DeliveryStatus.PENDING, now, count]
    if subscription_id is not None:
        where, params = "subscription_id = {p} AND", [subscription_id, *params]
    sql = _sql(_OLDEST_DUE_SQL, where=where)
    if is_postgres():
        sql += " FOR UPDATE SKIP LOCKED"
    return [row[0] for row in database.execute_sql(sql, params).fetchall()]


def _lease(delivery_ids: list[str], now: dt.datetime, lease_seconds: float, token: str):
    """Stamp the lease on those still due; returns the ids leased."""
    if not delivery_ids:
        return []
    until = now + dt.timedelta(seconds=lease_seconds)
    params = [until, token, *delivery_ids, DeliveryStatus.PENDING, now]
    cursor = database.execute_sql(_sql(_LEASE_SQL, len(delivery_ids)), params)
    return [row[0] for row in cursor.fetchall()]


def _load(delivery_ids: list[str]) -> list[ClaimedDelivery]:
    """What the attempts need, in one query (leased under `token`)."""
    if not delivery_ids:
        return []
    cursor = database.execute_sql(_sql(_LOAD_SQL, len(delivery_ids)), delivery_ids)
    return [
        (
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            Event(
                id=row[7],
                type=row[8],
                data=Event.data.python_value(row[9]),
                occurred_at=Event.occurred_at.python_value(row[10]),
            ),
        )
        for row in cursor.fetchall()
    ]


def _hold_due(subscription_ids: list[str], now: dt.datetime) -> None:
    """Due rows left pending on a disabled subscription (e.g. leased by a dispatcher that died):
    hold them like its other deliveries. The subscription is re-read in the statement, so an
    enable that has just committed leaves them pending. (Deleting a subscription cancels every
    open row, leased or not, so no pending row outlives its subscription.)"""
    Delivery.update(status=DeliveryStatus.HELD, lease_token=None).where(
        _due(now)
        & Delivery.subscription.in_(
            Subscription.select(Subscription.id).where(
                Subscription.id.in_(subscription_ids)
                & (Subscription.status == SubscriptionStatus.DISABLED)
                & Subscription.live()
            )
        )
    ).execute()


def still_sendable(claims: list[ClaimedDelivery]) -> list[ClaimedDelivery]:
    """Those claims whose lease still holds and whose subscription is still enabled: a claim
    that waited in a dispatcher's ready queue may have been cancelled, held or re-enabled."""
    if not claims:
        return []
    cursor = database.execute_sql(_sql(_STILL_SENDABLE_SQL, len(claims)), [
        SubscriptionStatus.ENABLED, *(claim.id for claim in claims)
    ])  # fmt: skip
    leases = dict(cursor.fetchall())
    return [claim for claim in claims if leases.get(claim.id) == claim.lease_token]


def release_claims(claims: list[ClaimedDelivery]) -> None:
    """Give leased deliveries back, due now, to be claimed (or held or cancelled) afresh."""
    now = clock.now()
    with write_transaction():
        for claim in claims:
            Delivery.update(next_attempt_at=now, lease_token=None).where(_owned(claim)).execute()


def _owned(claim: ClaimedDelivery):
    return (Delivery.id == claim.id) & (Delivery.lease_token == claim.lease_token)


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
        for claim, result in outcomes:
            if not result.ok:
                failure = _record_failure(claim, result, config, now)
                steps[claim.id] = _next_step(failure)
    return [steps.get(claim.id, "lease_lost") for claim, _ in outcomes]


def _record_delivered(outcomes, now: dt.datetime) -> list[ClaimedDelivery]:
    """Mark delivered (one statement per claim batch), with the answer's status and duration,
    and end the subscriptions' failure streaks; returns the claims whose lease still held.
    `outcomes` are (claim, result) pairs."""
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


def _record_failure(claim: ClaimedDelivery, result, config: Config, now: dt.datetime):
    """Audit a failed attempt, schedule the next one or dead-letter, and auto-disable the
    subscription at the configured streak. None if the lease was lost."""
    next_at = retry.next_attempt_at(claim.attempt, config.retry_schedule, now)
    dead = next_at is None
    updated = (
        Delivery.update(
            status=DeliveryStatus.DEAD_LETTERED if dead else DeliveryStatus.PENDING,
            attempts=claim.attempt,
            next_attempt_at=now if dead else next_at,
            lease_token=None,
        )
        .where(_owned(claim))
        .execute()
    )
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
    _count_failure(claim.subscription_id, now, config.auto_disable_after)
    return failure


def _next_step(failure) -> str:
    if failure is None:
        return "lease_lost"
    if failure.dead_lettered:
        return "dead_lettered"
    return f"retry_at:{clock.isoformat(failure.next_attempt_at)}"


def _count_failure(subscription_id: str, now: dt.datetime, disable_after: int) -> None:
    """One more consecutive failure; at the threshold the subscription is disabled and its
    pending deliveries are held until an operator re-enables it."""
    Subscription.update(consecutive_failures=Subscription.consecutive_failures + 1).where(
        Subscription.id == subscription_id
    ).execute()
    subscription = Subscription.get_by_id(subscription_id)
    enabled = subscription.status == SubscriptionStatus.ENABLED
    if subscription.consecutive_failures < disable_after and enabled:
        return
    if enabled:
        Subscription.update(
            status=SubscriptionStatus.DISABLED,
            disabled_reason=AUTO_DISABLE_REASON.format(count=subscription.consecutive_failures),
            disabled_at=now,
        ).where(Subscription.id == subscription_id).execute()
    # Also when another thread disabled it meanwhile: this delivery was just set pending.
    hold_pending_deliveries(subscription_id)
