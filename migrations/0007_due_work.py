"""Cost follows the work due: `due_work` holds, per subscription that may have work due, the
earliest time it may be due, so a claim reads only those subscriptions instead of probing every
live one. The backfill gives each subscription with pending deliveries its row.

Every step checks first, so running it again changes nothing. A migration is history: it reads
the connection yoyo hands it and imports nothing from partner_api.
"""

from yoyo import step

__depends__ = {"0004_deliveries_by_subscription", "0006_dns_lookup_leases"}

steps = [
    step(
        """
        CREATE TABLE IF NOT EXISTS due_work (
            subscription_id  TEXT NOT NULL PRIMARY KEY REFERENCES webhook_subscriptions (id),
            due_at           TIMESTAMP NOT NULL,
            version          INTEGER NOT NULL
        )
        """
    ),
    step("CREATE INDEX IF NOT EXISTS due_work_due ON due_work (due_at)"),
    # Leased deliveries count at their lease's end, like every pending one.
    step(
        "INSERT INTO due_work (subscription_id, due_at, version) "
        "SELECT subscription_id, MIN(next_attempt_at), 1 FROM deliveries "
        "WHERE status = 'pending' GROUP BY subscription_id "
        "ON CONFLICT (subscription_id) DO NOTHING"
    ),
]
