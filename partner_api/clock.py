"""The one source of time: naive UTC datetimes and Unix seconds.

Tests replace the clock with `set_clock`; no code calls datetime.now() or time.time() directly.
"""

import datetime as _dt
import time as _time


def _system_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


_now = _system_now


def now() -> _dt.datetime:
    """The current UTC time as a naive datetime (how the database stores it)."""
    return _now()


def unix(moment: _dt.datetime | None = None) -> int:
    """Unix seconds of `moment` (default: now)."""
    moment = now() if moment is None else moment
    return int(moment.replace(tzinfo=_dt.UTC).timestamp())


def isoformat(moment: _dt.datetime | None) -> str | None:
    """RFC 3339 UTC text (`2026-01-02T03:04:05.678Z`) for a stored naive UTC datetime."""
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds") + "Z"


def set_clock(func) -> None:
    """Replace the clock (tests); `func()` returns a naive UTC datetime."""
    global _now
    _now = func


def reset_clock() -> None:
    """Go back to the system clock."""
    set_clock(_system_now)


monotonic = _time.monotonic
