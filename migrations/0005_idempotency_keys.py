"""Safe retries: each Idempotency-Key a partner sent on `POST /webhooks` or
`POST /webhooks/{id}/test`, with the answer it got, kept 24 hours so a retry gets it again.

Every step checks first, so running it again changes nothing. A migration is history: it reads
the connection yoyo hands it and imports nothing from partner_api.
"""

from yoyo import step

# Not on 0004: two branches added migrations side by side, and either may be merged first.
__depends__ = {"0003_streak_start_and_delivery_history"}

steps = [
    step(
        """
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
        )
        """
    ),
    step("CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at)"),
]
