"""Bearer-token authentication, scope checks and rate limiting for API views.

`require_scope` is the only way a view is protected: authenticate, count the hit, check the scope.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets

from flask import current_app, g, request

from partner_api import clock, tokens
from partner_api.db import database
from partner_api.errors import ApiError
from partner_api.models import ApiKey, Org
from partner_api.ratelimit import record_hit

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


# The key and its org in one round trip, as one statement written once per placeholder style:
# building it with peewee on every request cost as much as running it.
_KEY_COLUMNS = (
    "id",
    "name",
    "prefix",
    "token_hash",
    "scopes",
    "rate_limit",
    "created_at",
    "last_used_at",
    "revoked_at",
)
_KEY_LOOKUP = (
    "SELECT "
    + ", ".join(f"k.{column}" for column in _KEY_COLUMNS)
    + ", o.id, o.name, o.created_at FROM api_keys k JOIN orgs o ON o.id = k.org_id "
    "WHERE k.token_hash = {param}"
)
_KEY_LOOKUP_BY_PARAM = {param: _KEY_LOOKUP.format(param=param) for param in ("?", "%s")}
_DATETIME_COLUMNS = frozenset({"created_at", "last_used_at", "revoked_at"})


def find_key(token_hash: str) -> ApiKey | None:
    """The key (revoked or not) with this token hash, its org attached, or None."""
    rows = database.execute_sql(_KEY_LOOKUP_BY_PARAM[database.param], (token_hash,)).fetchall()
    if not rows:
        return None
    row = rows[0]
    values = dict(zip(_KEY_COLUMNS, row, strict=False))
    for column in _DATETIME_COLUMNS:
        values[column] = ApiKey.created_at.python_value(values[column])
    org_id, org_name, org_created_at = row[len(_KEY_COLUMNS) :]
    org = Org(id=org_id, name=org_name, created_at=Org.created_at.python_value(org_created_at))
    return ApiKey(org=org, **values)


def authenticate() -> ApiKey:
    """The live key named by the Authorization header, or a 401."""
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
    key = find_key(token_hash)
    if key is None or not secrets.compare_digest(key.token_hash, token_hash):
        raise _unauthorized("invalid_token", "The bearer token is unknown or revoked.")
    if key.revoked_at is not None:
        raise _unauthorized("invalid_token", "The bearer token is unknown or revoked.")
    _touch_last_used(key)
    return key


def _touch_last_used(key: ApiKey) -> None:
    """Record use at minute resolution: a write only when the stored value is stale."""
    now = clock.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    stale_before = now - LAST_USED_RESOLUTION
    (
        ApiKey.update(last_used_at=now)
        .where(
            (ApiKey.id == key.id)
            & (ApiKey.last_used_at.is_null() | (ApiKey.last_used_at < stale_before))
        )
        .execute()
    )
    key.last_used_at = now


def require_scope(scope: str):
    """Decorator: authenticate, apply the key's rate limit, then demand `scope`."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            key = authenticate()
            limit = key.rate_limit or current_app.config["PARTNER_API"].default_rate_limit
            now_unix = clock.unix()
            state = record_hit(key.id, limit, now_unix)
            g.api_key, g.rate_limit = key, state
            if not state.allowed:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"Rate limit of {limit} requests per minute exceeded; retry after the reset.",
                    headers={"Retry-After": str(max(1, state.reset - now_unix))},
                )
            if scope not in key.scope_list:
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
        response.headers.update(state.headers())
    return response
