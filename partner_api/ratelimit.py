"""Per-key rate limiting in fixed one-minute windows, kept in the database.

One atomic upsert per request both advances the window and counts the hit, so the limit holds
exactly across gunicorn workers and API hosts (no read-modify-write race).
"""

from __future__ import annotations

import dataclasses

from partner_api.db import database

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


def _upsert_sql(param: str) -> str:
    # Both SQLite and PostgreSQL evaluate the SET expressions against the old row, so one
    # statement resets a stale window or increments the current one atomically.
    return (
        "INSERT INTO rate_limit_windows (key_id, window_start, hits) "
        f"VALUES ({param}, {param}, 1) "
        "ON CONFLICT (key_id) DO UPDATE SET "
        "hits = CASE WHEN rate_limit_windows.window_start = excluded.window_start "
        "THEN rate_limit_windows.hits + 1 ELSE 1 END, "
        "window_start = excluded.window_start "
        "RETURNING hits"
    )


_UPSERT_BY_PARAM = {param: _upsert_sql(param) for param in ("?", "%s")}

# Key id -> (window start, limit) of a window this process has seen exhausted. A window's count
# only grows until it ends, so further requests in it are refused without writing: a flood of
# 429s costs the database nothing. Admissions are always counted in the database, so the limit
# stays exact across processes. One entry per key that ever ran over, overwritten per window.
_exhausted: dict[str, tuple[int, int]] = {}


def record_hit(key_id: str, limit: int, now_unix: int) -> RateLimitState:
    """Count one request for `key_id` and say whether it is within `limit` for this window."""
    window_start = now_unix - now_unix % WINDOW_SECONDS
    if _exhausted.get(key_id) == (window_start, limit):
        hits = limit + 1
    else:
        # A single statement: autocommit makes it atomic without BEGIN/COMMIT round trips.
        cursor = database.execute_sql(_UPSERT_BY_PARAM[database.param], (key_id, window_start))
        hits = cursor.fetchall()[0][0]
        if hits > limit:
            _exhausted[key_id] = (window_start, limit)
    return RateLimitState(
        limit=limit,
        remaining=max(0, limit - hits),
        reset=window_start + WINDOW_SECONDS,
        allowed=hits <= limit,
    )
