"""The claim: which due deliveries a dispatcher takes next, chosen by the sharing rules
(`shares.py`) and leased through the lifecycle, in one write transaction.

A claim is a lease: it pushes `next_attempt_at` forward by the lease and stamps a fresh
`lease_token`, so several dispatchers never take the same delivery and a dead dispatcher's
deliveries come due again when the lease runs out. Every outcome write is guarded by the token
(`lifecycle.record_outcomes`).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import secrets

from partner_api import clock
from partner_api.db import database, write_transaction
from partner_api.delivery import lifecycle, shares
from partner_api.models import Delivery, DeliveryStatus, Event, SubscriptionStatus


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
    attempts_before_replay: int = 0  # the retry schedule counts from here


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
    until = now + dt.timedelta(seconds=lease_seconds)
    token = secrets.token_hex(16)
    with write_transaction():
        if policy is None:
            _subscribers_with_work_due(now, {})  # holds what disabled subscriptions have due
            leased = lifecycle.lease_oldest(limit, now, until, token)
        else:
            leased = _lease_within_shares(
                limit, now, until, token, policy, running, known, headroom
            )
        rows = _load(leased)
    return _claimed(rows, token)


def _claimed(rows: list[tuple], token: str) -> list[ClaimedDelivery]:
    """The claims of the rows `_load` read."""
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
            attempts_before_replay=before_replay,
        )
        for (
            delivery_id,
            attempts,
            subscription_id,
            org_id,
            url,
            secret,
            failures,
            before_replay,
            event,
        ) in rows
    ]


def _lease_within_shares(limit, now, until, token, policy, running, known, headroom) -> list[str]:
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
        got = lifecycle.lease_oldest_due(wanted, now, until, token)
        for sub, count in wanted.items():
            mine = got.get(sub, [])
            leased.extend(mine)
            running[sub] += len(mine)
            waiting[sub] = 0 if len(mine) < count else waiting[sub] - len(mine)
        waiting = {sub: n for sub, n in waiting.items() if n > 0}
    return leased


# The claim's statements, written out once: building them with the query builder on every
# claim was a third of the dispatcher's CPU in a profile. `{p}` is the driver's placeholder.
# Who has work due: the due_work rows due now (a range of due_work_due), each with its
# subscription (by key) and its oldest due delivery (one probe of deliveries_subscription_due).
# Runs on every claim; its cost grows with the subscriptions whose due_work row is due, not
# with all subscriptions nor with the backlog. CROSS JOIN keeps SQLite from starting at the
# subscriptions; PostgreSQL plans it as the inner join it is.
_WORK_DUE_SQL = (
    "SELECT s.id, s.org_id, s.status, s.consecutive_failures, "
    "(SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.subscription_id = s.id "
    "AND d.status = {p} AND d.next_attempt_at <= {p}), "
    "h.version, s.deleted_at "
    "FROM due_work h CROSS JOIN webhook_subscriptions s "
    "WHERE h.due_at <= {p} AND s.id = h.subscription_id"
)
_LOAD_SQL = (
    "SELECT d.id, d.attempts, d.subscription_id, s.org_id, s.url, s.secret, "
    "s.consecutive_failures, d.attempts_before_replay, e.id, e.type, e.data, e.occurred_at "
    "FROM deliveries d JOIN events e ON e.id = d.event_id "
    "JOIN webhook_subscriptions s ON s.id = d.subscription_id "
    "WHERE d.id IN ({ids}) ORDER BY d.next_attempt_at, d.created_at"
)


_STILL_SENDABLE_SQL = (
    "SELECT d.id, d.lease_token FROM deliveries d "
    "JOIN webhook_subscriptions s ON s.id = d.subscription_id "
    "WHERE s.status = {p} AND s.deleted_at IS NULL AND d.id IN ({ids})"
)


def _sql(template: str, count: int = 0) -> str:
    p = database.param
    return template.format(p=p, ids=", ".join([p] * count))


def _subscribers_with_work_due(now: dt.datetime, known: dict) -> dict[str, shares.Subscriber]:
    """Enabled subscriptions with due deliveries, the oldest work first (then by id). Only the
    subscriptions whose due_work row is due are read, so the cost follows the work due, not
    the number of subscriptions nor the backlog. Due rows of disabled ones are held on the way,
    and the due_work rows of subscriptions with nothing to send are settled
    (`lifecycle.settle_due_work`), so each is read again only once it may have work due."""
    cursor = database.execute_sql(_sql(_WORK_DUE_SQL), (DeliveryStatus.PENDING, now, now))
    hinted = cursor.fetchall()
    rows = sorted((row for row in hinted if row[4] is not None), key=lambda r: (str(r[4]), r[0]))
    disabled = [row[0] for row in rows if row[2] != SubscriptionStatus.ENABLED]
    if disabled:
        lifecycle.hold_due(disabled, now)
    rows = [row for row in rows if row[2] == SubscriptionStatus.ENABLED and row[6] is None]
    sendable = {row[0] for row in rows}
    lifecycle.settle_due_work({row[0]: row[5] for row in hinted if row[0] not in sendable})
    return {
        sub_id: shares.Subscriber(
            sub_id,
            org_id,
            failing=failures > 0,
            slow=known[sub_id].slow if sub_id in known else False,
            untried=known[sub_id].untried if sub_id in known else True,
        )
        for sub_id, org_id, _status, failures, *_ in rows
    }


def _load(delivery_ids: list[str]) -> list[tuple]:
    """What the attempts need, in one query (leased under `token`)."""
    if not delivery_ids:
        return []
    cursor = database.execute_sql(_sql(_LOAD_SQL, len(delivery_ids)), delivery_ids)
    return [
        (
            *row[:8],
            Event(
                id=row[8],
                type=row[9],
                data=Event.data.python_value(row[10]),
                occurred_at=Event.occurred_at.python_value(row[11]),
            ),
        )
        for row in cursor.fetchall()
    ]


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


# Uses the deliveries_due index (status, next_attempt_at): one index seek to the first row
# past `now`, whatever the size of the queue.
_NEXT_DUE_SQL = (
    "SELECT next_attempt_at FROM deliveries WHERE status = {p} AND next_attempt_at > {p} "
    "ORDER BY next_attempt_at LIMIT 1"
)


def next_due_after(now: dt.datetime) -> dt.datetime | None:
    """When the next pending delivery comes due after `now` (a retry, or a lease running out),
    or None: the dispatcher polls then if that is sooner than its next poll."""
    cursor = database.execute_sql(_sql(_NEXT_DUE_SQL), (DeliveryStatus.PENDING, now))
    row = cursor.fetchone()
    return None if row is None else Delivery.next_attempt_at.python_value(row[0])
