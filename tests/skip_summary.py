"""A pytest plugin (loaded by tests/conftest.py): one summary line per skip reason, with its
count, instead of `-ra`'s line per skipped test (some 200 alike where PostgreSQL is not set)."""

from __future__ import annotations

import collections

SKIPPED_PREFIX = "Skipped: "


def pytest_terminal_summary(terminalreporter) -> None:
    """`SKIPPED 205 tests: PARTNER_API_TEST_POSTGRES_URL is not set`, most frequent first."""
    reasons = collections.Counter(
        skip_reason(report) for report in terminalreporter.stats.get("skipped", [])
    )
    for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        tests = "test" if count == 1 else "tests"
        terminalreporter.write_line(f"SKIPPED {count} {tests}: {reason}")


def skip_reason(report) -> str:
    """The reason a skip was given: its report's longrepr is (path, line, 'Skipped: …')."""
    longrepr = report.longrepr
    message = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return message.removeprefix(SKIPPED_PREFIX)
