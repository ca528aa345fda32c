"""Requests an outside review sent to break the HTTP edge: over-long chunked bodies, slash
merging under a forged Host, and caching of the one answer that carries a secret."""

from __future__ import annotations

import http.client
import io
import json
import urllib.parse

import pytest

from partner_api.db import database
from partner_api.models import Subscription
from partner_api.web.app import MAX_BODY_BYTES
from partner_api.web.problems import STATUS_TITLES

from .conftest import assert_problem, bearer, gunicorn_server

WEBHOOKS = "/api/v1/partner/webhooks"
LOOPBACK_URL = "http://127.0.0.1:9/hook"


def count_subscriptions() -> int:
    with database.connection_context():
        return Subscription.select().count()


def json_of_exactly(size: int) -> bytes:
    """A valid create body padded with JSON whitespace to exactly `size` bytes."""
    head, tail = b'{"url": "' + LOOPBACK_URL.encode() + b'"', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


# Valid JSON up to the limit, then 100 KiB more: a server that truncates would accept it.
OVERSIZED = json_of_exactly(MAX_BODY_BYTES) + b" " * (100 * 1024)


def chunks(body: bytes, size: int = 8192):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def post_chunked(base: str, token: str, body: bytes):
    """POST with Transfer-Encoding: chunked (no Content-Length), as curl -T - would."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(
            "POST",
            WEBHOOKS,
            body=chunks(body),
            headers={"Content-Type": "application/json", **bearer(token)},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), json.loads(response.read())
    finally:
        connection.close()


def chunked_test_request(client, token, body: bytes):
    """The test client's equivalent: a stream without length that the server terminates."""
    return client.post(
        WEBHOOKS,
        input_stream=io.BytesIO(body),
        headers={
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            **bearer(token),
        },
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_chunked_body_over_the_limit_is_413_not_truncated_and_parsed(client, make_key):
    _, _, token = make_key()
    response = chunked_test_request(client, token, OVERSIZED)
    assert_problem(response, 413, "payload_too_large")
    assert count_subscriptions() == 0


def test_chunked_body_of_exactly_the_limit_is_accepted(client, make_key):
    _, _, token = make_key()
    response = chunked_test_request(client, token, json_of_exactly(MAX_BODY_BYTES))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert count_subscriptions() == 1


def test_chunked_body_over_the_limit_is_413_through_a_real_werkzeug_server(live_server, make_key):
    _, _, token = make_key()
    status, content_type, body = post_chunked(live_server, token, OVERSIZED)
    assert (status, content_type, body["code"]) == (
        413,
        "application/problem+json",
        "payload_too_large",
    )
    assert count_subscriptions() == 0
    status, _, body = post_chunked(live_server, token, json_of_exactly(MAX_BODY_BYTES))
    assert status == 201 and body["url"] == LOOPBACK_URL


def test_chunked_body_over_the_limit_is_413_through_gunicorn(database_url, make_key):
    _, _, token = make_key()
    loopback = {
        "PARTNER_API_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
        "PARTNER_API_ALLOW_HTTP_WEBHOOKS": "true",
    }
    with gunicorn_server(database_url, env=loopback) as base:
        status, content_type, body = post_chunked(base, token, OVERSIZED)
        assert (status, content_type, body["code"]) == (
            413,
            "application/problem+json",
            "payload_too_large",
        )
        assert count_subscriptions() == 0
        status, _, body = post_chunked(base, token, json_of_exactly(MAX_BODY_BYTES))
        assert status == 201 and body["url"] == LOOPBACK_URL


@pytest.mark.parametrize("path", ["//api/v1/partner/webhooks", "/api/v1/partner//webhooks"])
def test_doubled_slashes_are_404_not_a_redirect_to_a_forged_host(client, make_key, path):
    _, _, token = make_key()
    response = client.get(path, headers={"Host": "evil.example", **bearer(token)})
    assert_problem(response, 404, "not_found")
    assert "Location" not in response.headers
    assert "evil.example" not in response.get_data(as_text=True)


def test_the_answer_carrying_the_secret_is_not_stored_by_caches(client, make_key):
    _, _, token = make_key()
    response = client.post(WEBHOOKS, json={"url": LOOPBACK_URL}, headers=bearer(token))
    assert response.status_code == 201 and response.get_json()["secret"].startswith("whsec_")
    assert response.headers["Cache-Control"] == "no-store"


def test_422_and_413_titles_are_rfc_9110_s_whatever_the_python_version(client, make_key):
    """Python's http.HTTPStatus said "Unprocessable Entity" and "Request Entity Too Large"
    before 3.13; the app, its OpenAPI examples and the nginx pages say RFC 9110's phrases."""
    _, _, token = make_key()
    invalid = client.post(WEBHOOKS, json={}, headers=bearer(token))
    assert assert_problem(invalid, 422, "validation_error")["title"] == "Unprocessable Content"
    too_large = client.post(
        WEBHOOKS,
        data=b" " * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/json", **bearer(token)},
    )
    assert assert_problem(too_large, 413, "payload_too_large")["title"] == "Content Too Large"
    assert count_subscriptions() == 0

    responses = client.get("/api/v1/partner/openapi.json").get_json()["components"]["responses"]
    assert responses["UNPROCESSABLE_CONTENT"]["description"].startswith("Unprocessable Content;")
    examples = {
        name: response["content"]["application/problem+json"]["example"]
        for name, response in responses.items()
    }
    assert examples["UNPROCESSABLE_CONTENT"]["title"] == "Unprocessable Content"
    assert examples["CONTENT_TOO_LARGE"]["title"] == "Content Too Large"
    for example in examples.values():
        assert example["title"] == STATUS_TITLES[example["status"]]
