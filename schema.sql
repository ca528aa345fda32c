-- Partner API schema at head, to read: `flask --app wsgi init-db` builds it by applying the
-- versioned migrations in migrations/, and tests/test_migrations.py checks that a database
-- migrated to head has exactly these tables, columns and indexes. A schema change is a new
-- migration plus the same change here. Runs unchanged on SQLite and PostgreSQL.
-- Timestamps are UTC without a zone; ids are prefixed random strings.

CREATE TABLE IF NOT EXISTS orgs (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id            TEXT NOT NULL PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    rate_limit    INTEGER,
    created_at    TIMESTAMP NOT NULL,
    last_used_at  TIMESTAMP,
    revoked_at    TIMESTAMP
);
CREATE INDEX IF NOT EXISTS api_keys_org_id ON api_keys (org_id);

-- One fixed one-minute window per key, advanced by a single atomic upsert.
CREATE TABLE IF NOT EXISTS rate_limit_windows (
    key_id        TEXT NOT NULL PRIMARY KEY REFERENCES api_keys (id),
    window_start  BIGINT NOT NULL,
    hits          INTEGER NOT NULL
);

-- Server-side secrets generated at init-db (e.g. the key that signs pagination cursors),
-- so every API host sharing the database agrees on them without extra configuration.
CREATE TABLE IF NOT EXISTS app_secrets (
    name   TEXT NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id                    TEXT NOT NULL PRIMARY KEY,
    org_id                TEXT NOT NULL REFERENCES orgs (id),
    url                   TEXT NOT NULL,
    events                TEXT NOT NULL,
    description           TEXT NOT NULL,
    secret                TEXT NOT NULL,
    status                TEXT NOT NULL,
    disabled_reason       TEXT,
    disabled_at           TIMESTAMP,
    consecutive_failures  INTEGER NOT NULL,
    created_at            TIMESTAMP NOT NULL,
    deleted_at            TIMESTAMP,
    -- When the current failure streak began (NULL while there is none): auto-disable waits
    -- until the streak has lasted PARTNER_API_AUTO_DISABLE_MIN_SECONDS.
    failing_since         TIMESTAMP
);
CREATE INDEX IF NOT EXISTS webhook_subscriptions_org_created
    ON webhook_subscriptions (org_id, created_at, id);

CREATE TABLE IF NOT EXISTS events (
    id           TEXT NOT NULL PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    type         TEXT NOT NULL,
    data         TEXT NOT NULL,
    occurred_at  TIMESTAMP NOT NULL
);
-- Retention walks old events in (occurred_at, id) order.
CREATE INDEX IF NOT EXISTS events_occurred ON events (occurred_at, id);

