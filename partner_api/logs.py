"""Log lines of the API and the dispatcher: plain text or one JSON object per line.

Fields passed with `extra=` become `key=value` (text) or JSON keys; API lines carry the request id.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from flask import g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-Id"
# A caller's id is kept only when it cannot forge or bloat a log line: short, plain characters.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


# A caller that pastes a credential into the header must not get it written to the logs.
_CREDENTIAL_PREFIXES = ("vc_", "whsec_")


def request_id_for(incoming: str | None) -> str:
    """The caller's X-Request-Id when it is sane and not credential-shaped, else a new one."""
    if (
        incoming
        and _SANE_REQUEST_ID.fullmatch(incoming)
        and not incoming.lower().startswith(_CREDENTIAL_PREFIXES)
    ):
        return incoming
    return uuid.uuid4().hex


def _extra_fields(record: logging.LogRecord) -> dict:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class RequestIdFilter(logging.Filter):
    """Stamps the current request's id on every record logged while serving it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and "request_id" in g and not hasattr(record, "request_id"):
            record.request_id = g.request_id
        return True


class TextFormatter(logging.Formatter):
    """`time level logger message key=value …`."""

    def __init__(self):
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(
            f"{key}={'-' if value is None else value}"
            for key, value in _extra_fields(record).items()
        )
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {fields}{newline}{rest}"


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            timestamp="time",  # RFC 3339 UTC
            rename_fields={"levelname": "level", "name": "logger"},
        )
    return TextFormatter()


def log_handler(log_format: str = "text", stream=None) -> logging.Handler:
    """A handler (stderr by default) in the chosen format; gunicorn's logconfig_dict names it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter())
    handler._partner_api = True  # so a second configure_logging replaces, never stacks
    return handler


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send every logger's lines to stderr in `log_format` (text or json)."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_partner_api", False):
            root.removeHandler(existing)
    root.addHandler(log_handler(log_format))
    root.setLevel(level)


request_log = logging.getLogger("partner_api.requests")


def _take_request_id():
    g.request_id = request_id_for(request.headers.get(REQUEST_ID_HEADER))
    g.log_started = time.perf_counter()


def _log_request(response):
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or request_id_for(None)
    started = g.pop("log_started", None)
    # Probes and scrapes come every few seconds: only at DEBUG, or they would drown the rest.
    level = logging.DEBUG if request.blueprint == "operations" else logging.INFO
    if started is not None and request_log.isEnabledFor(level):
        request_log.log(
            level,
            "request",
            extra={
                "method": request.method,
                "path": request.path,  # never the query string: no caller data in logs
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
    return response


def init_app(app) -> None:
    """Give every request an id (kept from X-Request-Id when sane), echo it, log the answer."""
    app.before_request(_take_request_id)
    app.after_request(_log_request)


def gunicorn_logconfig(log_format: str) -> dict:
    """gunicorn's `logconfig_dict`: its own lines in the same format, through the same handler.

    Its access log stays quiet: the app logs each request itself, with the request id.
    """
    return {
        "root": {"level": "INFO", "handlers": ["partner_api"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
        "handlers": {
            "partner_api": {"()": "partner_api.logs.log_handler", "log_format": log_format}
        },
        "formatters": {},
    }
