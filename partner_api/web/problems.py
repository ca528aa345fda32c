"""The one HTTP error shape, RFC 9457 `application/problem+json`, that every error from every
route leaves through: `ApiError`, the status of each `DomainError` code, and the handlers.
"""

from __future__ import annotations

import http
import logging

import marshmallow as ma
import peewee
from flask import current_app, json
from werkzeug.exceptions import HTTPException

from partner_api import db
from partner_api.errors import DomainError

PROBLEM_CONTENT_TYPE = "application/problem+json"
log = logging.getLogger(__name__)

# Every problem's `title`: the reason phrases of RFC 9110 section 15 (plus RFC 6585's 428, 429,
# 431 and RFC 7725's 451), fixed here because Python's http.HTTPStatus changed two of them in
# 3.13 (422 "Unprocessable Entity", 413 "Request Entity Too Large" before). The app, the OpenAPI
# examples and the nginx site's own pages (deploy/nginx/partner-api.conf, tested) use these.
STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def status_title(status: int) -> str:
    """The RFC 9110 reason phrase of `status` (Python's, for a status outside the table)."""
    return STATUS_TITLES.get(status) or http.HTTPStatus(status).phrase


def status_name(status: int) -> str:
    """`UNPROCESSABLE_CONTENT`: the title as a name (OpenAPI components), the same on every
    Python (http.HTTPStatus's names changed with its phrases)."""
    return status_title(status).upper().replace(" ", "_").replace("-", "_")


# The code used when a status is raised without a more specific one.
DEFAULT_CODES = {
    400: "bad_request",
    401: "authentication_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "database_unavailable",
}


# The HTTP status of each domain code; a code not listed here is a validation error (422).
STATUS_BY_CODE = {
    "invalid_cursor": 400,
    "secret_mismatch": 403,
    "org_not_found": 404,
    "key_not_found": 404,
    "subscription_not_found": 404,
    "delivery_not_found": 404,
    "subscription_limit_reached": 409,
    "subscription_disabled": 409,
    "subscription_deleted": 409,
    "delivery_not_replayable": 409,
    "dns_lookups_in_flight": 429,
    "dns_lookups_busy": 503,
}


def status_for(code: str) -> int:
    """The HTTP status a domain code answers with."""
    return STATUS_BY_CODE.get(code, 422)


class ApiError(Exception):
    """An error answer: HTTP status, stable code, human detail, optional extras and headers."""

    def __init__(self, status, code, detail, *, errors=None, headers=None, **extra):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


class FieldErrorSchema(ma.Schema):
    location = ma.fields.String(metadata={"description": "`json`, `query` or `path`."})
    field = ma.fields.String(metadata={"description": "Dotted path of the offending field."})
    message = ma.fields.String()


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, extended with `code` (stable, machine-readable)."""

    type = ma.fields.String(metadata={"description": "Always `about:blank`; see `code`."})
    title = ma.fields.String(
        metadata={"description": "The status's reason phrase, as RFC 9110 names it."}
    )
    status = ma.fields.Integer()
    code = ma.fields.String(metadata={"description": "Stable machine-readable error code."})
    detail = ma.fields.String(metadata={"description": "Human-readable explanation."})
    errors = ma.fields.List(
        ma.fields.Nested(FieldErrorSchema),
        metadata={"description": "Per-field problems (validation errors only)."},
    )
    required_scope = ma.fields.String(metadata={"description": "Missing scope (403 only)."})


def problem_body(status, code, detail, errors=None, **extra) -> dict:
    """The problem document for one error."""
    body = {
        "type": "about:blank",
        "title": status_title(status),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def from_domain_error(error: DomainError) -> ApiError:
    """The HTTP answer for a work function's refusal."""
    errors = None
    if error.field is not None:
        errors = [{"location": error.location, "field": error.field, "message": error.message}]
    headers = {} if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    return ApiError(
        status_for(error.code),
        error.code,
        error.message,
        errors=errors,
        headers=headers,
        **error.extra,
    )


def problem_response(error: ApiError):
    """A Flask response for an ApiError."""
    body = problem_body(error.status, error.code, error.detail, error.errors, **error.extra)
    response = current_app.response_class(
        json.dumps(body), status=error.status, mimetype=PROBLEM_CONTENT_TYPE
    )
    response.headers.update(error.headers)
    return response


def flatten_messages(messages, location=None, path=()) -> list[dict]:
    """webargs/marshmallow nested messages → a flat list of {location, field, message}.

    `field` is always a string: the keys from the top joined with dots, each exactly as sent
    (so an unknown `url.` is not reported as `url`, and a nameless parameter is `""`).
    """
    items = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if location is None and key in ("json", "query", "path", "headers", "form"):
                items.extend(flatten_messages(value, key))
            else:
                items.extend(flatten_messages(value, location, (*path, str(key))))
    elif isinstance(messages, list | tuple):
        for message in messages:
            if isinstance(message, dict | list):
                items.extend(flatten_messages(message, location, path))
            else:
                items.append(_field_error(location, path, message))
    else:
        items.append(_field_error(location, path, messages))
    return items


def _field_error(location, path, message) -> dict:
    return {"location": location, "field": ".".join(path), "message": str(message)}


def from_http_exception(error: HTTPException) -> ApiError:
    """Translate werkzeug/webargs exceptions into ApiError."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    if status == 422 and "messages" in data:
        errors = flatten_messages(data["messages"])
        return ApiError(422, "validation_error", "The request has invalid fields.", errors=errors)
    details = {
        404: "No such resource.",
        405: "This method is not allowed on this resource.",
        413: "The request body is too large.",
    }
    detail = details.get(status) or error.description or status_title(status)
    headers = dict(data.get("headers") or {})
    if status == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)
    return ApiError(status, DEFAULT_CODES.get(status, "http_error"), detail, headers=headers)


def handle_unexpected(error: Exception):
    """500 without internals; the traceback goes to the log only."""
    log.exception("unhandled error")
    return problem_response(ApiError(500, "internal_error", "An unexpected error occurred."))


def handle_database_unavailable(error: peewee.DatabaseError):
    """503 while the database cannot be reached or is busy beyond its timeout (a restart, a
    dropped connection, SQLite's lock wait running out): the client may retry, no internals."""
    log.warning("database unavailable: %s", db.error_line(error))
    return problem_response(
        ApiError(
            503,
            "database_unavailable",
            "The database is unavailable; retry shortly.",
            headers={"Retry-After": "1"},
        )
    )


def register_error_handlers(app) -> None:
    app.register_error_handler(ApiError, problem_response)
    app.register_error_handler(DomainError, lambda exc: problem_response(from_domain_error(exc)))
    app.register_error_handler(peewee.OperationalError, handle_database_unavailable)
    app.register_error_handler(peewee.InterfaceError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
