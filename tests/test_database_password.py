"""A database URL's password is never printed: not by the admin CLI, the dispatcher or gunicorn,
whether the URL is mistyped, names a server that does not answer, or works; not in a driver's
error either."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.net import ME_PATH, free_port, get
from harness.servers import SHIPPED_CONFIG, start_gunicorn
from partner_api import db
from partner_api.config import ROOT, describe_database_url, without_passwords

from .conftest import POSTGRES_URL

PASSWORD = "s3cret-Pw%2Fq"  # percent-encoded: neither form may show
SHOWN = ("s3cret", "Pw/q", "Pw%2Fq")
CLI = [
    ["stats"],
    ["stats", "--json"],
    ["init-db"],
    ["db", "status"],
    ["db", "break-lock"],
    ["backup", "/nonexistent/partner-api.bak"],
    ["orgs", "list"],
]
# Mistyped: each stops every entry point at its configuration, with one line.
MISTYPED = [
    f"postgresql//app:{PASSWORD}@127.0.0.1/partner",
    f"postgresql:/app:{PASSWORD}@127.0.0.1/partner",
    f"postgres:app:{PASSWORD}@127.0.0.1/partner",
    f"dbname=partner password={PASSWORD} host=127.0.0.1",
    f"dbname=partner password='{PASSWORD} x' host=127.0.0.1",
    f"postgresql://app:{PASSWORD}@127.0.0.1:99999/partner",
    f"postgresql://app:{PASSWORD}@[::1/partner",
    f"mysql://app:{PASSWORD}@127.0.0.1/partner",
    f"sqlite://app:{PASSWORD}@127.0.0.1/partner",
]


def run(args: list[str], url: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_hidden(output: str) -> None:
    assert not any(shown in output for shown in SHOWN), output
    assert "Traceback" not in output, output


def entry_points() -> list[list[str]]:
    """The admin CLI's commands, the dispatcher, and the app factory gunicorn imports."""
    return [
        *(["-m", "flask", "--app", "wsgi", *args] for args in CLI),
        ["-m", "dispatcher", "--once"],
        ["-c", "import wsgi"],
    ]


@pytest.mark.parametrize("url", MISTYPED)
def test_a_mistyped_url_stops_every_entry_point_in_one_line_without_its_password(url):
    for args in entry_points():
        result = run(args, url)
        assert result.returncode == 2, (args, result.stderr)
        assert_hidden(result.stdout + result.stderr)
        [line] = result.stderr.splitlines()
        assert "DATABASE_URL" in line and "***" in line, line


@pytest.mark.parametrize("config", [SHIPPED_CONFIG, None], ids=["shipped config", "defaults"])
def test_gunicorn_stops_on_a_mistyped_url_without_its_password(config):
    url = MISTYPED[0]
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{free_port()}"]
    command += ["-c", str(config)] if config else ["--workers", "1"]
    result = subprocess.run(
        [*command, "wsgi:app"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert_hidden(result.stdout + result.stderr)
    assert "DATABASE_URL" in result.stderr


def test_a_server_that_does_not_answer_is_named_without_its_password():
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/partner"
    for args in entry_points()[:-1]:
        result = run(args, url)
        assert result.returncode != 0
        assert_hidden(result.stdout + result.stderr)


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    _, _, location = rest.rpartition("@")
    return f"{scheme}://postgres:{PASSWORD}@{location}"


def test_a_working_database_is_named_without_its_password_everywhere(tmp_path):
    if not POSTGRES_URL:
        pytest.skip("PARTNER_API_TEST_POSTGRES_URL is not set")
    url = _with_password(POSTGRES_URL)  # trust authentication ignores the password
    assert run(["-m", "flask", "--app", "wsgi", "init-db"], url).returncode == 0
    for args in entry_points():
        result = run(args, url)
        assert_hidden(result.stdout + result.stderr)
    log = tmp_path / "gunicorn.log"
    with start_gunicorn({"DATABASE_URL": url}, log, workers=1, probe=ME_PATH) as server:
        for path in ("/readyz", "/metrics", ME_PATH):
            get(server.port, path)
    assert_hidden(log.read_text())


def test_a_driver_error_that_repeats_the_password_is_cut_from_every_message():
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/partner?sslpassword=k3y-Secret"
    text = f"a {PASSWORD} b s3cret-Pw/q c k3y-Secret d"
    assert without_passwords(text, url) == "a *** b *** c *** d"
    previous = db._bound_url
    db.bind(url)  # connects to nothing: binding only names the database
    try:
        line = db.database_problem(RuntimeError(f'invalid dsn: password="{PASSWORD}" k3y-Secret'))
    finally:
        if previous:
            db.bind(previous)
    assert line == 'database error: invalid dsn: password="***" ***'
    assert describe_database_url(url) == (
        f"postgresql://app:***@127.0.0.1:{url.split(':')[3].split('/')[0]}/partner?sslpassword=***"
    )
