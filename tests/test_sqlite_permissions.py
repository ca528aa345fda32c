"""SQLite files this user may not use: a read-only database file, a read-only directory, a
directory that cannot be created. Every entry point (the admin CLI, the dispatcher, gunicorn)
says so in one line naming the path and the permission, never in a traceback.

Root passes every permission check, so the commands run as `nobody` (setpriv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.net import get
from harness.servers import start_gunicorn
from partner_api.config import ROOT
from partner_api.db import apply_schema, bind, database

NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
ENV = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}


def _nobody_can_run_python() -> str | None:
    """Why the tests cannot run a command as nobody here, or None."""
    if os.geteuid() != 0:
        return "not running as root: cannot switch to the nobody user"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import partner_api.db"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return "the nobody user cannot run this Python or read the checkout"
    return None


@pytest.fixture(scope="module")
def as_nobody():
    reason = _nobody_can_run_python()
    if reason:
        pytest.skip(reason)
    return AS_NOBODY


@pytest.fixture
def place():
    """A scratch directory every user may enter (pytest's own is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="partner-api-perms-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def initialised(path: Path) -> str:
    """An initialised SQLite database at `path`, closed (no -wal or -shm left)."""
    url = f"sqlite:///{path}"
    bind(url)
    apply_schema()
    database.close()
    return url


def run(prefix, args: list[str], url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", *args],
        cwd=ROOT,
        env={**ENV, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_problem(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("database: ")]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def read_only_file(place: Path) -> tuple[str, str]:
    """The file is root's (0644) in a directory of nobody's: it can be read, not written."""
    directory = place / "state"
    directory.mkdir()
    url = initialised(directory / "partner_api.sqlite3")
    os.chown(directory, NOBODY, NOBODY)
    return url, f"the database file {directory / 'partner_api.sqlite3'} needs read and write"


def read_only_directory(place: Path) -> tuple[str, str]:
    """The file is nobody's, in root's directory (0755): SQLite cannot write its -wal there."""
    url = initialised(place / "partner_api.sqlite3")
    os.chown(place / "partner_api.sqlite3", NOBODY, NOBODY)
    return url, f"the database directory {place} needs write permission"


@pytest.mark.parametrize("case", [read_only_file, read_only_directory])
def test_a_database_this_user_cannot_write_is_one_line_from_every_command(as_nobody, place, case):
    url, expected = case(place)
    for args, status in [
        (["flask", "--app", "wsgi", "stats"], 1),
        (["flask", "--app", "wsgi", "orgs", "create", "Acme"], 1),
        (["flask", "--app", "wsgi", "init-db"], 1),
        (["dispatcher", "--once"], 2),
    ]:
        result = run(as_nobody, args, url)
        assert result.returncode == status, (args, result.stderr)
        line = one_problem(result)
        assert "permission denied: " in line and expected in line, line
        assert "user nobody (uid 65534)" in line


@pytest.mark.parametrize("case", [read_only_file, read_only_directory])
def test_gunicorn_answers_503_and_logs_one_line_naming_the_path(as_nobody, place, case):
    url, expected = case(place)
    log = place / "gunicorn.log"
    server = start_gunicorn({"DATABASE_URL": url}, log, workers=1, config=None, run_as=as_nobody)
    with server:
        status, headers, body, _ = get(server.port, "/readyz")
        assert status == 503 and b"database_unavailable" in body
    logged = log.read_text()
    assert "Traceback" not in logged, logged
    [line] = [line for line in logged.splitlines() if "not ready" in line]
    assert expected in line and "permission denied" in line


def test_init_db_names_the_directory_it_cannot_create(as_nobody, place):
    path = place / "instance" / "partner_api.sqlite3"
    result = run(as_nobody, ["flask", "--app", "wsgi", "init-db"], f"sqlite:///{path}")
    assert result.returncode == 1
    assert one_problem(result) == (
        f"error: permission denied: cannot create the database directory {path.parent}: "
        f"{place} needs write permission for user nobody (uid 65534)"
    )
    assert not path.parent.exists()


def test_init_db_names_the_file_it_cannot_create(as_nobody, place):
    path = place / "partner_api.sqlite3"
    result = run(as_nobody, ["flask", "--app", "wsgi", "init-db"], f"sqlite:///{path}")
    assert one_problem(result) == (
        f"error: permission denied: cannot create the database file {path}: "
        f"{place} needs write permission for user nobody (uid 65534)"
    )


def test_a_database_path_under_a_file_or_that_is_a_directory_is_one_line(place):
    (place / "a-file").write_text("")
    under_a_file = place / "a-file" / "instance" / "partner_api.sqlite3"
    result = run((), ["flask", "--app", "wsgi", "init-db"], f"sqlite:///{under_a_file}")
    assert result.returncode == 1
    assert one_problem(result) == (
        f"error: cannot create the database directory {place / 'a-file' / 'instance'}: "
        "not a directory"
    )
    (place / "a-directory").mkdir()
    for args, status in [(["flask", "--app", "wsgi", "stats"], 1), (["dispatcher", "--once"], 2)]:
        result = run((), args, f"sqlite:///{place / 'a-directory'}")
        assert result.returncode == status
        assert one_problem(result).endswith(
            f"the database path {place / 'a-directory'} is a directory, not a SQLite file"
        )
