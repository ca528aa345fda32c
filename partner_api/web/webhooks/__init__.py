"""Webhook subscriptions: the partner-facing API, its work functions and the failure audit."""
