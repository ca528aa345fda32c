"""The admin CLI: orgs and keys, --json output, refusals that change nothing, the database
it names, help with examples, and no database created by a command that only reads."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from harness.net import free_port
from partner_api import create_app, tokens
from partner_api.config import ROOT, Config, describe_database_url
from partner_api.models import ApiKey, Delivery, Org
from partner_api.scopes import RESERVED

from .conftest import POSTGRES_URL

ADMIN_COMMANDS = (
    "init-db",
    "demo-key",
    "orgs",
    "keys",
    "webhooks",
    "deliveries",
    "stats",
    "prune",
    "db",
    "backup",
)
FLASK_OWN_COMMANDS = {"routes", "run", "shell", "openapi"}  # Flask's and flask-smorest's
READ_ONLY = (
    ["stats"],
    ["orgs", "list"],
    ["keys", "list"],
    ["webhooks", "list"],
    ["deliveries", "list"],
    ["deliveries", "show", "dlv_missing"],
)
MISSING = "error: the database does not exist: run `flask --app wsgi init-db`"


def flask(*args, env=None):
    """`python -m flask --app wsgi ARGS` in a subprocess, with only `env` set."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def errors(stderr: str) -> list[str]:
    """stderr without the line naming the database."""
    return [line for line in stderr.splitlines() if not line.startswith("database: ")]


def run_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def org(runner):
    return run_json(runner, "orgs", "create", "Acme")


def test_orgs_create_and_list(runner, org, db):
    assert org["id"].startswith("org_") and org["name"] == "Acme"
    listed = run_json(runner, "orgs", "list")
    assert [o["id"] for o in listed] == [org["id"]]


def test_keys_create_shows_token_once_and_stores_only_its_hash(runner, org, db):
    key = run_json(
        runner,
        "keys",
        "create",
        "--org",
        org["id"],
        "--name",
        "ci",
        "--scope",
        "webhooks:manage",
        "--rate-limit",
        "30",
    )
    assert key["id"].startswith("key_")
    assert tokens.is_well_formed(key["token"])
    assert key["scopes"] == ["identity:read", "webhooks:manage"]
    assert key["rate_limit"] == 30
    stored = ApiKey.get_by_id(key["id"])
    assert stored.token_hash == tokens.hash_token(key["token"])
    assert key["token"] not in json.dumps(stored.__data__, default=str)
    listed = runner.invoke(args=["keys", "list", "--json"]).output
    assert key["token"] not in listed and key["prefix"] in listed
    text = runner.invoke(args=["keys", "list", "--org", org["id"]]).output
    assert key["token"] not in text and key["id"] in text


def test_identity_read_is_always_granted(runner, org, db):
    key = run_json(runner, "keys", "create", "--org", org["id"])
    assert key["scopes"] == ["identity:read"]


@pytest.mark.parametrize("scope", RESERVED)
def test_reserved_scope_is_rejected_at_key_creation(runner, org, db, scope):
    result = runner.invoke(args=["keys", "create", "--org", org["id"], "--scope", scope])
    assert result.exit_code == 2
    assert "reserved" in result.output and scope in result.output
    assert "Traceback" not in result.output
    assert ApiKey.select().count() == 0


def test_unknown_scope_is_rejected_and_nothing_is_created(runner, org, db):
    result = runner.invoke(
        args=[
            "keys",
            "create",
            "--org",
            org["id"],
            "--scope",
            "webhooks:manage",
            "--scope",
            "admin:all",
        ]
    )
    assert result.exit_code == 2
    assert "unknown scope 'admin:all'" in result.output
    assert ApiKey.select().count() == 0


def test_key_for_unknown_org_is_refused(runner, db):
    result = runner.invoke(args=["keys", "create", "--org", "org_nope"])
    assert result.exit_code == 2 and "no org" in result.output
    assert ApiKey.select().count() == 0


@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_bad_rate_limit_is_refused(runner, org, db, value):
    result = runner.invoke(args=["keys", "create", "--org", org["id"], "--rate-limit", value])
    assert result.exit_code == 2
    assert ApiKey.select().count() == 0


def test_blank_org_name_is_refused(runner, db):
    result = runner.invoke(args=["orgs", "create", "   "])
    assert result.exit_code == 2 and "org name" in result.output
    assert Org.select().count() == 0


