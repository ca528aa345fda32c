"""`make test` without PostgreSQL: one summary line per skip reason with its count, not a line
per skipped test (tests/skip_summary.py, with the report options of pyproject.toml)."""

from __future__ import annotations

import shlex
import tomllib

from partner_api.config import ROOT


def project_addopts() -> list[str]:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return shlex.split(settings["tool"]["pytest"]["ini_options"]["addopts"])


def test_skips_are_summarised_one_line_per_reason(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(5))
        def test_needs_postgres(n):
            pytest.skip("PARTNER_API_TEST_POSTGRES_URL is not set")

        @pytest.fixture
        def browser():
            pytest.skip("chromium is not installed")

        def test_in_a_browser(browser):
            pass

        def test_runs():
            pass
        """
    )
    result = pytester.runpytest("-p", "tests.skip_summary", *project_addopts())
    result.assert_outcomes(passed=1, skipped=6)
    lines = result.outlines
    assert "SKIPPED 5 tests: PARTNER_API_TEST_POSTGRES_URL is not set" in lines
    assert "SKIPPED 1 test: chromium is not installed" in lines
    assert sum("PARTNER_API_TEST_POSTGRES_URL" in line for line in lines) == 1
    assert not any(line.startswith("SKIPPED [") for line in lines)  # no per-location lines
