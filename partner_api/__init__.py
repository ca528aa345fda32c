"""Partner API: a partner-facing REST API and signed, reliable webhooks.

- `partner_api.web`: the Flask app (views, auth, rate limits, OpenAPI, docs, telemetry).
- `partner_api.delivery`: the delivery domain, shared with the dispatcher process.
- This package's own modules: configuration, database, models, ids, clock, logs, the admin CLI
  and key provisioning, which both processes use.

`create_app` imports the web layer only when called: the dispatcher (`python -m dispatcher`)
imports `partner_api.delivery` and never loads the views, flask-smorest or the OpenAPI
document (tests/test_layout.py checks it).
"""

__version__ = "1.0.0"


def create_app(test_config=None):
    """Build the Flask app; `test_config` overrides settings read from the environment."""
    from partner_api.web.app import build_app

    return build_app(test_config)
