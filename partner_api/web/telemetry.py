"""What every API request leaves behind: its id (echoed as X-Request-Id), one log line and its
metrics, from one pair of hooks and one timer.

Kept together because they run on every request: separately they took a hook pair, a timer and
a dozen context-proxy lookups each, and the log line alone was a fifth of a `GET /me` (cProfile).
"""

from __future__ import annotations

import logging
import time

from flask import g, request

from partner_api import logs
from partner_api.web import metrics

OPERATIONS_BLUEPRINT = "operations"  # probes and scrapes: logged at DEBUG only


def _begin():
    context = g._get_current_object()
    context.request_id = logs.request_id_for(request.headers.get(logs.REQUEST_ID_HEADER))
    context.started = time.perf_counter()


def _end(response):
    context = g._get_current_object()
    response.headers[logs.REQUEST_ID_HEADER] = context.get("request_id") or logs.request_id_for(
        None
    )
    started = context.pop("started", None)
    if started is None:  # the request failed before _begin ran: nothing to time
        return response
    seconds = time.perf_counter() - started
    current = request._get_current_object()
    rule = current.url_rule
    metrics.record_request(
        rule.rule if rule is not None else None, current.method, response.status_code, seconds
    )
    # Probes and scrapes come every few seconds: only at DEBUG, or they would drown the rest.
    blueprint = current.blueprint
    logs.log_request(
        logging.DEBUG if blueprint == OPERATIONS_BLUEPRINT else logging.INFO,
        request_id=context.request_id,
        method=current.method,
        path=current.path,  # never the query string: no caller data in logs
        status=response.status_code,
        duration_ms=round(seconds * 1000, 1),
    )
    return response


def init_app(app) -> None:
    """Give every request an id (kept from X-Request-Id when sane), echo it, log and count it."""
    app.before_request(_begin)
    app.after_request(_end)
