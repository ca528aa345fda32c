"""The shipped nginx site in front of the shipped gunicorn config, on loopback ports.

Half-sent requests hold gunicorn's sync workers when it is exposed, but not behind nginx; the
refusals nginx answers itself are problem+json with a `code`.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness.net import get, half_sent_requests
from harness.seed import sqlite_with_key
from harness.servers import nginx_binary, start_gunicorn, start_nginx

pytestmark = pytest.mark.skipif(
    nginx_binary() is None,
    reason="nginx is not installed (`make nginx` installs Debian's package, as root)",
)
ME = "/api/v1/partner/me"


@dataclasses.dataclass
class Stack:
    gunicorn_port: int
    nginx_port: int
    token: str
    gunicorn: subprocess.Popen
    gunicorn_log: Path


@pytest.fixture
def stack(tmp_path):
    """gunicorn with 2 workers and the shipped config, nginx with the shipped site in front."""
    url, token = sqlite_with_key(tmp_path / "api.sqlite3")
    gunicorn_log = tmp_path / "gunicorn.log"
    gunicorn = start_gunicorn({"DATABASE_URL": url}, gunicorn_log)
    nginx = None
    try:
        nginx, port = start_nginx(tmp_path / "nginx", gunicorn.port)
        yield Stack(gunicorn.port, port, token, gunicorn.process, gunicorn_log)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=30)
        gunicorn.stop()


def raw(port: int, request: bytes):
    """Send bytes as they are; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.headers, response.read()


def assert_problem(status, headers, body, expected_status, code):
    assert status == expected_status, body
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == expected_status and problem["code"] == code
    assert problem["type"] == "about:blank" and problem["title"] and problem["detail"]
    return problem


def test_half_sent_requests_hold_exposed_gunicorn_but_not_nginx(stack):
    gunicorn_port, nginx_port, token = stack.gunicorn_port, stack.nginx_port, stack.token
    auth = {"Authorization": f"Bearer {token}"}
    assert get(nginx_port, ME, auth)[0] == 200

    # Baseline, side by side: straight at gunicorn, two stalled requests take both workers.
    stalled = half_sent_requests(gunicorn_port, token)
    try:
        time.sleep(0.2)  # let the workers pick them up
        with pytest.raises(TimeoutError):
            get(gunicorn_port, ME, auth, timeout=3.0)
    finally:
        for sock in stalled:
            sock.close()

    stalled = half_sent_requests(nginx_port, token)
    try:
        time.sleep(0.2)
        timings = []
        for _ in range(5):
            status, headers, _, seconds = get(nginx_port, ME, auth)
            assert status == 200 and headers["X-Request-Id"]
            timings.append(seconds)
        assert max(timings) < 0.1, timings
    finally:
        for sock in stalled:
            sock.close()


def test_nginx_refusals_are_problem_json_with_a_code(stack):
    port = stack.nginx_port
    status, headers, body = raw(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    )
    assert_problem(status, headers, body, 431, "header_too_large")
    assert headers["X-Request-Id"]

    big = b"{" + b" " * (70 * 1024) + b"}"
    status, headers, body = raw(
        port,
        b"POST /api/v1/partner/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(big)).encode() + b"\r\n\r\n" + big,
    )
    assert_problem(status, headers, body, 413, "payload_too_large")

    status, headers, body = raw(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n"
    )
    assert_problem(status, headers, body, 400, "malformed_request")

    status, headers, body = raw(port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_problem(status, headers, body, 414, "uri_too_long")


def test_metrics_are_not_served_through_nginx_but_health_is(stack):
    gunicorn_port, nginx_port = stack.gunicorn_port, stack.nginx_port
    status, headers, body, _ = get(nginx_port, "/metrics")
    assert_problem(status, headers, body, 404, "not_found")
    assert get(gunicorn_port, "/metrics")[0] == 200  # on the host itself
    status, _, body, _ = get(nginx_port, "/readyz", {"X-Request-Id": "lb-check-1"})
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_stopped_api_is_a_problem_json_503_from_nginx(stack):
    found = re.search(r"workers share their metrics in (\S+)", stack.gunicorn_log.read_text())
    metrics_dir = Path(found.group(1))
    assert metrics_dir.is_dir()
    stack.gunicorn.terminate()
    stack.gunicorn.wait(timeout=30)
    assert not metrics_dir.exists()  # the directory gunicorn made for itself goes with it
    status, headers, body, _ = get(stack.nginx_port, ME)
    assert_problem(status, headers, body, 503, "service_unavailable")
    assert headers["Retry-After"] == "5"
