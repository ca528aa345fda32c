"""GET /event-types: the catalogue of event types a subscription may ask for."""