-- The outbox: one row per (event, subscription). status: pending, held (subscription
-- disabled), delivered, dead_lettered, cancelled. A claim moves next_attempt_at forward by
-- the lease and sets a fresh lease_token, so a delivery whose dispatcher died becomes due
-- again when the lease runs out. Claims read only due rows (status = 'pending',
-- next_attempt_at <= now), per subscription through deliveries_subscription_due for the
-- subscriptions due_work names, so their cost does not grow with the backlog. Once a delivery is
-- finished (delivered, dead_lettered, cancelled) next_attempt_at holds when it finished, so
-- retention and `stats` find old or recent finished rows through the same index.
CREATE TABLE IF NOT EXISTS deliveries (
    id               TEXT NOT NULL PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events (id),
    subscription_id  TEXT NOT NULL REFERENCES webhook_subscriptions (id),
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  TIMESTAMP NOT NULL,
    lease_token      TEXT,
    created_at       TIMESTAMP NOT NULL,
    delivered_at     TIMESTAMP,
    -- The answer to the attempt that delivered it (failed attempts are in delivery_failures).
    response_status  INTEGER,
    duration_ms      INTEGER,
    -- Attempts made before the last replay: numbers keep counting across replays, and the
    -- retry schedule starts again from here.
    attempts_before_replay  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
-- Serves the claim's per-subscription probe for due work and every per-subscription sweep.
DROP INDEX IF EXISTS deliveries_subscription;
CREATE INDEX IF NOT EXISTS deliveries_subscription_due
    ON deliveries (subscription_id, status, next_attempt_at);
-- Retention deletes only events that no delivery refers to any more.
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
-- A subscription's delivery log, newest first, all of them or those of one status: a page
-- reads its own rows whatever the subscription's backlog.
CREATE INDEX IF NOT EXISTS deliveries_subscription_created
    ON deliveries (subscription_id, created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_subscription_status_created
    ON deliveries (subscription_id, status, created_at, id);

-- Which subscriptions may have work due, and from when: the claim reads the rows with
-- due_at <= now through due_work_due, so its cost follows the subscriptions with work due, not
-- all subscriptions. Kept by the lifecycle: every pending delivery's subscription has a row
-- whose due_at is at or before that delivery's next_attempt_at. A write that makes a delivery
-- pending or due sooner lowers due_at and bumps version; a claim that finds nothing due moves
-- due_at to the subscription's earliest pending delivery, or deletes the row, only if version
-- is still the one it read (so a concurrent publish never loses its row).
CREATE TABLE IF NOT EXISTS due_work (
    subscription_id  TEXT NOT NULL PRIMARY KEY REFERENCES webhook_subscriptions (id),
    due_at           TIMESTAMP NOT NULL,
    version          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS due_work_due ON due_work (due_at);

-- The failure audit: one row per failed attempt.
CREATE TABLE IF NOT EXISTS delivery_failures (
    id                 TEXT NOT NULL PRIMARY KEY,
    delivery_id        TEXT NOT NULL REFERENCES deliveries (id),
    subscription_id    TEXT NOT NULL REFERENCES webhook_subscriptions (id),
    event_id           TEXT NOT NULL REFERENCES events (id),
    event_type         TEXT NOT NULL,
    attempt            INTEGER NOT NULL,
    attempted_at       TIMESTAMP NOT NULL,
    duration_ms        INTEGER NOT NULL,
    error_kind         TEXT NOT NULL,
    error_message      TEXT NOT NULL,
    response_status    INTEGER,
    response_excerpt   TEXT,
    next_attempt_at    TIMESTAMP,
    dead_lettered      BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_failures_subscription_time
    ON delivery_failures (subscription_id, attempted_at, id);
-- Retention deletes a delivery's audit rows with it, and deletes events: PostgreSQL checks
-- each deleted event against this table's foreign key. `stats` counts the last hour's failures.
CREATE INDEX IF NOT EXISTS delivery_failures_delivery ON delivery_failures (delivery_id);
CREATE INDEX IF NOT EXISTS delivery_failures_event ON delivery_failures (event_id);
CREATE INDEX IF NOT EXISTS delivery_failures_time ON delivery_failures (attempted_at);

-- What the failure audit does not hold: each successful attempt, and each replay (when, and
-- by whom: operator or partner), so a delivery's history survives a replay.
CREATE TABLE IF NOT EXISTS delivery_history (
    id               TEXT NOT NULL PRIMARY KEY,
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id),
    kind             TEXT NOT NULL,
    at               TIMESTAMP NOT NULL,
    attempt          INTEGER NOT NULL,
    response_status  INTEGER,
    duration_ms      INTEGER,
    actor            TEXT
);
CREATE INDEX IF NOT EXISTS delivery_history_delivery ON delivery_history (delivery_id, at);

-- One row per dispatcher process, stamped on every poll, so `stats` shows a stopped one.
CREATE TABLE IF NOT EXISTS dispatcher_polls (
    dispatcher_id  TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    started_at     TIMESTAMP NOT NULL,
    last_poll_at   TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS dispatcher_polls_last ON dispatcher_polls (last_poll_at);

-- Safe retries: the first answer to each Idempotency-Key (per org and operation), kept 24 hours
-- and then pruned with the retention job. The answer to a create holds the new signing secret.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    org_id            TEXT NOT NULL REFERENCES orgs (id),
    operation         TEXT NOT NULL,
    key               TEXT NOT NULL,
    request_hash      TEXT NOT NULL,
    response_status   INTEGER NOT NULL,
    response_body     TEXT NOT NULL,
    response_headers  TEXT NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, operation, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);

-- The DNS lookups of webhook URL checks (create, PATCH url) in flight, one row each, so the caps
-- on them hold across workers and hosts. A row is deleted when its lookup ends; one left by a
-- process killed mid-lookup is ignored after `expires_at` and deleted by the next lookup.
CREATE TABLE IF NOT EXISTS dns_lookup_leases (
    id          TEXT NOT NULL PRIMARY KEY,
    org_id      TEXT NOT NULL,
    expires_at  TIMESTAMP NOT NULL
);
