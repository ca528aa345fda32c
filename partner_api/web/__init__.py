"""The web layer: the Flask app and everything that speaks HTTP.

`app` (the factory), `extensions` (flask-smorest subclasses: the one place for cross-cutting
API behaviour), `openapi` (the document's shared parts), `problems` (the problem+json error
shape), `auth` (bearer keys and scopes), `ratelimit` (where a 429 is decided), `telemetry` and
`metrics` (request ids, log lines, Prometheus), `operations` (/healthz, /readyz, /metrics),
`fields`, `docs` (Swagger UI), and one package per resource: `identity`, `webhooks`.
Views parse, call a work function in `partner_api.delivery` or `partner_api`, and return.
"""
