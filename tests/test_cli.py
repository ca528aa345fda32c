"""The admin CLI: orgs and keys, --json output, refusals that change nothing."""

import json

import pytest

from partner_api import tokens
from partner_api.models import ApiKey, Org
from partner_api.scopes import RESERVED


def run_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


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
    assert json.loads(created.output)["org_id"] == key.org_id
    assert json.loads(created.output)["scopes"] == ["identity:read", "webhooks:manage"]


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


def test_commands_on_an_uninitialised_database_say_so_in_one_line(tmp_path):
    import subprocess
    import sys

    from partner_api.config import ROOT

    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    for command in (["flask", "--app", "wsgi", "orgs", "list"], ["dispatcher", "--once"]):
        args = [sys.executable, "-m", *command]
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "init-db" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
