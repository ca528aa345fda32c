"""The OpenAPI document's shared parts: top-level options, documented error answers and the
`webhooks` section, with wording generated from the configuration the code runs on.
"""

from __future__ import annotations

from flask_smorest.utils import prepare_response

from partner_api.config import Config
from partner_api.delivery import retry, signing, webhook_url
from partner_api.delivery.event_types import EVENT_TYPES
from partner_api.web.problems import (
    DEFAULT_CODES,
    PROBLEM_CONTENT_TYPE,
    problem_body,
    status_name,
    status_title,
)

# An example answer per status, and every `code` an error of that status can carry.
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
    503: ("database_unavailable", "The database is unavailable; retry shortly."),
}
_STATUS_CODES = {
    400: ("invalid_json", "invalid_cursor"),
    401: ("authentication_required", "invalid_token"),
    403: ("insufficient_scope", "secret_mismatch"),
    404: ("not_found", "subscription_not_found", "delivery_not_found"),
    405: ("method_not_allowed",),
    409: ("subscription_limit_reached", "subscription_disabled", "delivery_not_replayable"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    422: (
        "validation_error",
        "unknown_event_type",
        "event_types_with_wildcard",
        "no_fields",
        "invalid_idempotency_key",
        "idempotency_key_reused",
        *sorted(webhook_url.ERROR_CODES),
    ),
    429: ("rate_limited", "dns_lookups_in_flight"),
    500: ("internal_error",),
    503: ("database_unavailable", "dns_lookups_busy"),
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


def spec_options(config: Config) -> dict:
    """flask-smorest's API_SPEC_OPTIONS: description, security and the `webhooks` section."""
    return {
        "info": {
            "description": (
                "Authenticated identity and signed, retried webhooks for partners. "
                "Every error answers `application/problem+json` (RFC 9457) with a stable "
                "`code`. Webhook deliveries are POSTed with `X-VC-Timestamp` and "
                "`X-VC-Signature: v1=<hex HMAC-SHA256 of '<timestamp>.<body>'>`, and with "
                "the Standard Webhooks `webhook-id`, `webhook-timestamp` and "
                "`webhook-signature` (see `webhooks`)."
            )
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key token (`vc_…`) provisioned by the operator.",
                }
            }
        },
        "security": [{"bearerAuth": []}],
        "webhooks": webhooks_section(config),
    }


def register_error_responses(spec, error_schema) -> None:
    """Error responses as problem+json components, each with an example and its codes."""
    for name, header in _RATE_LIMIT_HEADER_DOCS.items():
        spec.components.header(name, header)
    for status in _EXAMPLE_DETAILS:
        response = _error_response(status, error_schema)
        prepare_response(response, spec, PROBLEM_CONTENT_TYPE)
        spec.components.response(status_name(status), response, lazy=True)
    response = {
        "description": "Any other error.",
        "schema": error_schema,
        "example": problem_body(500, DEFAULT_CODES[500], _EXAMPLE_DETAILS[500][1]),
    }
    prepare_response(response, spec, PROBLEM_CONTENT_TYPE)
    spec.components.response("DEFAULT_ERROR", response, lazy=True)


def _error_response(status: int, error_schema) -> dict:
    code, detail = _EXAMPLE_DETAILS[status]
    example = problem_body(status, code, detail)
    if status == 422:
        example["errors"] = [
            {"location": "json", "field": "url", "message": "Missing data for required field."}
        ]
    if status == 403:
        example["required_scope"] = "webhooks:manage"
    codes = ", ".join(f"`{code}`" for code in _STATUS_CODES[status])
    response = {
        "description": f"{status_title(status)}; `code` is one of {codes}.",
        "schema": error_schema,
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
    elif status == 503:  # may come before the key is counted
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds after which a retry may succeed.",
                "schema": {"type": "integer"},
            }
        }
    elif status != 405:  # a 405 is answered by routing, before any key is counted
        response["headers"] = dict(RATE_LIMIT_HEADERS)
    if status == 429:
        response["headers"]["Retry-After"] = {
            "description": "Seconds until the window resets (`rate_limited`), or after which "
            "a lookup slot should be free (`dns_lookups_in_flight`).",
            "schema": {"type": "integer"},
        }
    return response


