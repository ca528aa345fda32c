"""peewee models mirroring schema.sql (which is the source of truth; models never create tables).

Shared by the web app and the dispatcher.
"""

from __future__ import annotations

import json

from peewee import (
    BigIntegerField,
    BooleanField,
    CompositeKey,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from partner_api.db import database


class SubscriptionStatus:
    ENABLED = "enabled"
    DISABLED = "disabled"


class DeliveryStatus:
    PENDING = "pending"  # due at next_attempt_at
    HELD = "held"  # its subscription is disabled
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"  # its subscription was deleted
    OPEN = (PENDING, HELD)
    FINISHED = (DELIVERED, DEAD_LETTERED, CANCELLED)
    ALL = OPEN + FINISHED


class JSONTextField(TextField):
    """JSON stored as text, so the same column works on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Org(BaseModel):
    id = TextField(primary_key=True)
    name = TextField()
    created_at = DateTimeField()

    class Meta:
        table_name = "orgs"


class ApiKey(BaseModel):
    id = TextField(primary_key=True)
    org = ForeignKeyField(Org, column_name="org_id", backref="keys")
    name = TextField()
    prefix = TextField()
    token_hash = TextField(unique=True)
    scopes = TextField()  # space-separated, sorted
    rate_limit = IntegerField(null=True)
    created_at = DateTimeField()
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)

    class Meta:
        table_name = "api_keys"

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()


class RateLimitWindow(BaseModel):
    key_id = TextField(primary_key=True)
    window_start = BigIntegerField()
    hits = IntegerField()

    class Meta:
        table_name = "rate_limit_windows"


class Subscription(BaseModel):
    id = TextField(primary_key=True)
    org = ForeignKeyField(Org, column_name="org_id", backref="subscriptions")
    url = TextField()
    events = JSONTextField()
    description = TextField()
    secret = TextField()
    status = TextField()  # SubscriptionStatus
    disabled_reason = TextField(null=True)
    disabled_at = DateTimeField(null=True)
    consecutive_failures = IntegerField()
    failing_since = DateTimeField(null=True)  # when the current failure streak began
    created_at = DateTimeField()
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "webhook_subscriptions"

    @classmethod
    def live(cls, org_id: str | None = None):
        """The condition for subscriptions not deleted (of one org, if given)."""
        condition = cls.deleted_at.is_null()
        return condition if org_id is None else condition & (cls.org == org_id)


class Event(BaseModel):
    id = TextField(primary_key=True)
    org = ForeignKeyField(Org, column_name="org_id")
    type = TextField()
    data = JSONTextField()
    occurred_at = DateTimeField()

    class Meta:
        table_name = "events"


class Delivery(BaseModel):
    id = TextField(primary_key=True)
    event = ForeignKeyField(Event, column_name="event_id")
    subscription = ForeignKeyField(Subscription, column_name="subscription_id")
    status = TextField()  # DeliveryStatus
    attempts = IntegerField()
    next_attempt_at = DateTimeField()
    lease_token = TextField(null=True)
    created_at = DateTimeField()
    delivered_at = DateTimeField(null=True)
    response_status = IntegerField(null=True)  # of the attempt that delivered it
    duration_ms = IntegerField(null=True)
    attempts_before_replay = IntegerField(default=0)  # the retry schedule counts from here

    class Meta:
        table_name = "deliveries"


class DeliveryFailure(BaseModel):
    id = TextField(primary_key=True)
    delivery = ForeignKeyField(Delivery, column_name="delivery_id")
    subscription = ForeignKeyField(Subscription, column_name="subscription_id")
    event = ForeignKeyField(Event, column_name="event_id")
    event_type = TextField()
    attempt = IntegerField()
    attempted_at = DateTimeField()
    duration_ms = IntegerField()
    error_kind = TextField()
    error_message = TextField()
    response_status = IntegerField(null=True)
    response_excerpt = TextField(null=True)
    next_attempt_at = DateTimeField(null=True)
    dead_lettered = BooleanField()

    class Meta:
        table_name = "delivery_failures"


class DeliveryHistory(BaseModel):
    """A successful attempt (`delivered`) or a replay (`replayed`, with its actor)."""

    DELIVERED = "delivered"
    REPLAYED = "replayed"

    id = TextField(primary_key=True)
    delivery = ForeignKeyField(Delivery, column_name="delivery_id")
    kind = TextField()
    at = DateTimeField()
    attempt = IntegerField()  # delivered: its number; replayed: the last one before it
    response_status = IntegerField(null=True)
    duration_ms = IntegerField(null=True)
    actor = TextField(null=True)  # replayed: operator or partner

    class Meta:
        table_name = "delivery_history"


class DueWork(BaseModel):
    """A subscription that may have work due from `due_at` on (the lifecycle keeps it at or
    before each of its pending deliveries' `next_attempt_at`; the claim reads it)."""

    subscription = ForeignKeyField(Subscription, column_name="subscription_id", primary_key=True)
    due_at = DateTimeField()
    version = IntegerField()  # bumped by every write that may make work due sooner

    class Meta:
        table_name = "due_work"


class DispatcherPoll(BaseModel):
    dispatcher_id = TextField(primary_key=True)
    hostname = TextField()
    pid = IntegerField()
    started_at = DateTimeField()
    last_poll_at = DateTimeField()

    class Meta:
        table_name = "dispatcher_polls"


class IdempotencyKey(BaseModel):
    """The first answer to an Idempotency-Key of one org and operation, for 24 hours."""

    org = ForeignKeyField(Org, column_name="org_id")
    operation = TextField()  # the view's operationId: the same key on two operations is two keys
    key = TextField()
    request_hash = TextField()  # SHA-256 of the request (body and path), never the body itself
    response_status = IntegerField()
    response_body = JSONTextField()
    response_headers = JSONTextField()
    created_at = DateTimeField()

    class Meta:
        table_name = "idempotency_keys"
        primary_key = CompositeKey("org", "operation", "key")


class DnsLookupLease(BaseModel):
    """A DNS lookup of a webhook URL check in flight, until it ends or `expires_at`."""

    id = TextField(primary_key=True)
    org_id = TextField()
    expires_at = DateTimeField()

    class Meta:
        table_name = "dns_lookup_leases"
