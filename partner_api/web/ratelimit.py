"""Per-key rate limiting in fixed one-minute windows, kept in the database: where a 429 is
decided.

One atomic upsert per admitted request both advances the window and counts the hit, so the limit
holds exactly across gunicorn workers and API hosts (no read-modify-write race). On PostgreSQL
the key lookup (`auth.find_caller`) runs the same upsert in its round trip; `admit` then only
reads the count it returned.
"""

from __future__ import annotations

import dataclasses

from partner_api.db import database
from partner_api.web.problems import ApiError

WINDOW_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset: int  # Unix seconds when the current window ends
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


def window_start(now_unix: int) -> int:
    """Unix seconds at which the window holding `now_unix` began."""
    return now_unix - now_unix % WINDOW_SECONDS


def upsert_sql(source: str) -> str:
    """The counting upsert; `source` supplies (key_id, window_start, 1) as VALUES or SELECT."""
    # Both SQLite and PostgreSQL evaluate the SET expressions against the old row, so one
    # statement resets a stale window or increments the current one atomically.
    return (
        f"INSERT INTO rate_limit_windows (key_id, window_start, hits) {source} "
        "ON CONFLICT (key_id) DO UPDATE SET "
        "hits = CASE WHEN rate_limit_windows.window_start = excluded.window_start "
        "THEN rate_limit_windows.hits + 1 ELSE 1 END, "
        "window_start = excluded.window_start "
        "RETURNING hits"
    )


# On PostgreSQL a counting statement commits without waiting for the WAL flush:
# set_config(..., true) lasts until the statement's own commit. A crash of the database server
# may lose the last fraction of a second of counts (never corrupt them); no request waits for an
# fsync to count a hit. Every other write keeps synchronous commits.
ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
_COUNT_HIT = {
    "?": upsert_sql("VALUES (?, ?, 1)"),
    "%s": upsert_sql(f"SELECT %s, %s, 1 FROM {ASYNC_COMMIT}"),
}


def count_hit(key_id: str, window: int) -> int:
    """Count one request of `key_id` in `window`; returns the window's hits including it."""
    # One autocommitted statement: atomic without BEGIN/COMMIT round trips.
    cursor = database.execute_sql(_COUNT_HIT[database.param], (key_id, window))
    return cursor.fetchall()[0][0]


def is_exhausted(stored_hits: int, limit: int) -> bool:
    """The window's count as read before this request already exceeds the limit.

    A window's count only grows until it ends, so such a request is refused without counting
    it: a flood of 429s then costs reads, never writes. Admissions are always counted."""
    return stored_hits > limit


def state(limit: int, hits: int, window: int) -> RateLimitState:
    """The headroom after a request that made the window's count `hits`."""
    return RateLimitState(
        limit=limit,
        remaining=max(0, limit - hits),
        reset=window + WINDOW_SECONDS,
        allowed=hits <= limit,
    )


def admit(caller, limit: int, window: int) -> RateLimitState:
    """Count this request of `caller` (unless its lookup already did, or its window is
    already exhausted) and return the headroom after it."""
    if caller.counted_hits is not None:
        hits = caller.counted_hits
    elif is_exhausted(caller.stored_hits, limit):
        hits = caller.stored_hits
    else:
        hits = count_hit(caller.key_id, window)
    return state(limit, hits, window)


def refuse_if_exceeded(current: RateLimitState, now_unix: int) -> None:
    """429 with `Retry-After` when the request went over the key's limit."""
    if not current.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"Rate limit of {current.limit} requests per minute exceeded; retry after the reset.",
            headers={"Retry-After": str(max(1, current.reset - now_unix))},
        )
