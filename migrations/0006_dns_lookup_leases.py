"""The DNS lookups of webhook URL checks in flight, so a cap per org and in all holds across
gunicorn workers and API hosts (partner_api/delivery/lookup_leases.py).

Every step checks first, so running it again changes nothing. A migration is history: it reads
the connection yoyo hands it and imports nothing from partner_api.
"""

from yoyo import step

__depends__ = {"0005_idempotency_keys"}

steps = [
    step(
        """
        CREATE TABLE IF NOT EXISTS dns_lookup_leases (
            id          TEXT NOT NULL PRIMARY KEY,
            org_id      TEXT NOT NULL,
            expires_at  TIMESTAMP NOT NULL
        )
        """
    ),
]
