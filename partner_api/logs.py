"""Log lines of the API and the dispatcher: plain text or one JSON object per line.

Fields passed with `extra=` become `key=value` (text) or JSON keys; API lines carry the request id.
A text line escapes what a caller could use to forge a line or a field (see `escaped`).
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

from partner_api.delivery.signing import SECRET_PREFIX
from partner_api.tokens import TOKEN_PREFIX

REQUEST_ID_HEADER = "X-Request-Id"
# A caller's id is kept only when it cannot forge or bloat a log line: short, plain characters
# (the nginx site, deploy/nginx/partner-api.conf, applies the same rule to its own answers).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


# A caller that pastes a credential into the header, anywhere in it, must not get it logged.
_CREDENTIAL_PREFIXES = (TOKEN_PREFIX.lower(), SECRET_PREFIX.lower())


def request_id_for(incoming: str | None) -> str:
    """The caller's X-Request-Id when it is sane and holds no key or secret prefix, else a new
    one. Runs on every request: its cost grows with the header's length (at most 64 checked)."""
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        lowered = incoming.lower()
        if not any(prefix in lowered for prefix in _CREDENTIAL_PREFIXES):
            return incoming
    return secrets.token_hex(16)


class RequestIdFilter(logging.Filter):
    """Stamps the current request's id on every record logged while serving it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__ and has_request_context() and "request_id" in g:
            record.request_id = g.request_id
        return True


class TextFormatter(logging.Formatter):
    """`time level logger message key=value …`."""

    def __init__(self):
        super().__init__(_TEXT_FORMAT)
        self._second = (None, "")  # (whole second, its date and time text)

    def formatTime(self, record: logging.LogRecord, datefmt=None) -> str:
        """logging's default text, with the date and time part made once a second."""
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        extra = {
            key: value
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and key[0] != "_"
        }
        line = self.line(record, _message(record), extra)
        if record.exc_info or record.exc_text or record.stack_info:
            # A traceback stays below the fields, each of its lines indented: a line that
            # starts with a space continues the record above, so none can pass for a record.
            below = "\n".join(filter(None, [self._exception_text(record), record.stack_info]))
            line += "".join(f"\n  {escaped(text, _PROSE_UNSAFE)}" for text in below.split("\n"))
        return line

    def _exception_text(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)  # cached, as logging does
        return record.exc_text

    def line(self, record: logging.LogRecord, message: str, extra: dict) -> str:
        """A line without traceback, built directly: the same text as _TEXT_FORMAT's followed by
        the fields, in half the time of Formatter's general machinery."""
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {message}"
        return f"{line} {_fields_text(extra)}" if extra else line


def _fields_text(extra: dict) -> str:
    """`key=value …`; each value escaped, so it cannot end the line or start another field."""
    return " ".join(f"{key}={_field_value(value)}" for key, value in extra.items())


def _field_value(value) -> str:
    if value is None:
        return "-"
    if type(value) in (int, float):
        return str(value)
    return escaped(value if type(value) is str else str(value), _FIELD_UNSAFE)


# Written as an escape in a text line: anything but printable ASCII (every C0 control, DEL,
# C1 controls, line and paragraph separators, other non-printable code points; printable
# non-ASCII text stays), and the backslash that starts an escape. In a field value also the
# space, `=` and `"`, which could start a field of the caller's own; in the message (prose
# written by this code, with values of its own) and under a traceback, spaces stay.
_FIELD_UNSAFE = re.compile(r"[^\x21\x23-\x3c\x3e-\x5b\x5d-\x7e]")
_MESSAGE_UNSAFE = re.compile(r"[^\x20-\x21\x23-\x3c\x3e-\x5b\x5d-\x7e]")
_PROSE_UNSAFE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")


