"""The app factory: config, database, API, error handling and the admin CLI, wired once."""

from __future__ import annotations

import logging

from flask import Flask

from partner_api import __version__, auth, cli, db
from partner_api.config import Config
from partner_api.extensions import Api
from partner_api.openapi import spec_options

API_PREFIX = "/api/v1/partner"
MAX_BODY_BYTES = 64 * 1024


def build_app(test_config=None) -> Flask:
    """Create the Flask app; `test_config` may hold a ready `Config` under PARTNER_API."""
    app = Flask("partner_api", instance_relative_config=True)
    config = (test_config or {}).get("PARTNER_API") or Config.from_env()
    app.config.update(
        PARTNER_API=config,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        API_TITLE="Partner API",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        API_SPEC_OPTIONS=spec_options(config),
    )
    app.config.update({k: v for k, v in (test_config or {}).items() if k != "PARTNER_API"})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    db.bind(config.database_url)
    db.init_app(app)
    app.after_request(auth.add_rate_limit_headers)

    api = Api(app)
    from partner_api.identity.resources import blp as identity_blp
    from partner_api.webhooks.resources import blp as webhooks_blp

    api.register_blueprint(identity_blp, url_prefix=API_PREFIX)
    api.register_blueprint(webhooks_blp, url_prefix=API_PREFIX)
    cli.init_app(app)
    return app
