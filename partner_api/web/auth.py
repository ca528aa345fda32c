"""Bearer-token authentication, scope checks and rate limiting for API views.

`require_scope` is the only way a view is protected: authenticate, count the hit, check the scope.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import secrets

from flask import current_app, g, request

from partner_api import clock, tokens
from partner_api.db import by_backend, database
from partner_api.models import ApiKey
from partner_api.web import ratelimit
from partner_api.web.problems import ApiError

LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
_CHALLENGE = 'Bearer realm="partner-api"'
# The exact grammar (RFC 9110 11.4, 5.5): `auth-scheme 1*SP token68`, with only SP/HTAB as
# optional whitespace around the value. str.strip() would also drop NBSP, NEL and other
# Unicode spaces, accepting headers that no other HTTP component reads the same way.
_CREDENTIALS = re.compile(
    r"[ \t]*(?P<scheme>[!#$%&'*+.^_`|~0-9A-Za-z-]+) +(?P<token>[0-9A-Za-z._~+/-]+=*)[ \t]*"
)


def _unauthorized(code: str, detail: str) -> ApiError:
    challenge = (
        _CHALLENGE
        if code == "authentication_required"
        else (f'{_CHALLENGE}, error="invalid_token"')
    )
    return ApiError(401, code, detail, headers={"WWW-Authenticate": challenge})


# Statements written once per backend: building them with peewee on every request cost as much
# as running them. The lookup brings the key, its org and the stored count of the current
# window in one round trip; on PostgreSQL the same statement also counts the request (unless the
# key is revoked or its window already exhausted), so a request needs one round trip in all.
_SELECT_KEY = (
    "SELECT k.id, k.org_id, o.name AS org_name, k.name, k.prefix, k.token_hash, k.scopes, "
    "k.rate_limit, k.created_at, k.last_used_at, k.revoked_at, "
    "CASE WHEN w.window_start = {window_param} THEN w.hits ELSE 0 END AS stored_hits "
    "FROM api_keys k JOIN orgs o ON o.id = k.org_id "
    "LEFT JOIN rate_limit_windows w ON w.key_id = k.id "
    "WHERE k.token_hash = {hash_param}"
)
# Public: bench/targets/db_floor.py sends these very statements with the driver directly.
LOOKUP_SQLITE = _SELECT_KEY.format(window_param=":window", hash_param=":token_hash")
# A plain parametrised statement, planned by the server on each run: a session-level PREPARE
# would not exist on the next transaction's server connection behind PgBouncer in transaction
# mode, and psycopg2 has no protocol-level statement cache. Runs on every request; its cost is
# that planning (about 0.25 ms, the same for any data) plus unique-index lookups by token hash
# and key id, so it does not grow with the number of keys or requests.
LOOKUP_AND_COUNT_POSTGRES = (
    "WITH key AS ("
    + _SELECT_KEY.format(window_param="%(window)s", hash_param="%(token_hash)s")
    + "), hit AS ("
    + ratelimit.upsert_sql(
        f"SELECT key.id, %(window)s, 1 FROM key, {ratelimit.ASYNC_COMMIT} "
        "WHERE key.revoked_at IS NULL AND key.stored_hits <= COALESCE(key.rate_limit, %(limit)s)"
    )
    + ") SELECT key.*, (SELECT hits FROM hit) FROM key"
)


@dataclasses.dataclass(slots=True)
class Caller:
    """The key a request presented, its org, and its current rate-limit window.

    A plain record, not the ApiKey model: building two peewee models per request cost more than
    the SQLite lookup itself."""

    key_id: str
    org_id: str
    org_name: str
    name: str
    prefix: str
    token_hash: str
    scopes: list[str]
    rate_limit: int | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    stored_hits: int  # the window's count before this request
    counted_hits: int | None = None  # the count including this request, when the lookup counted it


def find_caller(token_hash: str, window: int, default_limit: int) -> Caller | None:
    """The key (revoked or not) with this token hash, its org attached, or None."""
    lookup = by_backend(sqlite=_lookup_sqlite, postgres=_lookup_and_count_postgres)
    rows = lookup(token_hash, window, default_limit)
    if not rows:
        return None
    row = rows[0]
    (key_id, org_id, org_name, name, prefix, stored_hash, scopes, rate_limit) = row[:8]
    created_at, last_used_at, revoked_at, stored_hits, *counted = row[8:]
    return Caller(
        key_id,
        org_id,
        org_name,
        name,
        prefix,
        stored_hash,
        scopes.split(),
        rate_limit,
        _datetime(created_at),
        _datetime(last_used_at),
        _datetime(revoked_at),
        stored_hits,
        counted[0] if counted else None,
    )


def _lookup_sqlite(token_hash: str, window: int, default_limit: int) -> list[tuple]:
    """The key's row; the hit is counted afterwards (`ratelimit.admit`)."""
    cursor = database.execute_sql(LOOKUP_SQLITE, {"token_hash": token_hash, "window": window})
    return cursor.fetchall()  # to the end: an unfinished SQLite statement holds its snapshot


