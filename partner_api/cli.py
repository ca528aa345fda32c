"""The admin CLI (`flask --app wsgi orgs|keys|webhooks|deliveries|stats|prune|db|backup …`):
thin wrappers over the work functions.

Every command names the database it uses on stderr and takes --json; an error, a bad option
value included, is one `error: …` line on stderr, a non-zero exit, and no change.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import sys

import click
import marshmallow as ma
import peewee
import psycopg2
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from partner_api import backup, clock, migrations, provisioning, scopes
from partner_api.config import MAX_RETENTION_DAYS, describe_database_url
from partner_api.db import (
    apply_schema,
    bound_url,
    database,
    database_file_missing,
    database_problem,
)
from partner_api.delivery import history, replay, retention, stats
from partner_api.errors import DomainError
from partner_api.models import DeliveryStatus, SubscriptionStatus
from partner_api.web.fields import Timestamp


class OneLineUsageError(click.UsageError):
    """A bad option or argument, shown as one `error: …` line like every other refusal
    (click shows usage errors as a usage line, a hint and the error)."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _usage_problem(exc: click.UsageError) -> str:
    if type(exc) is click.BadParameter and isinstance(exc.param, click.Option):
        return f"{exc.param.opts[0]} {exc.message}"
    if type(exc) is click.BadParameter and isinstance(exc.param, click.Argument):
        return f"{exc.param.human_readable_name} {exc.message}"
    return exc.format_message()


class _OperatorFacing:
    """Usage errors as one line; an `example` shown in the command's help and, after its
    purpose, in the command list of its group (so `flask --app wsgi --help` shows one per
    command)."""

    def __init__(self, *args, example: str | None = None, **kwargs):
        if example:
            kwargs.setdefault("epilog", f"Example: {example}")
        super().__init__(*args, **kwargs)
        self.example = example

    def get_short_help_str(self, limit: int = 45) -> str:
        purpose = super().get_short_help_str(limit=200)
        return f"{purpose} Example: {self.example}" if self.example else purpose

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a bare group name shows its help
        except click.UsageError as exc:
            raise OneLineUsageError(_usage_problem(exc), ctx) from None


class AdminCommand(_OperatorFacing, click.Command):
    """A command of the admin CLI."""


class AdminGroup(_OperatorFacing, AppGroup):
    """A group of admin commands (each an AdminCommand)."""

    command_class = AdminCommand

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), ctx) from None


# Option values are ASCII: int() and float() also read other scripts' digits (`١`, `５`).
_WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")
_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")


class WholeNumber(click.IntRange):
    """A whole number within bounds, refused in words an operator reads at a glance."""

    def convert(self, value, param, ctx):
        try:
            if isinstance(value, str) and not _WHOLE_NUMBER.fullmatch(value):
                raise click.BadParameter(value)
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"must be a whole number from {self.min} to {self.max}; got {value!r}")


class Seconds(click.ParamType):
    """A number of seconds above 0 and at most `high`, in plain decimal notation."""

    name = "seconds"

    def __init__(self, high: float):
        self.high = high

    def convert(self, value, param, ctx):
        number = float(value) if _DECIMAL.fullmatch(str(value)) else None
        if number is None or not 0 < number <= self.high:
            self.fail(
                f"must be a number of seconds above 0 and at most {self.high:g}; got {value!r}"
            )
        return number


class Since(click.ParamType):
    """`--since`: a time or an age, within the range replay.parse_since accepts."""

    name = "time"

    def convert(self, value, param, ctx):
        try:
            return replay.parse_since(value)
        except DomainError as exc:
            self.fail(exc.message.removeprefix("--since "))


class Identifier(click.ParamType):
    """An id as typed by an operator (`org_…`, `wh_…`): printable ASCII of at most 64
    characters. Whether one exists is the database's to say."""

    name = "id"

    def __init__(self, prefix: str):
        self.prefix = prefix

    def convert(self, value, param, ctx):
        if not (len(value) <= 64 and value.isprintable() and value.isascii()):
            self.fail(
                f"must be an id such as {self.prefix}_… (printable ASCII, at most 64 characters); "
                f"got {value!r}"
            )
        return value


class WebAddress(click.ParamType):
    """An http(s) URL of printable ASCII, at most 2,000 characters."""

    name = "url"

    def convert(self, value, param, ctx):
        if not (
            value.startswith(("http://", "https://"))
            and len(value) <= 2000
            and value.isascii()
            and value.isprintable()
            and " " not in value
        ):
            self.fail(f"must be an http:// or https:// URL; got {value!r}")
        return value


