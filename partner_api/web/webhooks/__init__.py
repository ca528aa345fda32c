"""Webhook subscriptions on the partner API: views and schemas (work in delivery/subscriptions)."""
