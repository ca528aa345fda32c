"""The app factory: config, database, API, error handling and the admin CLI, wired once."""

from __future__ import annotations

import io

from flask import Flask
from werkzeug.wsgi import get_content_length

from partner_api import __version__, cli, db, logs
from partner_api.config import Config
from partner_api.web import auth, docs, metrics, operations, telemetry
from partner_api.web.extensions import Api
from partner_api.web.openapi import spec_options

API_PREFIX = "/api/v1/partner"
MAX_BODY_BYTES = 64 * 1024


class PartnerApiFlask(Flask):
    """Flask, deciding once per view or hook whether it needs an async wrapper.

    Flask asks `inspect.iscoroutinefunction` of every hook and view on every request: a tenth of
    a `GET /me` in cProfile. `ensure_sync` is Flask's documented override point for this."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ensured: dict = {}

    def ensure_sync(self, func):
        try:
            return self._ensured[func]
        except KeyError:
            ensured = self._ensured[func] = super().ensure_sync(func)
            return ensured


def build_app(test_config=None) -> Flask:
    """Create the Flask app; `test_config` may hold a ready `Config` under PARTNER_API."""
    app = PartnerApiFlask("partner_api", instance_relative_config=True)
    config = (test_config or {}).get("PARTNER_API") or Config.from_env()
    app.config.update(
        PARTNER_API=config,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        API_TITLE="Partner API",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS=spec_options(config),
    )
    app.config.update({k: v for k, v in (test_config or {}).items() if k != "PARTNER_API"})
    logs.configure_logging(config.log_format)

    # Werkzeug would answer `//webhooks` with a redirect built from the (forgeable) Host
    # header; an unknown path is a 404 like any other.
    app.url_map.merge_slashes = False
    app.wsgi_app = BoundedStreamingBody(app.wsgi_app, MAX_BODY_BYTES)

    # The request id and the timer come first, so every later hook and line has them.
    telemetry.init_app(app)
    # With the directory gunicorn workers share their metrics in, when it is the default one.
    config = app.config["PARTNER_API"] = metrics.init_app(app, config)
    db.bind(config.database_url)
    db.init_app(app)
    app.after_request(auth.add_rate_limit_headers)
    app.register_blueprint(operations.blp)

    api = Api(app)
    from partner_api.web.event_types.resources import blp as event_types_blp
    from partner_api.web.identity.resources import blp as identity_blp
    from partner_api.web.webhooks.resources import blp as webhooks_blp

    api.register_blueprint(identity_blp, url_prefix=API_PREFIX)
    api.register_blueprint(webhooks_blp, url_prefix=API_PREFIX)
    api.register_blueprint(event_types_blp, url_prefix=API_PREFIX)
    app.register_blueprint(docs.blp, url_prefix=API_PREFIX)  # Swagger UI, served offline
    cli.init_app(app)
    return app


class BoundedStreamingBody:
    """WSGI middleware: a body sent without Content-Length (chunked) is read here, at most
    `limit` + 1 bytes, and handed on with its real length.

    Werkzeug caps such a stream at MAX_CONTENT_LENGTH by truncating it silently, so a long
    body whose first 64 KiB is valid JSON would be parsed. With a known length, Flask's own
    check answers 413 for an oversized body, through the one error handler.
    """

    def __init__(self, wsgi_app, limit: int):
        self.wsgi_app = wsgi_app
        self.limit = limit

    def __call__(self, environ, start_response):
        if get_content_length(environ) is None and environ.get("wsgi.input_terminated"):
            body = _read_at_most(environ["wsgi.input"], self.limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.wsgi_app(environ, start_response)


def _read_at_most(stream, size: int) -> bytes:
    """Up to `size` bytes: servers' chunked readers may return less than asked per read."""
    parts, remaining = [], size
    while remaining > 0:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)
