"""Thin flask-smorest subclasses: the single place for cross-cutting API behaviour.

Request parsing strictness (415/400/unknown fields), error documentation and the problem shape.
"""

from __future__ import annotations

import http
import json

import flask_smorest
import marshmallow as ma
from flask_smorest.utils import prepare_response
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from partner_api import ssrf
from partner_api.errors import (
    DEFAULT_CODES,
    PROBLEM_CONTENT_TYPE,
    ApiError,
    ProblemSchema,
    from_http_exception,
    problem_body,
    problem_response,
    register_error_handlers,
)

_EXAMPLE_DETAILS = {
    400: ("invalid_json", "The request body is not valid JSON."),
    401: ("invalid_token", "The bearer token is missing, malformed, unknown or revoked."),
    403: ("insufficient_scope", "This API key lacks the webhooks:manage scope."),
    404: ("subscription_not_found", "No such webhook subscription."),
    405: ("method_not_allowed", "This method is not allowed on this resource."),
    409: ("subscription_disabled", "The subscription is disabled."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the request body as application/json."),
    422: ("validation_error", "The request has invalid fields."),
    429: ("rate_limited", "Rate limit of 600 requests per minute exceeded."),
    500: ("internal_error", "An unexpected error occurred."),
}

# Every `code` an error of each status can carry, listed in the documented responses.
_STATUS_CODES = {
    400: ("invalid_json", "invalid_cursor"),
    401: ("authentication_required", "invalid_token"),
    403: ("insufficient_scope", "secret_mismatch"),
    404: ("not_found", "subscription_not_found"),
    405: ("method_not_allowed",),
    409: ("subscription_limit_reached", "subscription_disabled"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    422: ("validation_error", "unknown_event_type", *sorted(ssrf.ERROR_CODES)),
    429: ("rate_limited",),
    500: ("internal_error",),
}

# Sent on every authenticated answer (so on everything but a 401); documented once as header
# components and referenced from each response.
_RATE_LIMIT_HEADER_DOCS = {
    "X-RateLimit-Limit": {
        "description": "Requests allowed per one-minute window for this key.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Unix seconds when the current window ends.",
        "schema": {"type": "integer"},
    },
}
RATE_LIMIT_HEADERS = {
    name: {"$ref": f"#/components/headers/{name}"} for name in _RATE_LIMIT_HEADER_DOCS
}


class StrictParser(FlaskParser):
    """Unknown fields are errors everywhere; non-JSON bodies are 415, broken JSON is 400."""

    DEFAULT_UNKNOWN_BY_LOCATION = {
        location: ma.RAISE
        for location in (
            "json",
            "query",
            "path",
            "view_args",
            "form",
            "headers",
            "cookies",
            "files",
            "json_or_form",
        )
    }

    def _raw_load_json(self, req):
        if not req.get_data(cache=True):
            return core.missing
        if not is_json_request(req):
            raise ApiError(
                415, "unsupported_media_type", "Send the request body as application/json."
            )
        try:
            data = core.parse_json(req.get_data(cache=True))
            # Lone surrogates (`"\ud800"`) parse, but are not text any database can store.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError):  # incl. decode errors and over-long integers
            self._handle_invalid_json_error(None, req)
        return data

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON (UTF-8).")

    def load_headers(self, req, schema):
        return core.missing


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser()

    def response(self, status_code, schema=None, **kwargs):
        """A success response, documented with the rate-limit headers every one carries."""
        kwargs.setdefault("headers", dict(RATE_LIMIT_HEADERS))
        return super().response(status_code, schema, **kwargs)

    def errors(self, *statuses):
        """Document the error answers an operation can give (problem+json, with examples)."""

        def decorator(func):
            for status in sorted(statuses, reverse=True):
                func = self.alt_response(status, response=http.HTTPStatus(status).name)(func)
            return func

        return decorator


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self):
        register_error_handlers(self._app)
        from werkzeug.exceptions import HTTPException

        self._app.register_error_handler(HTTPException, self.handle_http_exception)

    def handle_http_exception(self, error):
        return problem_response(from_http_exception(error))

    def _register_responses(self):
        """Error responses as problem+json components, each with an example."""
        for name, header in _RATE_LIMIT_HEADER_DOCS.items():
            self.spec.components.header(name, header)
        for status, (code, detail) in _EXAMPLE_DETAILS.items():
            example = problem_body(status, code, detail)
            if status == 422:
                example["errors"] = [
                    {
                        "location": "json",
                        "field": "url",
                        "message": "Missing data for required field.",
                    }
                ]
            if status == 403:
                example["required_scope"] = "webhooks:manage"
            codes = ", ".join(f"`{code}`" for code in _STATUS_CODES[status])
            response = {
                "description": f"{http.HTTPStatus(status).phrase}; `code` is one of {codes}.",
                "schema": self.ERROR_SCHEMA,
                "example": example,
            }
            if status == 401:
                response["headers"] = {
                    "WWW-Authenticate": {
                        "description": 'The bearer challenge: `Bearer realm="partner-api"`, '
                        'plus `, error="invalid_token"` when a token was sent but refused.',
                        "schema": {"type": "string"},
                    }
                }
            elif status != 405:  # a 405 is answered by routing, before any key is counted
                response["headers"] = dict(RATE_LIMIT_HEADERS)
            if status == 429:
                response["headers"]["Retry-After"] = {
                    "description": "Seconds until the window resets.",
                    "schema": {"type": "integer"},
                }
            prepare_response(response, self.spec, PROBLEM_CONTENT_TYPE)
            self.spec.components.response(http.HTTPStatus(status).name, response, lazy=True)
        response = {
            "description": "Any other error.",
            "schema": self.ERROR_SCHEMA,
            "example": problem_body(500, DEFAULT_CODES[500], _EXAMPLE_DETAILS[500][1]),
        }
        prepare_response(response, self.spec, PROBLEM_CONTENT_TYPE)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


class NoQuerySchema(ma.Schema):
    """An operation without query parameters: any parameter is an unknown field."""
