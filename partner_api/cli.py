"""The admin CLI (`flask --app wsgi orgs|keys|webhooks …`): thin wrappers over provisioning.

Every command takes --json; an error is one line on stderr, a non-zero exit, and no change.
"""

from __future__ import annotations

import functools
import json

import click
import marshmallow as ma
import peewee
from flask.cli import AppGroup

from partner_api import provisioning, scopes
from partner_api.db import database, database_problem
from partner_api.errors import DomainError
from partner_api.fields import Timestamp

orgs_cli = AppGroup("orgs", help="Create and list partner organisations.")
keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")
webhooks_cli = AppGroup("webhooks", help="Operate webhook subscriptions.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _fail(message: str, exit_code: int = 2):
    click.echo(f"error: {message}", err=True)
    raise SystemExit(exit_code)


def admin_command(func):
    """Run inside a database connection; known refusals become one line on stderr."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with database.connection_context():
                return func(*args, **kwargs)
        except DomainError as exc:
            _fail(exc.message)
        except peewee.DatabaseError as exc:
            _fail(database_problem(exc), exit_code=1)

    return wrapper


def _emit(as_json: bool, payload, text: str) -> None:
    click.echo(json.dumps(payload, indent=2) if as_json else text)


class OrgRecord(ma.Schema):
    id = ma.fields.String()
    name = ma.fields.String()
    created_at = Timestamp()


class KeyRecord(ma.Schema):
    """A key as the CLI shows it: never its token (only `keys create` adds that, once)."""

    id = ma.fields.String()
    org_id = ma.fields.String()
    name = ma.fields.String()
    prefix = ma.fields.String()
    scopes = ma.fields.List(ma.fields.String(), attribute="scope_list")
    rate_limit = ma.fields.Integer(allow_none=True)
    created_at = Timestamp()
    last_used_at = Timestamp(allow_none=True)
    revoked_at = Timestamp(allow_none=True)


org_dict = OrgRecord().dump
key_dict = KeyRecord().dump


@orgs_cli.command("create")
@click.argument("name")
@json_option
@admin_command
def orgs_create(name, as_json):
    """Create an org."""
    org = provisioning.create_org(name)
    _emit(as_json, org_dict(org), f"created org {org.id} ({org.name})")


@orgs_cli.command("list")
@json_option
@admin_command
def orgs_list(as_json):
    """List orgs."""
    orgs = provisioning.list_orgs()
    _emit(
        as_json,
        [org_dict(org) for org in orgs],
        "\n".join(f"{org.id}  {org.name}" for org in orgs) or "no orgs",
    )


@keys_cli.command("create")
@click.option("--org", "org_id", required=True, help="Org id (org_…).")
@click.option("--name", default="", help="A label for the key.")
@click.option("--scope", "requested", multiple=True, help="Scope to grant; repeatable.")
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1, max=provisioning.MAX_RATE_LIMIT),
    default=None,
    help="Requests per minute for this key (default: PARTNER_API_DEFAULT_RATE_LIMIT).",
)
@json_option
@admin_command
def keys_create(org_id, name, requested, rate_limit, as_json):
    """Create an API key; its token is printed this once only."""
    key, token = provisioning.create_key(org_id, name, requested, rate_limit)
    payload = key_dict(key) | {"token": token}
    _emit(
        as_json,
        payload,
        f"created key {key.id} with scopes {' '.join(key.scope_list)}\n"
        f"token (shown once, store it now): {token}",
    )


@keys_cli.command("list")
@click.option("--org", "org_id", default=None, help="Only keys of this org.")
@json_option
@admin_command
def keys_list(org_id, as_json):
    """List keys (never their tokens)."""
    keys = provisioning.list_keys(org_id)
    lines = [
        f"{k.id}  {k.org_id}  {k.prefix}…  {k.name}  {' '.join(k.scope_list)}"
        + ("  REVOKED" if k.revoked_at else "")
        for k in keys
    ]
    _emit(as_json, [key_dict(k) for k in keys], "\n".join(lines) or "no keys")


@keys_cli.command("revoke")
@click.argument("key_id")
@json_option
@admin_command
def keys_revoke(key_id, as_json):
    """Revoke a key; it stops working on the next request."""
    key = provisioning.revoke_key(key_id)
    _emit(as_json, key_dict(key), f"revoked key {key.id}")


@webhooks_cli.command("enable")
@click.argument("subscription_id")
@json_option
@admin_command
def webhooks_enable(subscription_id, as_json):
    """Re-enable a disabled subscription; its held deliveries resume."""
    from partner_api.webhooks.subscriptions import enable_subscription

    subscription = enable_subscription(subscription_id)
    _emit(
        as_json,
        {"id": subscription.id, "status": subscription.status},
        f"enabled webhook subscription {subscription.id}",
    )


@click.command("demo-key")
@click.option("--docs-url", default="http://127.0.0.1:8000/api/v1/partner/docs")
@admin_command
def demo_key(docs_url):
    """First run only: provision a demo org and key and print the token once."""
    orgs = provisioning.list_orgs()
    if orgs:
        # The token was shown once, on the first run; the oldest org is the demo org.
        click.echo(
            "A demo key was provisioned on the first run and its token is not shown again. "
            "For a new key:\n"
            f"  .venv/bin/flask --app wsgi keys create --org {orgs[0].id} "
            f"--scope {scopes.WEBHOOKS_MANAGE}"
        )
        click.echo(f"API docs: {docs_url}")
        return
    org = provisioning.create_org("Demo Org")
    key, token = provisioning.create_key(org.id, "demo", [scopes.WEBHOOKS_MANAGE])
    click.echo(f"Provisioned demo org {org.id} and key {key.id} ({' '.join(key.scope_list)}).")
    click.echo(f"Demo API key (shown once, store it now): {token}")
    click.echo(f"API docs: {docs_url}")


def init_app(app) -> None:
    app.cli.add_command(demo_key)
    for group in (orgs_cli, keys_cli, webhooks_cli):
        app.cli.add_command(group)
