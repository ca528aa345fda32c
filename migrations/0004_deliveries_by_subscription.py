"""A subscription's delivery log (`GET /webhooks/{id}/deliveries`) reads its deliveries newest
first, all of them or those of one status, through an index each: a page costs the same
whether the subscription has a thousand deliveries or a million.

Every step checks first, so running it again changes nothing. A migration is history: it
imports nothing from partner_api.
"""

from yoyo import step

__depends__ = {"0003_streak_start_and_delivery_history"}

steps = [
    step(
        "CREATE INDEX IF NOT EXISTS deliveries_subscription_created "
        "ON deliveries (subscription_id, created_at, id)"
    ),
    step(
        "CREATE INDEX IF NOT EXISTS deliveries_subscription_status_created "
        "ON deliveries (subscription_id, status, created_at, id)"
    ),
]
