"""The shipped nginx site in front of the shipped gunicorn config, on loopback ports.

Half-sent requests hold gunicorn's sync workers when it is exposed, but not behind nginx; one
client address cannot take nginx from another; every refusal through the site, nginx's own and
what gunicorn would refuse with an HTML page, is problem+json with a `code` and a safe
X-Request-Id; the site answers whatever the Host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness.net import answers_received, get, half_sent_requests, parse_answer
from harness.seed import sqlite_with_key
from harness.servers import SITE, nginx_binary, start_gunicorn, start_nginx

pytestmark = pytest.mark.skipif(
    nginx_binary() is None,
    reason="nginx is not installed (`make nginx` installs Debian's package, as root)",
)
ME = "/api/v1/partner/me"
OTHER_ADDRESS = "127.0.0.2"  # a second client: Linux answers all of 127/8 on loopback
PER_ADDRESS_CONNECTIONS = int(re.search(r"limit_conn \S+ (\d+);", SITE.read_text()).group(1))
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@dataclasses.dataclass
class Stack:
    gunicorn_port: int
    nginx_port: int
    token: str
    gunicorn: subprocess.Popen
    gunicorn_log: Path


@contextlib.contextmanager
def running_stack(directory: Path):
    """gunicorn with 2 workers and the shipped config, nginx with the shipped site in front."""
    url, token = sqlite_with_key(directory / "api.sqlite3")
    gunicorn_log = directory / "gunicorn.log"
    gunicorn = start_gunicorn({"DATABASE_URL": url}, gunicorn_log)
    nginx = None
    try:
        nginx, port = start_nginx(directory / "nginx", gunicorn.port)
        yield Stack(gunicorn.port, port, token, gunicorn.process, gunicorn_log)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=30)
        gunicorn.stop()


@pytest.fixture
def stack(tmp_path):
    """A stack of the test's own: for tests that stop it or use up a limit."""
    with running_stack(tmp_path) as running:
        yield running


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """One stack for the tests that only send single requests from 127.0.0.1."""
    with running_stack(tmp_path_factory.mktemp("nginx-stack")) as running:
        yield running


def raw(port: int, request: bytes, source: str = "127.0.0.1"):
    """Send bytes as they are; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), 5, (source, 0)) as sock:
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


def at_least_open_files(count: int) -> None:
    """Let this process hold `count` sockets (a soft limit of 1,024 is common)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count, hard), hard))


def test_800_half_sent_requests_from_one_address_do_not_deny_another(stack):
    at_least_open_files(2048)
    auth = {"Authorization": f"Bearer {stack.token}"}
    stalled = half_sent_requests(stack.nginx_port, stack.token, pairs=400, source=OTHER_ADDRESS)
    try:
        answered = answers_received(stalled, seconds=3.0)
        # Headers that never end cannot be counted per address (they wait out
        # client_header_timeout); bodies can: all but the per-address limit are refused.
        assert len(answered) == 400 - PER_ADDRESS_CONNECTIONS
        for data in answered.values():
            status, headers, body = parse_answer(data)
            assert_problem(status, headers, body, 429, "too_many_requests")
            assert headers["Retry-After"] == "1"
            assert GENERATED_ID.fullmatch(headers["X-Request-Id"])
        for _ in range(20):
            status, _, body, seconds = get(stack.nginx_port, ME, auth)
            assert status == 200, body
    finally:
        for sock in stalled:
            sock.close()


