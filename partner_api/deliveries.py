"""Delivery state changes that the API, the admin CLI and the dispatcher share.

Statuses: pending (due at next_attempt_at), held (subscription disabled), delivered,
dead_lettered, cancelled. Each change clears the lease token, so an in-flight attempt whose
delivery changed under it cannot overwrite the new state.
"""

from __future__ import annotations

from partner_api import clock
from partner_api.models import Delivery, DeliveryStatus


def cancel_open_deliveries(subscription_id: str) -> int:
    """The subscription is gone: nothing pending or held will ever be sent."""
    return (
        Delivery.update(status=DeliveryStatus.CANCELLED, lease_token=None)
        .where(
            (Delivery.subscription == subscription_id) & Delivery.status.in_(DeliveryStatus.OPEN)
        )
        .execute()
    )


def hold_pending_deliveries(subscription_id: str) -> int:
    """The subscription is disabled: park its deliveries where claims never look.

    Deliveries in flight keep their lease, so their outcome is still recorded; the outcome
    writer (or the next claim, if their dispatcher died) holds them afterwards.
    """
    return (
        Delivery.update(status=DeliveryStatus.HELD)
        .where(
            (Delivery.subscription == subscription_id)
            & (Delivery.status == DeliveryStatus.PENDING)
            & Delivery.lease_token.is_null()
        )
        .execute()
    )


def release_held_deliveries(subscription_id: str) -> int:
    """The subscription is enabled again: its held deliveries are due now."""
    return (
        Delivery.update(
            status=DeliveryStatus.PENDING, next_attempt_at=clock.now(), lease_token=None
        )
        .where(
            (Delivery.subscription == subscription_id) & (Delivery.status == DeliveryStatus.HELD)
        )
        .execute()
    )