def _lookup_and_count_postgres(token_hash: str, window: int, default_limit: int) -> list[tuple]:
    """The key's row, the hit counted in the same round trip (its last column).

    Run again after a lost connection: had the lost attempt committed (the server ending the
    session right after its commit), the hit is counted twice, which can only refuse one
    request early, never admit one too many; better than a 503 for the first request of every
    worker after a database restart."""
    params = {"token_hash": token_hash, "window": window, "limit": default_limit}
    return database.execute_repeatable(LOOKUP_AND_COUNT_POSTGRES, params).fetchall()


def _datetime(value):
    """A stored timestamp: SQLite gives ISO text (parsed in C, unlike peewee's strptime)."""
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def authenticate(now: dt.datetime, window: int, default_limit: int) -> Caller:
    """The live key named by the Authorization header and its window, or a 401."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise _unauthorized("authentication_required", "Send Authorization: Bearer <api key>.")
    match = _CREDENTIALS.fullmatch(header)
    if match is None or match["scheme"].lower() != "bearer":
        raise _unauthorized("invalid_token", "The bearer token is malformed.")
    token = match["token"]
    if not tokens.is_well_formed(token):
        raise _unauthorized("invalid_token", "The bearer token is malformed.")
    token_hash = tokens.hash_token(token)
    caller = find_caller(token_hash, window, default_limit)
    if caller is None or not secrets.compare_digest(caller.token_hash, token_hash):
        raise _unauthorized("invalid_token", "The bearer token is unknown or revoked.")
    if caller.revoked_at is not None:
        raise _unauthorized("invalid_token", "The bearer token is unknown or revoked.")
    _touch_last_used(caller, now)
    return caller


def _touch_last_used(caller: Caller, now: dt.datetime) -> None:
    """Record use at minute resolution: a write only when the stored value is stale."""
    if caller.last_used_at is not None and now - caller.last_used_at < LAST_USED_RESOLUTION:
        return
    stale_before = now - LAST_USED_RESOLUTION
    (
        ApiKey.update(last_used_at=now)
        .where(
            (ApiKey.id == caller.key_id)
            & (ApiKey.last_used_at.is_null() | (ApiKey.last_used_at < stale_before))
        )
        .execute()
    )
    caller.last_used_at = now


def require_scope(scope: str):
    """Decorator: authenticate, apply the key's rate limit, then demand `scope`."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            now = clock.now()  # one reading of the clock for the whole request
            now_unix = clock.unix(now)
            window = ratelimit.window_start(now_unix)
            default_limit = current_app.config["PARTNER_API"].default_rate_limit
            caller = authenticate(now, window, default_limit)
            g.caller = caller
            g.rate_limit = ratelimit.admit(caller, caller.rate_limit or default_limit, window)
            ratelimit.refuse_if_exceeded(g.rate_limit, now_unix)
            if scope not in caller.scopes:
                raise ApiError(
                    403,
                    "insufficient_scope",
                    f"This API key lacks the {scope} scope.",
                    required_scope=scope,
                )
            return view(*args, **kwargs)

        return wrapper

    return decorator


def add_rate_limit_headers(response):
    """after_request: every authenticated answer carries the rate-limit headers."""
    state = g.get("rate_limit")
    if state is not None:
        response.headers.extend(state.headers())  # added, not set: no view sets them
    return response
