-- The first release's schema (1.0.0), as that release's schema.sql created it, with primary keys
-- spelled NOT NULL as schema.sql spells them now (SQLite lets a TEXT key hold NULL otherwise).
-- IF NOT EXISTS throughout: a database made before migrations existed is adopted as it is.
-- Never edit an applied migration; add the next one.

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
    deleted_at            TIMESTAMP
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

-- The outbox: one row per (event, subscription). status: pending, held (subscription
-- disabled), delivered, dead_lettered, cancelled. A claim moves next_attempt_at forward by
-- the lease and sets a fresh lease_token, so a delivery whose dispatcher died becomes due
-- again when the lease runs out. Claims read only (status = 'pending', next_attempt_at <= now)
-- through deliveries_due, so their cost does not grow with the backlog.
CREATE TABLE IF NOT EXISTS deliveries (
    id               TEXT NOT NULL PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events (id),
    subscription_id  TEXT NOT NULL REFERENCES webhook_subscriptions (id),
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  TIMESTAMP NOT NULL,
    lease_token      TEXT,
    created_at       TIMESTAMP NOT NULL,
    delivered_at     TIMESTAMP
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_subscription ON deliveries (subscription_id, status);

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
    dead_lettered      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_failures_subscription_time
    ON delivery_failures (subscription_id, attempted_at, id);