def escaped(text: str, unsafe: re.Pattern = _FIELD_UNSAFE) -> str:
    """`text` with each character `unsafe` matches written as `\\xNN`, `\\uNNNN` or
    `\\UNNNNNNNN` (its code point), printable non-ASCII characters excepted: `/a\\x0d\\x0ab\\x3d1`
    for a path `/a<CR><LF>b=1`. The cost grows with the text's length, and a plain value is
    checked by one regex search."""
    if unsafe.search(text) is None:
        return text
    return unsafe.sub(_escape, text)


def _escape(match: re.Match) -> str:
    character = match.group()
    code = ord(character)
    if code > 0x7F and character.isprintable():
        return character
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _message(record: logging.LogRecord) -> str:
    """The record's message, each value put into it escaped like a field's but for its spaces
    (a database error's text reads as words), the message's own text only for control
    characters."""
    args = record.args
    if not args:
        return escaped(str(record.msg), _PROSE_UNSAFE)
    if isinstance(args, tuple):
        try:
            return str(record.msg) % tuple(
                arg if type(arg) in (int, float, bool) else escaped(str(arg), _MESSAGE_UNSAFE)
                for arg in args
            )
        except (TypeError, ValueError):
            pass  # a format that wants the value itself (%d of a Decimal, say): the whole line
    return escaped(record.getMessage(), _MESSAGE_UNSAFE)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            timestamp="time",  # RFC 3339 UTC
            rename_fields={"levelname": "level", "name": "logger"},
        )
    return TextFormatter()


def _lean_records() -> None:
    """Skip what no line shows, as the Logging HOWTO's "Optimization" section shows: the
    caller's file and line (a stack walk per record, a third of a request's log line) and the
    multiprocessing name. Process and thread ids stay: gunicorn's own format prints the pid."""
    logging._srcfile = None
    logging.logMultiprocessing = False


def log_handler(log_format: str = "text", stream=None) -> logging.Handler:
    """A handler (stderr by default) in the chosen format; gunicorn's logconfig_dict names it."""
    _lean_records()
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


def log_request(level: int, **fields) -> None:
    """The one line per API request (`request` plus `fields`), when `level` is enabled.

    When the line's only destination is configure_logging's handler (so no filter or other
    handler could see it) and records are logging's own (no record factory adds to them), it
    goes there directly, and a text line is written without the record and handler machinery:
    logging's path was the largest part of the request line, and the line the largest item of
    a `GET /me` after the database (profiles in bench/README.md)."""
    if not request_log.isEnabledFor(level):
        return
    handler = _only_handler(level)
    if handler is None or logging.getLogRecordFactory() is not logging.LogRecord:
        request_log.log(level, "request", extra=fields)
        return
    record = logging.LogRecord(
        request_log.name, level, _UNKNOWN_FILE, 0, "request", None, None, _UNKNOWN_FUNCTION
    )
    formatter = handler.formatter
    if type(formatter) is not TextFormatter:
        record.__dict__.update(fields)
        handler.handle(record)
        return
    with handler.lock:
        try:
            handler.stream.write(formatter.line(record, "request", fields) + handler.terminator)
            handler.flush()
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:  # as StreamHandler.emit: reported, never raised into the request
            record.__dict__.update(fields)
            handler.handleError(record)


# What logging records for the caller when its lookup is off (see _lean_records).
_UNKNOWN_FILE, _UNKNOWN_FUNCTION = "(unknown file)", "(unknown function)"


def _only_handler(level: int) -> logging.StreamHandler | None:
    """configure_logging's handler, when it is the only one a request line reaches, takes
    `level`, and no logger on the way (nor the handler, but for its request-id stamp) filters or
    is disabled; else None (the line goes through logging, which decides)."""
    if request_log.disabled:
        return None
    found, logger = None, request_log
    while logger is not None:
        if logger.filters:
            return None
        for handler in logger.handlers:
            if found is not None or not getattr(handler, "_partner_api", False):
                return None
            found = handler
        if not logger.propagate:
            break
        logger = logger.parent
    if found is None or level < found.level:
        return None
    if any(type(check) is not RequestIdFilter for check in found.filters):
        return None
    return found


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
