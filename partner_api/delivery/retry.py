"""The retry policy: when a failed attempt is tried again, or that it dead-letters.

A pure function of (attempt, schedule, now), shared by the dispatcher and the docs' wording.
"""

from __future__ import annotations

import datetime as dt


def next_attempt_at(
    failed_attempt: int, schedule: tuple[int, ...], now: dt.datetime
) -> dt.datetime | None:
    """When the attempt after failed attempt number `failed_attempt` (1-based) is due, or None
    if it was the last one (`len(schedule) + 1` attempts in all) and the delivery dead-letters."""
    if failed_attempt < 1:
        raise ValueError("attempts are numbered from 1")
    if failed_attempt > len(schedule):
        return None
    return now + dt.timedelta(seconds=schedule[failed_attempt - 1])


def max_attempts(schedule: tuple[int, ...]) -> int:
    """Attempts before dead-lettering: one first try plus one per scheduled retry."""
    return len(schedule) + 1


def describe_seconds(seconds: float) -> str:
    """A short human duration: `90s`, `5m`, `2h`, `1d`, `1h30m`."""
    seconds = int(seconds) if float(seconds).is_integer() else seconds
    if not isinstance(seconds, int):
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)


def describe_schedule(schedule: tuple[int, ...]) -> str:
    """The schedule as the docs say it: `1m, 5m, 30m, 2h, 6h and 24h`."""
    # Whole days read better in hours up to a day, as the spec writes "24h".
    words = [
        f"{s // 3600}h" if s % 3600 == 0 and s <= 86400 and s >= 3600 else describe_seconds(s)
        for s in schedule
    ]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]
