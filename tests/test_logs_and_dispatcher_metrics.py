"""Log lines in both formats (no credential in any), and the dispatcher's metrics, in-process."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import re
import sys

import pytest
from prometheus_client import generate_latest

from dispatcher import metrics as dispatcher_metrics
from dispatcher.dispatch import Dispatcher
from harness.receivers import Receiver
from partner_api import logs
from partner_api.db import database
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import disable_subscription
from partner_api.models import Subscription

from .conftest import bearer
from .test_operations import samples

HOOKS = "/api/v1/partner/webhooks"


@pytest.fixture
def captured_lines():
    """Every line logged (any logger, DEBUG up) in a given format, as the handler writes it."""
    streams = []

    def capture(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        handler = logs.log_handler(log_format, stream)
        handler.setLevel(logging.DEBUG)
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)  # after create_app, which sets INFO
        streams.append(handler)
        return stream

    root = logging.getLogger()
    level = root.level
    yield capture
    for handler in streams:
        root.removeHandler(handler)
    root.setLevel(level)


def run_a_whole_session(app, config, token, runner, key_id, clock):
    """Create, ping (right and wrong secret), a failed then a retried delivery, the failure
    audit, revoke; returns the secret."""
    client = app.test_client()
    with Receiver([(500, {}, b"down"), (200, {}, b"ok")]) as receiver:
        created = client.post(
            HOOKS,
            json={"url": receiver.url(), "description": "session"},
            headers={**bearer(token), "X-Request-Id": "session-create"},
        )
        assert created.status_code == 201
        subscription = created.get_json()
        secret = subscription["secret"]
        test_path = f"{HOOKS}/{subscription['id']}/test"
        assert (
            client.post(test_path, json={"secret": "whsec_no"}, headers=bearer(token)).status_code
            == 403
        )
        assert (
            client.post(test_path, json={"secret": secret}, headers=bearer(token)).status_code
            == 202
        )
        dispatcher = Dispatcher(config)
        try:
            dispatcher.run_until_idle()  # 500: a failed attempt
            clock.advance(config.retry_schedule[0])
            dispatcher.run_until_idle()  # 200
        finally:
            dispatcher.close()
        assert len(receiver.requests) == 2
    audit = client.get(f"{HOOKS}/{subscription['id']}/failures", headers=bearer(token))
    assert audit.status_code == 200 and len(audit.get_json()["data"]) == 1
    assert runner.invoke(args=["keys", "revoke", key_id]).exit_code == 0
    assert client.get("/api/v1/partner/me", headers=bearer(token)).status_code == 401
    return secret


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_token_or_webhook_secret_reaches_any_log_line(
    config, make_app, make_key, captured_lines, clock, log_format
):
    config = dataclasses.replace(config, log_format=log_format)
    app = make_app(log_format=log_format)
    stream = captured_lines(log_format)
    _, key, token = make_key()
    secret = run_a_whole_session(app, config, token, app.test_cli_runner(), key.id, clock)

    lines = stream.getvalue().splitlines()
    assert any("peewee" in line for line in lines), "DEBUG lines were not captured"
    for line in lines:
        assert token not in line and token[3:] not in line
        assert secret not in line and secret[len("whsec_") :] not in line
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert all(line.startswith(("{", " ", "Traceback")) for line in lines)
        requests = [r for r in records if r["logger"] == "partner_api.requests"]
        attempts = [r for r in records if r["logger"] == "dispatcher" and r["message"] == "attempt"]
    else:
        requests = [line for line in lines if " partner_api.requests request " in line]
        attempts = [line for line in lines if " dispatcher attempt " in line]
    assert len(requests) == 5
    assert len(attempts) == 2
    if log_format == "json":
        assert all(r["request_id"] for r in requests)
        assert requests[0]["request_id"] == "session-create"
        first = attempts[0]
        assert {"delivery", "subscription", "attempt", "outcome", "status", "duration_ms"} <= set(
            first
        )
        assert (first["attempt"], first["outcome"], first["status"]) == (1, "http_status", 500)
        assert attempts[1]["outcome"] == "ok" and attempts[1]["next"] == "delivered"
    else:
        assert all(" request_id=" in line for line in requests)
        assert "request_id=session-create" in requests[0]
        assert " attempt=1 outcome=http_status status=500 duration_ms=" in attempts[0]
        assert " outcome=ok status=200 " in attempts[1] and attempts[1].endswith("next=delivered")
    # Every line written while a request was served carries that request's id.
    request_scoped = [
        r
        for r in (records if log_format == "json" else [])
        if r["logger"].startswith("partner_api")
    ]
    assert all("request_id" in r for r in request_scoped)


def scrape() -> dict:
    return samples(generate_latest(dispatcher_metrics.REGISTRY).decode())


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def test_queue_gauges_show_due_deliveries_their_age_held_and_disabled(
    subscribe, make_key, clock, db
):
    org, _, _ = make_key()
    with Receiver() as receiver:
        for _ in range(2):
            subscribe(org.id, receiver.url())
    for n in range(3):
        publish_event(org.id, "vc.test.ping", {"n": n})
        clock.advance(10)
    # One subscription disabled: its two deliveries are held, not due.
    disabled = Subscription.select().order_by(Subscription.id).first()
    disable_subscription(disabled.id)

    scraped = scrape()
    assert value(scraped, "partner_api_dispatcher_database_up") == 1
    assert value(scraped, "partner_api_deliveries_due") == 3
    assert value(scraped, "partner_api_oldest_due_seconds") == 30
    assert value(scraped, "partner_api_deliveries_held") == 3
    assert value(scraped, "partner_api_subscriptions_disabled") == 1
    clock.advance(60)
    assert value(scrape(), "partner_api_oldest_due_seconds") == 90


def test_attempts_are_counted_by_outcome_with_durations_and_the_poll_time(
    subscribe, config, make_key, clock, db
):
    org, _, _ = make_key()
    before = scrape()
    with Receiver([(200, {}, b"ok"), (503, {}, b"busy")]) as receiver:
        subscribe(org.id, receiver.url())
        for n in range(2):
            publish_event(org.id, "vc.test.ping", {"n": n})
        dispatcher = Dispatcher(dataclasses.replace(config, dispatch_workers=1))
        try:
            dispatcher.run_until_idle()
        finally:
            dispatcher.close()
    after = scrape()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("partner_api_delivery_attempts_total", outcome="ok") == 1
    assert delta("partner_api_delivery_attempts_total", outcome="http_status") == 1
    assert delta("partner_api_delivery_attempt_seconds_count") == 2
    assert value(after, "partner_api_dispatcher_last_poll_timestamp_seconds") == (
        clock.current.replace(tzinfo=dt.UTC).timestamp()
    )
    assert value(after, "partner_api_deliveries_due") == 0


def test_queue_gauges_report_a_database_that_does_not_answer(config, clock, caplog):
    database.execute_sql("DROP TABLE delivery_failures")  # any failure will do
    database.execute_sql("DROP TABLE delivery_history")
    database.execute_sql("DROP TABLE deliveries")
    scraped = scrape()
    assert value(scraped, "partner_api_dispatcher_database_up") == 0
    assert ("partner_api_deliveries_due", frozenset()) not in scraped
    assert "queue gauges unavailable" in caplog.text


@pytest.mark.parametrize("created", [1_800_000_000.0, 1_800_000_000.999, 1_800_000_059.5004])
def test_text_lines_carry_the_time_as_logging_s_default_formatter_writes_it(created):
    ours, default = logs.TextFormatter(), logging.Formatter("%(asctime)s")
    for offset in (0.0, 0.25, 1.0):  # the same second twice, then the next one
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
        record.created = created + offset
        record.msecs = (record.created - int(record.created)) * 1000
        assert ours.formatTime(record) == default.formatTime(record)


def test_a_text_line_is_logging_s_own_format_followed_by_the_fields():
    record = logging.LogRecord("partner_api.requests", 20, __file__, 1, "r %s", (7,), None)
    record.method, record.status, record.request_id = "GET", 200, None
    head = logging.Formatter(logs._TEXT_FORMAT).format(record)
    assert logs.TextFormatter().format(record) == f"{head} method=GET status=200 request_id=-"


def test_a_traceback_stays_below_the_fields_of_its_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    record.attempt = 3
    first, *rest = logs.TextFormatter().format(record).splitlines()
    assert first.endswith("ERROR x failed attempt=3")
    # Indented: a line that starts with a space continues the record above it.
    assert rest[0] == "  Traceback (most recent call last):" and rest[-1] == "  ValueError: boom"


@pytest.fixture
def only_our_handler():
    """Root's handlers replaced by one log_handler (as under gunicorn): pytest's capture
    handler would otherwise send every request line through logging's own path."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level

    def install(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        root.handlers[:] = [logs.log_handler(log_format, stream)]
        root.setLevel(logging.INFO)
        return stream

    yield install
    root.handlers[:] = saved
    root.setLevel(level)


REQUEST_FIELDS = {
    "request_id": "r-1",
    "method": "GET",
    "path": "/api/v1/partner/me",
    "status": 200,
    "duration_ms": 1.5,
}


def _without_time(line: str, log_format: str) -> str:
    if log_format == "json":
        record = json.loads(line)
        assert record.pop("time")
        return json.dumps(record, sort_keys=True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", line[:23]), line
    return line[23:]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_request_line_written_directly_is_the_line_logging_would_write(
    only_our_handler, log_format
):
    stream = only_our_handler(log_format)
    assert logs._only_handler(logging.INFO) is logging.getLogger().handlers[0]
    logs.log_request(logging.INFO, **REQUEST_FIELDS)  # straight to the one handler
    direct = stream.getvalue()
    # A filter on the logger makes the line take logging's whole path.
    passthrough = logging.Filter()
    logs.request_log.addFilter(passthrough)
    try:
        assert logs._only_handler(logging.INFO) is None
        logs.log_request(logging.INFO, **REQUEST_FIELDS)
    finally:
        logs.request_log.removeFilter(passthrough)
    first, second = stream.getvalue()[len(direct) :], direct
    assert direct.endswith("\n") and first.endswith("\n")
    assert _without_time(second.rstrip("\n"), log_format) == _without_time(
        first.rstrip("\n"), log_format
    )
    if log_format == "text":
        assert second[23:].startswith(" INFO partner_api.requests request request_id=r-1 method=")


def test_a_request_line_reaches_every_other_handler_and_respects_levels(only_our_handler):
    stream = only_our_handler("text")
    extra = io.StringIO()
    other = logging.StreamHandler(extra)
    logging.getLogger("partner_api").addHandler(other)
    try:
        logs.log_request(logging.INFO, **REQUEST_FIELDS)
    finally:
        logging.getLogger("partner_api").removeHandler(other)
    assert "request_id=r-1" in stream.getvalue()
    assert extra.getvalue() == "request\n"  # the other handler saw it too
    # Below the handler's level: no line, and DEBUG (probes) is below the root's INFO.
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    logs.log_request(logging.INFO, **REQUEST_FIELDS)
    logs.log_request(logging.DEBUG, **REQUEST_FIELDS)
    assert stream.getvalue().count("\n") == 1


def test_a_filter_on_the_handler_or_a_disabled_logger_is_obeyed(only_our_handler):
    stream = only_our_handler("text")
    handler = logging.getLogger().handlers[0]
    dropping = logging.Filter("nothing.matches")  # refuses every partner_api line
    handler.addFilter(dropping)
    logs.log_request(logging.INFO, **REQUEST_FIELDS)
    handler.removeFilter(dropping)
    logs.request_log.disabled = True  # as dictConfig leaves loggers it was not told about
    try:
        logs.log_request(logging.INFO, **REQUEST_FIELDS)
    finally:
        logs.request_log.disabled = False
    assert stream.getvalue() == ""
    logs.log_request(logging.INFO, **REQUEST_FIELDS)
    assert "request_id=r-1" in stream.getvalue()


def test_a_log_record_factory_sees_every_request_line(only_our_handler):
    stream = only_our_handler("text")
    default = logging.getLogRecordFactory()

    def traced(*args, **kwargs):
        record = default(*args, **kwargs)
        record.trace = "t-9"
        return record

    logging.setLogRecordFactory(traced)
    try:
        logs.log_request(logging.INFO, **REQUEST_FIELDS)
    finally:
        logging.setLogRecordFactory(default)
    assert " request trace=t-9 request_id=r-1 method=GET " in stream.getvalue()


def test_a_request_line_that_cannot_be_written_is_reported_not_raised(only_our_handler, capsys):
    only_our_handler("text")
    logging.getLogger().handlers[0].stream.close()  # writing now raises ValueError
    logs.log_request(logging.INFO, **REQUEST_FIELDS)  # no exception into the request
    assert "--- Logging error ---" in capsys.readouterr().err