def test_revoke_marks_the_key_and_unknown_key_is_refused(runner, org, db):
    key = run_json(runner, "keys", "create", "--org", org["id"])
    revoked = run_json(runner, "keys", "revoke", key["id"])
    assert revoked["revoked_at"] is not None
    result = runner.invoke(args=["keys", "revoke", "key_missing"])
    assert result.exit_code == 2 and "no key" in result.output


def test_demo_key_is_provisioned_on_first_run_only(runner, db):
    first = runner.invoke(args=["demo-key", "--docs-url", "http://127.0.0.1:9/docs"])
    assert first.exit_code == 0
    [token] = [word for word in first.output.split() if word.startswith("vc_")]
    assert tokens.is_well_formed(token)
    assert "http://127.0.0.1:9/docs" in first.output
    [key] = ApiKey.select()
    assert key.scope_list == ["identity:read", "webhooks:manage"]
    second = runner.invoke(args=["demo-key"])
    assert second.exit_code == 0 and "vc_" not in second.output.replace(key.prefix, "")
    assert ApiKey.select().count() == 1 and Org.select().count() == 1
    # It says how to get a new key, with a command that works as printed.
    [command] = [line.split() for line in second.output.splitlines() if "keys create" in line]
    assert command[:3] == [".venv/bin/flask", "--app", "wsgi"]
    created = runner.invoke(args=[*command[3:], "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["org_id"] == key.org_id
    assert json.loads(created.stdout)["scopes"] == ["identity:read", "webhooks:manage"]


@pytest.mark.parametrize("value", ["1000001", "99999999999999999999"])
def test_rate_limit_above_the_maximum_is_refused(runner, org, db, value):
    result = runner.invoke(args=["keys", "create", "--org", org["id"], "--rate-limit", value])
    assert result.exit_code == 2
    assert ApiKey.select().count() == 0


@pytest.mark.parametrize("name", ["bad\udcff\udcfename", "tab\tname", "line\nbreak", "x" * 201])
def test_org_names_must_be_printable_utf8(runner, db, name):
    result = runner.invoke(args=["orgs", "create", name])
    assert result.exit_code == 2 and "org name" in result.output
    assert Org.select().count() == 0


def test_key_name_with_control_characters_is_refused(runner, org, db):
    result = runner.invoke(args=["keys", "create", "--org", org["id"], "--name", "a\x1bb"])
    assert result.exit_code == 2 and "key name" in result.output
    assert ApiKey.select().count() == 0


# --- the database in use ----------------------------------------------------------------------


def test_every_command_names_its_database_on_stderr_and_in_json_objects(
    runner, org, db, database_url
):
    shown = describe_database_url(database_url)
    created = runner.invoke(args=["keys", "create", "--org", org["id"], "--json"])
    assert created.stderr.splitlines() == [f"database: {shown}"]
    assert json.loads(created.stdout)["database"] == shown
    assert org["database"] == shown
    listed = runner.invoke(args=["keys", "list", "--json"])
    assert listed.stderr.splitlines() == [f"database: {shown}"]
    assert isinstance(json.loads(listed.stdout), list)  # a list stays a list
    text = runner.invoke(args=["stats"])
    assert text.stderr.splitlines() == [f"database: {shown}"] and shown not in text.stdout
    refused = runner.invoke(args=["keys", "revoke", "key_missing"])
    assert refused.stderr.splitlines()[0] == f"database: {shown}"


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, at, location = rest.rpartition("@")
    return f"{scheme}://{userinfo.split(':')[0] or 'postgres'}:{password}@{location}"


@pytest.mark.parametrize("server", ["unreachable", "postgres"])
def test_a_database_password_never_shows(server):
    password = "s3cret-Pw%2Fx"  # percent-encoded: neither form may show
    if server == "postgres":
        if not POSTGRES_URL:
            pytest.skip("PARTNER_API_TEST_POSTGRES_URL is not set")
        url = _with_password(POSTGRES_URL, password)  # trust authentication ignores it
    else:
        url = f"postgresql://partner:{password}@127.0.0.1:{free_port()}/partner"
    env = {"DATABASE_URL": url}
    shown = describe_database_url(url)
    assert ":***@" in shown
    for args in (["init-db"], ["stats", "--json"], ["orgs", "list"], ["keys", "revoke", "key_x"]):
        result = flask(*args, env=env)
        output = result.stdout + result.stderr
        assert "s3cret" not in output and "Pw/x" not in output, output
        assert result.stderr.splitlines()[0] == f"database: {shown}"
        assert "Traceback" not in output
    if server == "postgres":
        assert json.loads(flask("stats", "--json", env=env).stdout)["database"] == (
            describe_database_url(url)
        )


def test_an_env_file_chooses_the_database(tmp_path):
    database = tmp_path / "from-env-file.sqlite3"
    env_file = tmp_path / "env"
    env_file.write_text(f"# as deploy/partner-api.env\nDATABASE_URL=sqlite:///{database}\n")
    assert flask("-e", str(env_file), "init-db").returncode == 0
    result = flask("-e", str(env_file), "stats", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"] == f"sqlite:///{database}"
    assert result.stderr.splitlines() == [f"database: sqlite:///{database}"]


# --- read-only commands create nothing --------------------------------------------------------


@pytest.fixture
def missing_database(tmp_path):
    """An app whose SQLite file (and its directory) does not exist."""
    path = tmp_path / "mistyped" / "partner_api.sqlite3"
    app = create_app({"PARTNER_API": Config(database_url=f"sqlite:///{path}"), "TESTING": True})
    yield app, path
    assert not path.parent.exists(), "nothing may create the database but init-db"


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_a_read_only_command_never_creates_the_database(missing_database, args):
    app, path = missing_database
    for as_json in ([], ["--json"]):
        result = app.test_cli_runner().invoke(args=[*args, *as_json])
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.splitlines() == [f"database: sqlite:///{path}", MISSING]


def test_a_write_command_refuses_a_missing_database_too(missing_database):
    app, path = missing_database
    result = app.test_cli_runner().invoke(args=["orgs", "create", "Acme"])
    assert result.exit_code == 1 and errors(result.stderr) == [MISSING]


def test_the_api_answers_503_and_creates_no_database(missing_database):
    app, path = missing_database
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    answer = client.get("/api/v1/partner/me", headers={"Authorization": "Bearer vc_x"})
    assert answer.status_code in (401, 503)


def test_init_db_creates_the_missing_database_privately(tmp_path):
    path = tmp_path / "state" / "partner_api.sqlite3"
    app = create_app({"PARTNER_API": Config(database_url=f"sqlite:///{path}"), "TESTING": True})
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == "database ready"
    assert result.stderr.splitlines() == [f"database: sqlite:///{path}"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert json.loads(app.test_cli_runner().invoke(args=["orgs", "list", "--json"]).stdout) == []


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_commands_on_an_uninitialised_database_say_so_in_one_line(tmp_path, state):
    path = tmp_path / "empty.sqlite3"
    if state == "empty":
        path.touch()
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{path}"}
    for command in (["flask", "--app", "wsgi", "orgs", "list"], ["dispatcher", "--once"]):
        args = [sys.executable, "-m", *command]
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "init-db" in result.stderr and "Traceback" not in result.stderr
        [line] = errors(result.stderr)
        assert ("does not exist" if state == "missing" else "not initialised") in line
        assert path.exists() == (state == "empty")
        assert os.listdir(tmp_path) == (["empty.sqlite3"] if state == "empty" else [])


# --- typed options: one line for a bad value --------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["deliveries", "list", "--limit", "0"], "--limit must be a whole number from 1 to 1000"),
        (["deliveries", "list", "--limit", "abc"], "--limit must be a whole number"),
        (["deliveries", "list", "--limit", "²"], "--limit must be a whole number"),
        (["prune", "--older-than", "0"], "--older-than must be a whole number from 1 to 3650"),
        (["init-db", "--lock-timeout", "nan"], "--lock-timeout must be a number of seconds"),
        (["init-db", "--lock-timeout", "inf"], "--lock-timeout must be a number of seconds"),
        (["init-db", "--lock-timeout", "0"], "--lock-timeout must be a number of seconds"),
        (["prune", "--older-than", "²"], "--older-than must be a whole number"),
        (["deliveries", "list", "--status", "bogus"], "--status must be one of pending, held"),
        (["keys", "create", "--org", "org_x", "--rate-limit", "0"], "--rate-limit must be"),
        (["keys", "create"], "Missing option '--org'"),
        (["deliveries", "list", "--bogus"], "No such option '--bogus'"),
        (["deliveries", "bogus"], "No such command 'bogus'"),
    ],
)
def test_a_bad_option_is_one_error_line_and_exit_2(runner, org, db, args, message):
    before = (Org.select().count(), ApiKey.select().count(), Delivery.select().count())
    result = runner.invoke(args=args)
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {message}"), line
    assert (Org.select().count(), ApiKey.select().count(), Delivery.select().count()) == before


# Every option and argument, and values of its type that are not what it takes: a digit of
# another script (int() and float() read them), out of range, not a number or a time at all.
BAD_NUMBERS = ["²", "١", "５", "1_0", "1e3", "-1", "0x10", " 5", "nan", "", "9" * 20]
BAD_SINCE = [
    "999999d",
    "0001-01-01T00:00:00+01:00",
    "1999-12-31T23:59:59Z",
    "9000-01-01T00:00:01Z",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999+00:00",
    "١h",
    "2h 3m",
    "soon",
]
BAD_IDS = ["\udcff", "x" * 65, "a\x1bb", "wh_\u00e9"]
TYPED = [
    (["deliveries", "list", "--limit"], "--limit", BAD_NUMBERS),
    (["prune", "--older-than"], "--older-than", BAD_NUMBERS),
    (["keys", "create", "--org", "org_x", "--rate-limit"], "--rate-limit", BAD_NUMBERS),
    (["init-db", "--lock-timeout"], "--lock-timeout", BAD_NUMBERS),
    (["webhooks", "recover", "wh_x", "--since"], "--since", BAD_SINCE),
    (["keys", "create", "--org"], "--org", BAD_IDS),
    (["keys", "list", "--org"], "--org", BAD_IDS),
    (["webhooks", "list", "--org"], "--org", BAD_IDS),
    (["deliveries", "list", "--org"], "--org", BAD_IDS),
    (["deliveries", "list", "--subscription"], "--subscription", BAD_IDS),
    (["keys", "revoke"], "KEY_ID", BAD_IDS),
    (["webhooks", "enable"], "SUBSCRIPTION_ID", BAD_IDS),
    (["deliveries", "show"], "DELIVERY_ID", BAD_IDS),
    (["deliveries", "replay"], "DELIVERY_ID", BAD_IDS),
    (["demo-key", "--docs-url"], "--docs-url", ["ftp://x", "\udcff", "http://a b", ""]),
]


@pytest.mark.parametrize(
    "args,name,value",
    [(args, name, value) for args, name, values in TYPED for value in values],
    ids=lambda part: repr(part)[:40] if isinstance(part, str) else " ".join(part),
)
def test_every_option_refuses_a_value_outside_its_type_in_one_line(
    runner, org, db, args, name, value
):
    before = (Org.select().count(), ApiKey.select().count(), Delivery.select().count())
    result = runner.invoke(args=[*args, value])
    assert result.exit_code == 2 and result.stdout == "", result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {name} must be"), line
    assert (Org.select().count(), ApiKey.select().count(), Delivery.select().count()) == before


def test_recover_since_reaches_back_to_the_start_of_its_range(runner, org, db):
    from partner_api.delivery import replay

    now = replay.SINCE_EARLIEST.replace(tzinfo=None) + dt.timedelta(days=2)
    assert replay.parse_since("2d", now) == replay.SINCE_EARLIEST.replace(tzinfo=None)
    assert replay.parse_since("9000-01-01T01:00:00+01:00", now).year == 9000
    result = runner.invoke(args=["webhooks", "recover", "wh_x", "--since", "2000-01-01T00:00:00Z"])
    assert errors(result.stderr) == ["error: no webhook subscription with id 'wh_x'"]


# --- help -------------------------------------------------------------------------------------


def test_top_level_help_gives_each_admin_command_its_purpose_and_an_example():
    result = flask("--help")
    assert result.returncode == 0, result.stderr
    listing = " ".join(result.stdout.split("Commands:")[1].split())  # unwrapped
    for name in ADMIN_COMMANDS:
        assert f"Example: flask --app wsgi {name}" in listing, name


def test_every_admin_command_has_an_example(app):
    """A new command without an example fails here: add one with `example=`."""
    assert set(app.cli.commands) - FLASK_OWN_COMMANDS == set(ADMIN_COMMANDS)
    runner = app.test_cli_runner()
    for name in ADMIN_COMMANDS:
        command = app.cli.commands[name]
        for sub in getattr(command, "commands", {}):
            shown = runner.invoke(args=[name, sub, "--help"]).stdout
            assert f"Example: flask --app wsgi {name} {sub}" in " ".join(shown.split()), sub
            listing = " ".join(runner.invoke(args=[name, "--help"]).stdout.split())
            assert f"Example: flask --app wsgi {name} {sub}" in listing
        shown = runner.invoke(args=[name, "--help"]).stdout
        assert f"Example: flask --app wsgi {name}" in " ".join(shown.split()).replace(
            "-e /etc/partner-api/env ", ""
        )
