"""The retry policy as a pure function: no database, no clock but the one passed in."""

import datetime as dt

import pytest

from partner_api.delivery import retry

NOW = dt.datetime(2026, 11, 27, 12, 0, 0)
DEFAULT = (60, 300, 1800, 7200, 21600, 86400)


@pytest.mark.parametrize("attempt", range(1, 7))
def test_each_failed_attempt_waits_its_slot_of_the_schedule(attempt):
    wait = DEFAULT[attempt - 1]
    assert retry.next_attempt_at(attempt, DEFAULT, NOW) == NOW + dt.timedelta(seconds=wait)


def test_the_attempt_after_the_last_retry_dead_letters():
    assert retry.max_attempts(DEFAULT) == 7
    assert retry.next_attempt_at(7, DEFAULT, NOW) is None
    assert retry.next_attempt_at(8, DEFAULT, NOW) is None


def test_a_custom_schedule_sets_the_number_of_attempts():
    assert retry.max_attempts((5,)) == 2
    assert retry.next_attempt_at(1, (5,), NOW) == NOW + dt.timedelta(seconds=5)
    assert retry.next_attempt_at(2, (5,), NOW) is None


def test_attempts_are_numbered_from_one():
    with pytest.raises(ValueError):
        retry.next_attempt_at(0, DEFAULT, NOW)


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        (DEFAULT, "1m, 5m, 30m, 2h, 6h and 24h"),
        ((1,), "1s"),
        ((90, 3700, 172800), "1m30s, 1h1m40s and 2d"),
    ],
)
def test_the_schedule_reads_as_the_docs_write_it(schedule, words):
    assert retry.describe_schedule(schedule) == words


def test_durations_read_short():
    assert retry.describe_seconds(10) == "10s"
    assert retry.describe_seconds(10.0) == "10s"
    assert retry.describe_seconds(2.5) == "2.5s"
    assert retry.describe_seconds(3600) == "1h"