_SIGNATURE_HEADERS = [
    {
        "name": signing.TIMESTAMP_HEADER,
        "in": "header",
        "required": True,
        "description": "Unix seconds at the moment of this attempt (fresh on every retry). "
        "Reject deliveries older than 5 minutes.",
        "schema": {"type": "string", "example": "1795780830"},
    },
    {
        "name": signing.SIGNATURE_HEADER,
        "in": "header",
        "required": True,
        "description": "`v1=` + lowercase hex HMAC-SHA256, keyed with the subscription "
        f"secret's UTF-8 bytes, of `<{signing.TIMESTAMP_HEADER}>.<raw body bytes>`. Compare in "
        "constant time.",
        "schema": {
            "type": "string",
            "example": "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e7b8b2a3dc3e4f1a0c6d8e9f21",
        },
    },
    {
        "name": signing.WEBHOOK_ID_HEADER,
        "in": "header",
        "required": True,
        "description": "Standard Webhooks message id: the event id (`id` in the body), the same "
        "on every attempt.",
        "schema": {"type": "string", "example": "evt_uz6lt44a4hpsvjpzaq426i5eoa"},
    },
    {
        "name": signing.WEBHOOK_TIMESTAMP_HEADER,
        "in": "header",
        "required": True,
        "description": f"Standard Webhooks timestamp: the same value as "
        f"`{signing.TIMESTAMP_HEADER}`.",
        "schema": {"type": "string", "example": "1795780830"},
    },
    {
        "name": signing.WEBHOOK_SIGNATURE_HEADER,
        "in": "header",
        "required": True,
        "description": "Standard Webhooks signature (standardwebhooks.com): `v1,` + base64 "
        f"HMAC-SHA256, keyed with the base64-decoded bytes after `{signing.SECRET_PREFIX}` in "
        f"the subscription secret, of `<{signing.WEBHOOK_ID_HEADER}>."
        f"<{signing.WEBHOOK_TIMESTAMP_HEADER}>.<raw body bytes>`. Any Standard Webhooks "
        "library verifies it, given the subscription secret as it is.",
        "schema": {"type": "string", "example": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="},
    },
]
_ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["event", "id", "subscription_id", "occurred_at", "data"],
    "properties": {
        "event": {"type": "string", "description": "The event type."},
        "id": {
            "type": "string",
            "description": "Event id; the same on every attempt, so receivers can "
            "de-duplicate on it.",
        },
        "subscription_id": {"type": "string"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "data": {"type": "object"},
    },
}


def delivery_terms(config: Config) -> str:
    """How a delivery succeeds or is retried, in the words of the running configuration."""
    return (
        f"A 2xx answer within {retry.describe_seconds(config.delivery_timeout)} is success; "
        "anything else, redirects included (never followed), is retried after "
        f"{retry.describe_schedule(config.retry_schedule)}, then dead-lettered "
        f"({retry.max_attempts(config.retry_schedule)} attempts in all). "
        f"{auto_disable_terms(config)}"
    )


def auto_disable_terms(config: Config) -> str:
    """The auto-disable rule, in the words of the running configuration."""
    after = config.auto_disable_after
    lasted = ""
    if config.auto_disable_min_seconds:
        minimum = retry.describe_seconds(config.auto_disable_min_seconds)
        lasted = f" once that streak has lasted {minimum} since its first failure"
    return (
        f"A subscription is disabled after {after} consecutive failed attempts{lasted}; "
        "one successful attempt ends the streak. Its deliveries are then held until it is "
        "enabled again."
    )


def webhooks_section(config: Config) -> dict:
    """OpenAPI 3.1 `webhooks`: what a receiver gets for each event type, and how to verify it."""
    return {
        event_type: {
            "post": {
                "summary": description,
                "description": "POSTed to the subscription URL with `Content-Type: "
                f"application/json`. {delivery_terms(config)}",
                "security": [],
                "parameters": _SIGNATURE_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _ENVELOPE_SCHEMA,
                            "example": {
                                "event": event_type,
                                "id": "evt_uz6lt44a4hpsvjpzaq426i5eoa",
                                "subscription_id": "wh_tpuhksvmcfwqmj3bgj72wzf2fe",
                                "occurred_at": "2026-11-27T06:34:08.592Z",
                                "data": {"message": "Test ping from Partner API."},
                            },
                        }
                    },
                },
                "responses": {
                    "2XX": {"description": "Delivered."},
                    "default": {"description": "A failed attempt; it will be retried."},
                },
            }
        }
        for event_type, description in EVENT_TYPES.items()
    }
