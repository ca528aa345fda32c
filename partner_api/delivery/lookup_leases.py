"""Caps on the DNS lookups a webhook URL check makes while a partner waits (create, PATCH url):
at most `dns_lookups_per_org` of one org and `dns_lookups_total` in all run at once.

A sync gunicorn worker waits out its lookup (up to the create deadline), so a partner whose DNS
never answers could otherwise hold every worker. Each lookup holds a lease, a row in the
database, so the caps hold across workers and hosts. A lease ends with its lookup; one left by
a process killed mid-lookup stops counting at `expires_at` (the deadline plus a margin). Over a
cap the check is refused at once: 429 `dns_lookups_in_flight` (the org's own lookups) or 503
`dns_lookups_busy` (everyone's), with `retry_after`: when the first lookup in the way ends.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

import peewee

from partner_api import clock, ids
from partner_api.config import Config
from partner_api.db import by_backend, database, write_transaction
from partner_api.delivery.dns import Resolver
from partner_api.errors import DomainError
from partner_api.models import DnsLookupLease

# Past the lookup deadline, time for the request to release its lease.
LEASE_MARGIN_SECONDS = 1.0
log = logging.getLogger(__name__)


def leased_resolver(org_id: str, resolver: Resolver, config: Config) -> Resolver:
    """`resolver`, but each lookup first takes a lease for `org_id` (or is refused) and gives
    it back when the lookup ends: answered, failed, timed out or raised."""

    def resolve(host: str, port: int) -> list[str]:
        lease_id = acquire(org_id, config)
        try:
            return resolver(host, port)
        finally:
            release(lease_id)

    return resolve


def acquire(org_id: str, config: Config) -> str:
    """A new lease for one lookup of `org_id`; raises `DomainError` (with `retry_after`) when
    the org's or everyone's lookups in flight are at their cap."""
    now = clock.now()
    # A read first: a flood of refused checks costs reads, never the write lock.
    _refuse_if_full(org_id, config, _live_leases(now), now)
    with write_transaction():
        by_backend(sqlite=_nothing, postgres=_lock_leases_postgres)()
        # Leases killed workers left: its cost grows with those rows, a handful at most.
        DnsLookupLease.delete().where(DnsLookupLease.expires_at <= now).execute()
        _refuse_if_full(org_id, config, _live_leases(now), now)
        lease_id = ids.new_id("lkp")
        expires_at = now + dt.timedelta(seconds=config.create_dns_timeout + LEASE_MARGIN_SECONDS)
        DnsLookupLease.create(id=lease_id, org_id=org_id, expires_at=expires_at)
    return lease_id


def release(lease_id: str) -> None:
    """End a lease. Should the database fail here, the lease still ends at its expiry."""
    try:
        DnsLookupLease.delete().where(DnsLookupLease.id == lease_id).execute()
    except peewee.DatabaseError as exc:
        log.warning("DNS lookup lease %s not released (it expires on its own): %s", lease_id, exc)


def in_flight(org_id: str | None = None) -> int:
    """Leases counting now (of `org_id`, or of everyone)."""
    return sum(1 for org, _ in _live_leases(clock.now()) if org_id in (None, org))


def _live_leases(now: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """(org_id, expires_at) of every lease still counting. Its cost grows with the rows of the
    table: the lookups in flight (at most `dns_lookups_total`) and the few expired rows a killed
    process left, which the next lease deletes."""
    query = DnsLookupLease.select(DnsLookupLease.org_id, DnsLookupLease.expires_at)
    return list(query.where(DnsLookupLease.expires_at > now).tuples())


def _refuse_if_full(org_id: str, config: Config, leases: list, now: dt.datetime) -> None:
    own = [expires for org, expires in leases if org == org_id]
    if len(own) >= config.dns_lookups_per_org:
        raise DomainError(
            "dns_lookups_in_flight",
            f"This org already has {len(own)} webhook host lookup(s) in flight (the most at "
            "once); retry when one ends.",
            retry_after=_retry_after(own, now, config),
        )
    if len(leases) >= config.dns_lookups_total:
        raise DomainError(
            "dns_lookups_busy",
            "Every webhook host lookup slot is in use; retry shortly.",
            retry_after=_retry_after([expires for _, expires in leases], now, config),
        )


def _retry_after(expiries: list[dt.datetime], now: dt.datetime, config: Config) -> int:
    """Whole seconds until the first of these leases has surely ended, or 1 while it is under a
    second old: a lookup normally takes milliseconds, and only a hung one runs to its expiry."""
    first = min(expiries)
    taken = first - dt.timedelta(seconds=config.create_dns_timeout + LEASE_MARGIN_SECONDS)
    if now - taken < dt.timedelta(seconds=1):
        return 1
    return max(1, math.ceil((first - now).total_seconds()))


def _nothing() -> None:
    """SQLite: write_transaction's BEGIN IMMEDIATE already serialises every lease."""


def _lock_leases_postgres() -> None:
    """PostgreSQL: one lease decision at a time (count, then insert) until commit. A table lock
    lasts only for the transaction, so it is safe behind PgBouncer in transaction mode, and
    plain reads (the first check) never wait for it."""
    database.execute_sql("LOCK TABLE dns_lookup_leases IN SHARE ROW EXCLUSIVE MODE")