def test_one_address_over_the_request_rate_is_refused_and_the_others_are_not(stack):
    answers = [raw(stack.nginx_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", OTHER_ADDRESS)]
    while answers[-1][0] == 200 and len(answers) < 500:
        answers.append(
            raw(stack.nginx_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", OTHER_ADDRESS)
        )
    status, headers, body = answers[-1]
    assert len(answers) > 100  # the burst the site allows passes first
    assert_problem(status, headers, body, 429, "too_many_requests")
    assert headers["Retry-After"] == "1"
    assert get(stack.nginx_port, "/healthz")[0] == 200  # another address has its own budget


def header_lines(count: int) -> bytes:
    return b"".join(b"X-Filler-%d: v\r\n" % number for number in range(count))


def request_line_of(length: int) -> bytes:
    """A GET whose request line (without CRLF) is `length` bytes long."""
    return b"GET /" + b"a" * (length - len("GET / HTTP/1.1")) + b" HTTP/1.1"


# What gunicorn (27) answers with an HTML page, and nginx's own refusals: each is now a
# problem+json answer, from nginx, or from the app once nginx has passed on only what is safe.
REFUSALS = {
    "98+ headers": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\n" + header_lines(120) + b"\r\n",
        404,
        "not_found",
    ),
    "request line of 4,095 bytes": (
        request_line_of(4095) + b"\r\nHost: x\r\n\r\n",
        414,
        "uri_too_long",
    ),
    "request line of 8,191 bytes": (
        request_line_of(8191) + b"\r\nHost: x\r\n\r\n",
        414,
        "uri_too_long",
    ),
    "method of 2 letters": (b"GE /nope HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"),
    "method of 21 letters": (
        b"A" * 21 + b" /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        501,
        "not_implemented",
    ),
    "lower-case method": (b"get /nope HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed_request"),
    "control byte in a header": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
        404,
        "not_found",
    ),
    "control byte in Authorization": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x1bb\r\n\r\n",
        400,
        "malformed_request",
    ),
    "control byte in Idempotency-Key": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x7fb\r\n\r\n",
        400,
        "malformed_request",
    ),
    "X-Forwarded-Ssl": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Forwarded-Ssl: on\r\n\r\n",
        404,
        "not_found",
    ),
    "X-Forwarded-Protocol": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Forwarded-Protocol: ssl\r\n\r\n",
        404,
        "not_found",
    ),
    "Content-Type twice": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n",
        404,
        "not_found",
    ),
    "Expect other than 100-continue": (
        b"GET /nope HTTP/1.1\r\nHost: x\r\nExpect: x\r\n\r\n",
        404,
        "not_found",
    ),
    "raw UTF-8 in the target": (
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        "malformed_request",
    ),
    "an internal problem page": (
        b"GET /_problem/malformed_request HTTP/1.1\r\nHost: x\r\n\r\n",
        404,
        "not_found",
    ),
    "TRACE": (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
    "Transfer-Encoding: gzip": (
        b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
        "not_implemented",
    ),
    "HTTP/2.0 request line": (
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        505,
        "http_version_not_supported",
    ),
    "asterisk-form target": (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed_request"),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_every_refusal_through_the_site_is_problem_json_with_a_code(shared_stack, name):
    request, expected_status, code = REFUSALS[name]
    status, headers, body = raw(shared_stack.nginx_port, request)
    assert_problem(status, headers, body, expected_status, code)
    assert headers["X-Request-Id"]


@pytest.mark.parametrize(
    "incoming, kept",
    [
        ("lb-check-1", True),
        ("x" * 64, True),
        ("req-vc_kq3NpD5", False),  # a key after a prefix
        ("trace.WHSEC_abc", False),
        ("x" * 65, False),
        ("a:b", False),
        ("x" * 8000, False),
    ],
)
@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/_problem/not_found"])
def test_nginx_and_the_app_keep_only_a_safe_request_id(shared_stack, path, incoming, kept):
    status, headers, _, _ = get(shared_stack.nginx_port, path, {"X-Request-Id": incoming})
    assert status in (200, 404, 431)  # 431: an 8 KB header line
    if kept:
        assert headers["X-Request-Id"] == incoming
    else:
        assert GENERATED_ID.fullmatch(headers["X-Request-Id"])


def test_the_site_answers_whatever_the_host_even_beside_another_site(shared_stack, tmp_path):
    other_site = "server { listen 127.0.0.1:PORT; server_name other.example; return 418; }\n"
    nginx, port = start_nginx(
        tmp_path / "beside", shared_stack.gunicorn_port, other_site=other_site
    )
    try:
        assert raw(port, b"GET /nope HTTP/1.1\r\nHost: other.example\r\n\r\n")[0] == 418
        for host in (b"unknown.example", b"127.0.0.1", b"x"):
            status, headers, body = raw(port, b"GET /nope HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            assert_problem(status, headers, body, 404, "not_found")
        status, headers, body = raw(port, b"GET /nope HTTP/1.0\r\n\r\n")  # no Host at all
        assert_problem(status, headers, body, 404, "not_found")
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def test_the_headers_the_api_reads_reach_it_through_the_site(shared_stack):
    """Only the headers the site names are passed on: each of them must still arrive."""
    auth = b"Authorization: Bearer " + shared_stack.token.encode() + b"\r\n"
    create = b"POST /api/v1/partner/webhooks HTTP/1.1\r\nHost: x\r\n" + auth
    json_body = b"Content-Type: application/json\r\nContent-Length: 2\r\n"
    status, headers, body = raw(shared_stack.nginx_port, create + json_body + b"\r\n{}")
    assert_problem(status, headers, body, 422, "validation_error")  # not 401, not 415
    too_long_key = b"Idempotency-Key: " + b"k" * 300 + b"\r\n"
    url = b'{"url": "https://127.0.0.1/hooks"}'  # an address literal: no DNS
    length = b"Content-Length: %d\r\n" % len(url)
    status, headers, body = raw(
        shared_stack.nginx_port,
        create + b"Content-Type: application/json\r\n" + length + too_long_key + b"\r\n" + url,
    )
    assert_problem(status, headers, body, 422, "invalid_idempotency_key")
    for path in ("/api/v1/partner/docs", "/api/v1/partner/openapi.json"):
        assert get(shared_stack.nginx_port, path)[0] == 200