class OneOf(click.Choice):
    """One of fixed words, refused with the list of them."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"must be one of {', '.join(self.choices)}; got {value!r}")


orgs_cli = AdminGroup(
    "orgs",
    help="Create and list partner organisations.",
    example="flask --app wsgi orgs create 'Acme Ltd'",
)
keys_cli = AdminGroup(
    "keys",
    help="Create, list and revoke API keys.",
    example="flask --app wsgi keys create --org org_… --scope webhooks:manage",
)
webhooks_cli = AdminGroup(
    "webhooks",
    help="Operate webhook subscriptions.",
    example="flask --app wsgi webhooks list --org org_…",
)
deliveries_cli = AdminGroup(
    "deliveries",
    help="Find, inspect and replay deliveries.",
    example="flask --app wsgi deliveries list --status dead_lettered",
)
db_cli = AdminGroup(
    "db",
    help="Schema migrations: status, and clearing a stale migration lock.",
    example="flask --app wsgi db status",
)
PROGRESS_FROM = 1000  # recover shows a progress bar on a terminal from this many deliveries
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _fail(message: str, exit_code: int = 2):
    click.echo(f"error: {message}", err=True)
    raise SystemExit(exit_code)


def _database_in_use() -> str:
    """The database this command uses, as operators see it: never with its password."""
    return describe_database_url(current_app.config["PARTNER_API"].database_url)


def admin_command(func):
    """Name the database on stderr, then run inside a database connection; known refusals
    become one line on stderr."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        # First, so even a refusal says which database refused: a shell's stray DATABASE_URL
        # otherwise gives plausible answers from the wrong database.
        click.echo(f"database: {_database_in_use()}", err=True)
        try:
            with database.connection_context():
                return func(*args, **kwargs)
        except DomainError as exc:
            _fail(exc.message)
        except peewee.DatabaseError as exc:
            _fail(database_problem(exc), exit_code=1)

    return wrapper


def _emit(as_json: bool, payload, text: str) -> None:
    """Text for people; with --json, the payload (an object also names the database)."""
    if as_json and isinstance(payload, dict):
        payload = payload | {"database": _database_in_use()}
    click.echo(json.dumps(payload, indent=2) if as_json else text)


