"""Idempotency-Key storage: the first answer given to a key of one org and operation, found
again within 24 hours, and expired keys pruned (with the retention job).

The answer is recorded inside the transaction that does the work, so a key never says "done"
without the thing it made, nor the thing exist without its key. The HTTP side (the header, the
replayed response) is partner_api/web/idempotency.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json

from partner_api import clock
from partner_api.db import database
from partner_api.errors import DomainError
from partner_api.models import IdempotencyKey

KEY_LIFETIME = dt.timedelta(hours=24)


@dataclasses.dataclass(frozen=True)
class KeyedRequest:
    """A request that carried an Idempotency-Key: whose, for which operation, and what it asked
    (a hash: the test ping's body holds the signing secret, which is never stored again)."""

    org_id: str
    operation: str
    key: str
    request_hash: str


@dataclasses.dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: dict
    headers: dict


class AnsweredMeanwhile(Exception):
    """Another request with the same key committed its answer first: raised inside the work's
    transaction, so this request's work is rolled back and it answers what the first one did."""


def request_hash(request: dict) -> str:
    """SHA-256 of the request's JSON (keys sorted), so the same request hashes the same however
    its body was spaced or ordered."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _this_key(request: KeyedRequest):
    return (
        (IdempotencyKey.org == request.org_id)
        & (IdempotencyKey.operation == request.operation)
        & (IdempotencyKey.key == request.key)
    )


def stored_answer(request: KeyedRequest) -> StoredAnswer | None:
    """The answer given to this key within the last 24 hours, or None (an older one is as good
    as gone). The same key with another request is `idempotency_key_reused`."""
    since = clock.now() - KEY_LIFETIME
    row = IdempotencyKey.get_or_none(_this_key(request) & (IdempotencyKey.created_at >= since))
    if row is None:
        return None
    if not hmac.compare_digest(row.request_hash, request.request_hash):
        raise DomainError(
            "idempotency_key_reused",
            f"This Idempotency-Key was already used with a different request in the last "
            f"{KEY_LIFETIME.total_seconds() / 3600:.0f} hours; send a new key for a new request.",
            field="Idempotency-Key",
            location="headers",
        )
    return StoredAnswer(row.response_status, row.response_body, row.response_headers)


def record_answer(request: KeyedRequest, answer: StoredAnswer) -> None:
    """Store the answer to `request`; call inside the transaction doing the work. Raises
    AnsweredMeanwhile when a request with the same key got there first: on PostgreSQL the insert
    waits for that one's transaction, on SQLite the write lock already ordered them."""
    now = clock.now()
    # An expired key not yet pruned: the work was just done again, so its answer is the one now.
    IdempotencyKey.delete().where(
        _this_key(request) & (IdempotencyKey.created_at < now - KEY_LIFETIME)
    ).execute()
    insert = IdempotencyKey.insert(
        org=request.org_id,
        operation=request.operation,
        key=request.key,
        request_hash=request.request_hash,
        response_status=answer.status,
        response_body=answer.body,
        response_headers=answer.headers,
        created_at=now,
    ).on_conflict_ignore()
    if database.execute(insert).rowcount != 1:
        raise AnsweredMeanwhile()


def prune_expired(now: dt.datetime) -> int:
    """Delete the keys older than 24 hours (their stored answers included); returns how many."""
    return IdempotencyKey.delete().where(IdempotencyKey.created_at < now - KEY_LIFETIME).execute()