def _table(headers: list[str], rows: list[list]) -> str:
    """Plain aligned columns for people; --json is the format for scripts."""
    cells = [headers] + [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


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


@orgs_cli.command("create", example="flask --app wsgi orgs create 'Acme Ltd'")
@click.argument("name")
@json_option
@admin_command
def orgs_create(name, as_json):
    """Create an org."""
    org = provisioning.create_org(name)
    _emit(as_json, org_dict(org), f"created org {org.id} ({org.name})")


@orgs_cli.command("list", example="flask --app wsgi orgs list --json")
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


@keys_cli.command(
    "create",
    example="flask --app wsgi keys create --org org_… --name ci --scope webhooks:manage",
)
@click.option("--org", "org_id", type=Identifier("org"), required=True, help="Org id (org_…).")
@click.option("--name", default="", help="A label for the key.")
@click.option("--scope", "requested", multiple=True, help="Scope to grant; repeatable.")
@click.option(
    "--rate-limit",
    type=WholeNumber(min=1, max=provisioning.MAX_RATE_LIMIT),
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


@keys_cli.command("list", example="flask --app wsgi keys list --org org_…")
@click.option(
    "--org", "org_id", type=Identifier("org"), default=None, help="Only keys of this org."
)
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


@keys_cli.command("revoke", example="flask --app wsgi keys revoke key_…")
@click.argument("key_id", type=Identifier("key"))
@json_option
@admin_command
def keys_revoke(key_id, as_json):
    """Revoke a key; it stops working on the next request."""
    key = provisioning.revoke_key(key_id)
    _emit(as_json, key_dict(key), f"revoked key {key.id}")


@webhooks_cli.command("enable", example="flask --app wsgi webhooks enable wh_…")
@click.argument("subscription_id", type=Identifier("wh"))
@json_option
@admin_command
def webhooks_enable(subscription_id, as_json):
    """Re-enable a disabled subscription; its held deliveries resume."""
    from partner_api.delivery.subscriptions import enable_subscription

    subscription = enable_subscription(subscription_id)
    _emit(
        as_json,
        {"id": subscription.id, "status": subscription.status},
        f"enabled webhook subscription {subscription.id}",
    )


def subscription_dict(subscription) -> dict:
    return {
        "id": subscription.id,
        "org_id": subscription.org_id,
        "url": subscription.url,
        "events": subscription.events,
        "status": subscription.status,
        "consecutive_failures": subscription.consecutive_failures,
        "failing_since": clock.isoformat(subscription.failing_since),
        "disabled_reason": subscription.disabled_reason,
        "disabled_at": clock.isoformat(subscription.disabled_at),
        "created_at": clock.isoformat(subscription.created_at),
    }


@webhooks_cli.command("list", example="flask --app wsgi webhooks list --org org_…")
@click.option(
    "--org", "org_id", type=Identifier("org"), default=None, help="Only this org's subscriptions."
)
@json_option
@admin_command
def webhooks_list(org_id, as_json):
    """List live subscriptions with status, failure streak and why any is disabled."""
    from partner_api.delivery.subscriptions import list_all_subscriptions

    found = list_all_subscriptions(org_id)
    rows = [
        # EVENTS `*`: every type, present and future.
        [
            s.id,
            s.org_id,
            s.status,
            s.consecutive_failures,
            s.url,
            ",".join(s.events),
            s.disabled_reason,
        ]
        for s in found
    ]
    text = _table(["ID", "ORG", "STATUS", "FAILURES", "URL", "EVENTS", "DISABLED REASON"], rows)
    _emit(as_json, [subscription_dict(s) for s in found], text if found else "no subscriptions")


@webhooks_cli.command("recover", example="flask --app wsgi webhooks recover wh_… --since 2h")
@click.argument("subscription_id", type=Identifier("wh"))
@click.option(
    "--since",
    "moment",
    type=Since(),
    required=True,
    help="Replay dead letters whose event occurred at or after this time: RFC 3339 "
    "(2026-11-27T10:00:00Z) or an age (30m, 2h, 3d).",
)
@json_option
@admin_command
def webhooks_recover(subscription_id, moment, as_json):
    """Replay every dead-lettered delivery of a subscription since a time."""
    subscription, found = replay.dead_letters_since(subscription_id, moment)
    if len(found) >= PROGRESS_FROM and not as_json and _on_terminal():
        with click.progressbar(length=len(found), label="replaying", file=sys.stderr) as bar:
            count = replay.replay_dead_letters(subscription.id, found, bar.update)
    else:
        count = replay.replay_dead_letters(subscription.id, found)
    held = subscription.status != SubscriptionStatus.ENABLED
    note = f" (held until `webhooks enable {subscription.id}`)" if held and count else ""
    _emit(as_json, {"replayed": count}, f"replayed {count} dead-lettered deliveries{note}")


def _on_terminal() -> bool:
    """Progress bars only for people: not into pipes, files or --json consumers."""
    return sys.stdout.isatty()


def delivery_dict(delivery) -> dict:
    return {
        "id": delivery.id,
        "status": delivery.status,
        "event_id": delivery.event_id,
        "event_type": delivery.event.type,
        "subscription_id": delivery.subscription_id,
        "org_id": delivery.subscription.org_id,
        "attempts": delivery.attempts,
        "next_attempt_at": clock.isoformat(delivery.next_attempt_at)
        if delivery.status in DeliveryStatus.OPEN
        else None,
        "created_at": clock.isoformat(delivery.created_at),
        "delivered_at": clock.isoformat(delivery.delivered_at),
    }


@deliveries_cli.command(
    "list", example="flask --app wsgi deliveries list --status dead_lettered --limit 20"
)
@click.option(
    "--org", "org_id", type=Identifier("org"), default=None, help="Only this org's deliveries."
)
@click.option(
    "--subscription",
    "subscription_id",
    type=Identifier("wh"),
    default=None,
    help="Only this subscription's.",
)
@click.option("--status", type=OneOf(DeliveryStatus.ALL), default=None, help="Only this status.")
@click.option(
    "--limit",
    type=WholeNumber(min=1, max=history.MAX_LIST_LIMIT),
    default=50,
    show_default=True,
    help="At most this many.",
)
@json_option
@admin_command
def deliveries_list(org_id, subscription_id, status, limit, as_json):
    """List deliveries, newest first."""
    found = history.list_deliveries(org_id, subscription_id, status, limit)
    rows = [
        [
            d.id,
            d.status,
            d.attempts,
            d.event.type,
            d.subscription_id,
            clock.isoformat(d.created_at),
        ]
        for d in found
    ]
    text = _table(["ID", "STATUS", "ATTEMPTS", "EVENT", "SUBSCRIPTION", "CREATED"], rows)
    _emit(as_json, [delivery_dict(d) for d in found], text if found else "no deliveries")


@deliveries_cli.command("show", example="flask --app wsgi deliveries show dlv_…")
@click.argument("delivery_id", type=Identifier("dlv"))
@json_option
@admin_command
def deliveries_show(delivery_id, as_json):
    """Show a delivery, its event, every attempt and every replay."""
    delivery = history.get_delivery(delivery_id)
    attempts = history.delivery_attempts(delivery)
    replays = history.delivery_replays(delivery)
    event = delivery.event
    payload = delivery_dict(delivery) | {
        "url": delivery.subscription.url,
        "event": {
            "id": event.id,
            "type": event.type,
            "occurred_at": clock.isoformat(event.occurred_at),
            "data": event.data,
        },
        "attempt_log": attempts,
        "replays": replays,
    }
    summary = [
        f"delivery      {delivery.id}  {delivery.status}  ({delivery.attempts} attempts)",
        f"subscription  {delivery.subscription_id}  {delivery.subscription.url}",
        f"event         {event.id}  {event.type}  occurred {clock.isoformat(event.occurred_at)}",
        f"data          {json.dumps(event.data)}",
    ]
    if delivery.status in DeliveryStatus.OPEN:
        summary.append(f"next attempt  {clock.isoformat(delivery.next_attempt_at)}")
    rows = _timeline(attempts, replays)
    table = _table(["#", "TIME", "OUTCOME", "STATUS", "MS", "ERROR"], rows)
    _emit(as_json, payload, "\n".join(summary) + "\n\n" + (table if rows else "no attempts yet"))


def _timeline(attempts: list[dict], replays: list[dict]) -> list[list]:
    """Table rows, oldest first; a replay sorts after the attempt it followed."""
    entries = [
        ((a["attempted_at"], a["attempt"]), [a["attempt"], a["attempted_at"], a["outcome"]])
        + ([a["status"], a["duration_ms"], a["error"]],)
        for a in attempts
    ]
    entries += [
        ((r["replayed_at"], r["after_attempt"] + 0.5), [None, r["replayed_at"], "replayed"])
        + ([None, None, f"by {r['by']}"],)
        for r in replays
    ]
    return [first + rest for _, first, rest in sorted(entries, key=lambda entry: entry[0])]


@deliveries_cli.command("replay", example="flask --app wsgi deliveries replay dlv_…")
@click.argument("delivery_id", type=Identifier("dlv"))
@json_option
@admin_command
def deliveries_replay(delivery_id, as_json):
    """Send a delivered or dead-lettered delivery again (same event id); attempt numbers go on
    counting and the retry schedule starts again."""
    delivery = replay.replay_delivery(delivery_id)
    if delivery.status == DeliveryStatus.HELD:
        text = (
            f"delivery {delivery.id} is held until its subscription is enabled "
            f"(`webhooks enable {delivery.subscription_id}`)"
        )
    else:
        text = f"delivery {delivery.id} will be sent at the next dispatcher poll"
    _emit(as_json, {"delivery_id": delivery.id, "status": delivery.status}, text)


@click.command("stats", cls=AdminCommand, example="flask --app wsgi stats")
@json_option
@with_appcontext
@admin_command
def stats_command(as_json):
    """Queue and subscription health, and when a dispatcher last polled."""
    found = stats.collect_stats(current_app.config["PARTNER_API"].poll_interval)
    if found["last_poll_at"] is None:
        # No row: none has run, or each one that ran stopped cleanly and removed its row.
        poll = "none: no dispatcher is polling this database"
    else:
        poll = f"{found['last_poll_at']} ({found['last_poll_age_seconds']:.0f} s ago)"
        if found["dispatcher_stopped"]:
            poll += "  STOPPED? no dispatcher is polling"
    age = found["oldest_due_age_seconds"]
    lines = [
        f"pending                {found['pending']}",
        f"due now                {found['due_now']}",
        f"oldest due             {'-' if age is None else f'{age:.0f} s'}",
        f"held                   {found['held']}",
        f"in flight (leased)     {found['in_flight']}",
        f"delivered (last hour)  {found['delivered_last_hour']}",
        f"failed attempts (1 h)  {found['failed_attempts_last_hour']}",
        f"dead-lettered          {found['dead_lettered']}",
        f"disabled subscriptions {found['disabled_subscriptions']}",
        f"last dispatcher poll   {poll}",
    ]
    _emit(as_json, found, "\n".join(lines))


@click.command("prune", cls=AdminCommand, example="flask --app wsgi prune --older-than 30")
@click.option(
    "--older-than",
    "days",
    type=WholeNumber(min=1, max=MAX_RETENTION_DAYS),
    default=None,
    help="Days to keep (default: PARTNER_API_RETENTION_DAYS).",
)
@json_option
@with_appcontext
@admin_command
def prune_command(days, as_json):
    """Delete finished deliveries, their audit rows and orphaned events older than the retention."""
    config = current_app.config["PARTNER_API"]
    counts = retention.prune(config.retention_days if days is None else days)
    text = ", ".join(f"{n} {table}" for table, n in counts.items())
    _emit(as_json, counts, f"pruned {text}")


@click.command("demo-key", cls=AdminCommand, example="flask --app wsgi demo-key")
@click.option("--docs-url", type=WebAddress(), default="http://127.0.0.1:8000/api/v1/partner/docs")
@with_appcontext
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


@click.command("init-db", cls=AdminCommand, example="flask --app wsgi init-db")
@click.option(
    "--lock-timeout",
    type=Seconds(3600),
    default=None,
    help="Seconds to wait for another host's init-db to finish migrating (default 60).",
)
@json_option
@with_appcontext
def init_db_command(lock_timeout, as_json):
    """Create or upgrade the database schema (idempotent): apply the pending migrations; the
    only command that creates a SQLite file."""
    described = _database_in_use()
    click.echo(f"database: {described}", err=True)
    try:
        applied = apply_schema(lock_timeout)
    except DomainError as exc:
        _fail(exc.message, exit_code=1)
    except (peewee.DatabaseError, sqlite3.Error, psycopg2.Error) as exc:
        # yoyo runs the migrations on its own connection: the driver's errors, not peewee's.
        _fail(database_problem(exc), exit_code=1)
    if as_json:
        click.echo(json.dumps({"applied": applied, "database": described}))
        return
    for migration_id in applied:
        click.echo(f"applied migration {migration_id}")
    click.echo("database ready")


def _fail_on_driver_errors(func):
    """Commands that work on their own connection (yoyo's, sqlite3's backup) see the driver's
    errors rather than peewee's; they name the database first, and a refusal is one line."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        click.echo(f"database: {_database_in_use()}", err=True)
        try:
            return func(*args, **kwargs)
        except DomainError as exc:
            _fail(exc.message)
        except (peewee.DatabaseError, sqlite3.Error, psycopg2.Error) as exc:
            _fail(database_problem(exc), exit_code=1)

    return wrapper


def _status_payload(status: migrations.MigrationStatus) -> dict:
    return {
        "applied": [
            {"id": m.id, "applied_at": clock.isoformat(m.applied_at)} for m in status.applied
        ],
        "pending": list(status.pending),
        "unknown": list(status.unknown),
    }


@db_cli.command("status", example="flask --app wsgi db status --json")
@json_option
@_fail_on_driver_errors
def db_status(as_json):
    """The applied migrations (with when) and the pending ones; changes nothing."""
    if database_file_missing():  # connecting would create the file: a status never does
        status = migrations.MigrationStatus((), migrations.known_migration_ids(), ())
    else:
        with database.connection_context():
            status = migrations.migration_status()
    rows = [
        [
            m.id,
            "applied" if m.id not in status.unknown else "UNKNOWN",
            clock.isoformat(m.applied_at),
        ]
        for m in status.applied
    ] + [[mid, "pending", None] for mid in status.pending]
    problem = status.problem()
    verdict = "up to date" if problem is None else problem.message
    _emit(
        as_json,
        _status_payload(status),
        _table(["MIGRATION", "STATE", "APPLIED"], rows) + "\n" + verdict,
    )


@db_cli.command("break-lock", example="flask --app wsgi db break-lock")
@json_option
@_fail_on_driver_errors
def db_break_lock(as_json):
    """Clear the migration lock a killed init-db left; only when no init-db is running."""
    if database_file_missing():
        raise DomainError("database_missing", "there is no database here yet: nothing is locked")
    cleared = migrations.break_lock(bound_url())
    text = "migration lock cleared" if cleared else "no migration lock was held"
    _emit(as_json, {"cleared": cleared}, text)


@click.command(
    "backup", cls=AdminCommand, example="flask --app wsgi backup /var/backups/partner-api.sqlite3"
)
@click.argument("path")
@json_option
@with_appcontext
@_fail_on_driver_errors
def backup_command(path, as_json):
    """SQLite: copy the database, consistently while it is in use, to a new file PATH (0600).
    PostgreSQL: says how to use pg_dump."""
    made = backup.back_up(path)
    _emit(as_json, made, f"backed up to {made['path']} ({made['bytes']} bytes)")


def init_app(app) -> None:
    for command in (init_db_command, demo_key, stats_command, prune_command, backup_command):
        app.cli.add_command(command)
    for group in (orgs_cli, keys_cli, webhooks_cli, deliveries_cli, db_cli):
        app.cli.add_command(group)
