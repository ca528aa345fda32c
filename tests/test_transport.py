"""WebhookTransport against real local receivers (HTTP and TLS); names go to fake resolvers."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address, ip_network
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme

from dispatcher.transport import (
    MAX_RESPONSE_BYTES,
    USER_AGENT,
    AttemptResult,
    WebhookTransport,
)
from harness.dns import FakeResolver
from partner_api.delivery.ssrf import SsrfPolicy, resolve_allowed_addresses

LOOPBACK = (ip_network("127.0.0.0/8"),)
HUGE_BYTES = 64 * 1024 * 1024  # more than any socket buffers can absorb
BODY = b'{"event": "order.created", "id": "evt_1"}'


class Receiver:
    """A local webhook receiver whose path picks its behaviour; it records what reaches it."""

    def __init__(self, cert: trustme.LeafCert | None = None, host: str = "127.0.0.1"):
        self.requests: list[dict] = []
        self.connections = 0
        self.location = ""
        self.huge_written: int | None = None
        self.huge_done = threading.Event()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                url = urlsplit(self.path)
                with receiver._lock:
                    receiver.requests.append(
                        {"method": self.command, "headers": self.headers, "body": body}
                    )
                getattr(receiver, "answer_" + url.path.strip("/").replace("-", "_"))(
                    self, body, parse_qs(url.query)
                )

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address):
                with receiver._lock:
                    receiver.connections += 1
                return True

        self.server = Server((host, 0), Handler)
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(context)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _head(handler, status: int, length: int, **headers: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(length))
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()

    def answer_ok(self, handler, body, query):
        self._head(handler, 200, len(body))
        handler.wfile.write(body)

    def answer_status(self, handler, body, query):
        self._head(handler, int(query["code"][0]), 4)
        handler.wfile.write(b"boom")

    def answer_redirect(self, handler, body, query):
        self._head(handler, 302, 5, Location=self.location)
        handler.wfile.write(b"moved")

    def answer_cookie(self, handler, body, query):
        self._head(handler, 200, 0, Set_Cookie="session=abc; Path=/")

    def answer_slow(self, handler, body, query):
        time.sleep(0.6)
        self.answer_ok(handler, body, query)

    def answer_drip_body(self, handler, body, query):
        self._head(handler, 200, 1000)
        self._drip(handler, b"x" * 1000)

    def answer_drip_status(self, handler, body, query):
        self._drip(handler, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def _drip(self, handler, data: bytes) -> None:
        # 15 bytes (3 s), not forever: a client without a total deadline fails, not hangs.
        for byte in data[:15]:
            if self.stop.wait(0.2):
                return
            try:
                handler.wfile.write(bytes([byte]))
            except OSError:
                return

    def answer_huge(self, handler, body, query):
        self._head(handler, int(query.get("code", ["200"])[0]), HUGE_BYTES, Location=self.location)
        chunk, written = b"a" * 65536, 0
        try:
            while written < HUGE_BYTES:
                handler.wfile.write(chunk)
                written += len(chunk)
        except OSError:
            handler.close_connection = True
        self.huge_written = written
        self.huge_done.set()


NAMES = {
    "receiver.test": ["127.0.0.1"],
    "localhost": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
    "mixed.test": ["127.0.0.1", "10.0.0.7"],
}


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_bundle(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def start_receiver():
    receivers = []

    def start(cert=None, host="127.0.0.1") -> Receiver:
        receivers.append(Receiver(cert, host))
        return receivers[-1]

    yield start
    for receiver in receivers:
        receiver.close()


@pytest.fixture
def receiver(start_receiver):
    return start_receiver()


@pytest.fixture
def make_transport():
    transports = []

    def make(resolver=None, allow=LOOPBACK, **options) -> WebhookTransport:
        policy = SsrfPolicy(
            allow_http=True, allow_networks=allow, resolver=resolver or FakeResolver(NAMES)
        )
        transports.append(WebhookTransport(policy, **options))
        return transports[-1]

    yield make
    for transport in transports:
        transport.close()


def test_200_is_ok_and_the_receiver_sees_post_body_headers_and_the_hostname(
    receiver, make_transport
):
    headers = {"X-Webhook-Signature": "t=1,v1=abc", "Content-Type": "text/plain"}
    url = f"http://receiver.test:{receiver.port}/ok"

    result = make_transport().send(url, BODY, headers)

    assert result.ok and result.error_kind is None and result.error_message is None
    assert result.status_code == 200
    assert result.response_excerpt == BODY.decode()
    assert 0 <= result.duration_ms < 1000
    [seen] = receiver.requests
    assert seen["method"] == "POST" and seen["body"] == BODY
    assert seen["headers"]["X-Webhook-Signature"] == "t=1,v1=abc"
    assert seen["headers"]["User-Agent"] == USER_AGENT
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["Host"] == f"receiver.test:{receiver.port}"


def test_ip_literal_urls_are_checked_like_names(receiver, make_transport):
    transport = make_transport()

    assert transport.send(f"http://127.0.0.1:{receiver.port}/ok", BODY, {}).ok
    blocked = make_transport(allow=()).send(f"http://127.0.0.1:{receiver.port}/ok", BODY, {})

    assert blocked.error_kind == "address_blocked" and not blocked.ok
    assert receiver.connections == 1


def test_the_socket_goes_to_a_checked_address_trying_each_in_order(start_receiver, make_transport):
    receiver = start_receiver(host="127.0.0.2")  # nothing listens on 127.0.0.3 or 127.0.0.1
    resolver = FakeResolver({"multi.test": ["127.0.0.3", "127.0.0.2"]})

    result = make_transport(resolver).send(f"http://multi.test:{receiver.port}/ok", BODY, {})

    assert result.ok, result
    assert receiver.requests[0]["headers"]["Host"] == f"multi.test:{receiver.port}"


def test_keep_alive_reuses_the_connection_between_attempts(receiver, make_transport):
    transport = make_transport()
    url = f"http://receiver.test:{receiver.port}/ok"

    assert transport.send(url, BODY, {}).ok and transport.send(url, BODY, {}).ok

    assert len(receiver.requests) == 2 and receiver.connections == 1


@pytest.mark.parametrize("hostname", ["receiver.test", "localhost"])
def test_https_connects_to_the_pinned_ip_but_verifies_the_certificate_for_the_hostname(
    ca, ca_bundle, start_receiver, make_transport, hostname
):
    receiver = start_receiver(ca.issue_cert("receiver.test", "localhost"))

    result = make_transport(ca_bundle=ca_bundle).send(
        f"https://{hostname}:{receiver.port}/ok", BODY, {}
    )

    assert result.ok, result
    assert receiver.requests[0]["headers"]["Host"] == f"{hostname}:{receiver.port}"


def test_https_without_the_ca_bundle_is_a_tls_error(ca, start_receiver, make_transport):
    receiver = start_receiver(ca.issue_cert("receiver.test"))

    result = make_transport().send(f"https://receiver.test:{receiver.port}/ok", BODY, {})

    assert result.error_kind == "tls_error" and result.status_code is None
    assert "certificate" in result.error_message
    assert receiver.requests == []


def test_https_certificate_for_another_name_is_a_tls_error(
    ca, ca_bundle, start_receiver, make_transport
):
    receiver = start_receiver(ca.issue_cert("other.test"))

    result = make_transport(ca_bundle=ca_bundle).send(
        f"https://receiver.test:{receiver.port}/ok", BODY, {}
    )

    assert result.error_kind == "tls_error"
    assert "receiver.test" in result.error_message  # hostname mismatch, not an unknown CA
    assert receiver.requests == []


def test_500_is_an_http_status_error_with_an_excerpt_and_no_url_secrets(receiver, make_transport):
    url = f"http://receiver.test:{receiver.port}/status?code=500&token=s3cret"

    result = make_transport().send(url, BODY, {})

    assert not result.ok and result.error_kind == "http_status"
    assert result.status_code == 500 and result.response_excerpt == "boom"
    assert "500" in result.error_message and "s3cret" not in result.error_message


def test_302_is_a_redirect_that_is_never_followed(start_receiver, make_transport):
    first, second = start_receiver(), start_receiver()
    first.location = f"http://other.test:{second.port}/ok"

    result = make_transport().send(f"http://receiver.test:{first.port}/redirect", BODY, {})

    assert not result.ok and result.error_kind == "redirect"
    assert result.status_code == 302 and result.response_excerpt == "moved"
    assert second.connections == 0


def test_a_huge_redirect_body_is_capped_too(start_receiver, make_transport):
    # requests reads a 3xx body in full to prepare Response.next, even without following it.
    first, second = start_receiver(), start_receiver()
    first.location = f"http://other.test:{second.port}/ok"

    result = make_transport().send(f"http://receiver.test:{first.port}/huge?code=302", BODY, {})

    assert result.error_kind == "redirect" and len(result.response_excerpt) == 1024
    assert first.huge_done.wait(5) and first.huge_written < HUGE_BYTES
    assert second.connections == 0


@pytest.mark.parametrize("path", ["drip-body", "drip-status"])
def test_a_dripping_receiver_is_cut_at_the_total_deadline(receiver, make_transport, path):
    transport = make_transport(timeout=1.0)

    result = transport.send(f"http://receiver.test:{receiver.port}/{path}", BODY, {})

    assert not result.ok and result.error_kind == "timeout"
    assert 900 <= result.duration_ms < 1800
    assert "1 s" in result.error_message
    # The cut connection is not handed to the next attempt.
    assert transport.send(f"http://receiver.test:{receiver.port}/ok", BODY, {}).ok


def test_a_huge_answer_is_read_only_up_to_the_cap(receiver, make_transport):
    transport = make_transport()

    result = transport.send(f"http://receiver.test:{receiver.port}/huge", BODY, {})

    assert result.ok and result.status_code == 200
    assert result.response_excerpt == "a" * 1024
    assert result.duration_ms < 1500
    assert receiver.huge_done.wait(5)
    assert receiver.huge_written < HUGE_BYTES  # the client hung up instead of draining
    assert MAX_RESPONSE_BYTES == 64 * 1024
    assert transport.send(f"http://receiver.test:{receiver.port}/ok", BODY, {}).ok


def test_dns_rebinding_after_the_check_is_caught_at_connect_time(receiver, make_transport):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    calls = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    policy = SsrfPolicy(allow_http=True, resolver=rebinding)
    assert resolve_allowed_addresses("rebind.test", receiver.port, policy) == [
        ip_address("93.184.216.34")
    ]

    result = make_transport(resolver=rebinding, allow=()).send(
        f"http://rebind.test:{receiver.port}/ok", BODY, {}
    )

    assert result.error_kind == "address_blocked" and result.status_code is None
    # The audit is read by the partner: it names the host, never what it resolved to.
    assert "rebind.test" in result.error_message and "127.0.0.1" not in result.error_message
    assert calls == ["rebind.test", "rebind.test"]
    assert receiver.connections == 0


def test_a_name_with_any_blocked_address_is_refused_and_nothing_is_sent(receiver, make_transport):
    result = make_transport().send(f"http://mixed.test:{receiver.port}/ok", BODY, {})

    assert result.error_kind == "address_blocked" and "mixed.test" in result.error_message
    assert "10.0.0.7" not in result.error_message and "127.0.0.1" not in result.error_message
    assert receiver.connections == 0


def test_an_unresolvable_name_is_a_dns_error(make_transport):
    result = make_transport().send("http://nowhere.test:8080/ok", BODY, {})

    assert result.error_kind == "dns_error" and "nowhere.test" in result.error_message


def test_a_resolver_hanging_past_the_deadline_is_a_timeout(make_transport):
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["127.0.0.1"]

    try:
        result = make_transport(resolver=hanging, timeout=0.5).send(
            "http://slow-dns.test:8080/ok", BODY, {}
        )
    finally:
        release.set()

    assert result.error_kind == "timeout" and "DNS" in result.error_message
    assert 450 <= result.duration_ms < 1000


def test_a_refused_connection_is_a_connection_error(make_transport):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = make_transport().send(f"http://receiver.test:{port}/ok?token=s3cret", BODY, {})

    assert result.error_kind == "connection_error" and result.status_code is None
    assert "refused" in result.error_message and "s3cret" not in result.error_message


def test_a_url_refused_by_the_policy_is_reported_without_sending(receiver, make_transport):
    result = make_transport().send(f"ftp://receiver.test:{receiver.port}/ok", BODY, {})

    assert result.error_kind == "connection_error"
    assert "url_scheme_not_allowed" in result.error_message
    assert receiver.connections == 0


def test_unexpected_errors_are_reported_without_the_offending_value(receiver, make_transport):
    result = make_transport().send(
        f"http://receiver.test:{receiver.port}/ok", BODY, {"X-Signature": "s3cret\r\nX-Evil: 1"}
    )

    assert result.error_kind == "connection_error" and "s3cret" not in result.error_message
    assert receiver.requests == []


def test_cookies_set_by_one_answer_are_never_sent_back(receiver, make_transport):
    transport = make_transport()

    assert transport.send(f"http://receiver.test:{receiver.port}/cookie", BODY, {}).ok
    assert transport.send(f"http://receiver.test:{receiver.port}/ok", BODY, {}).ok

    assert "Cookie" not in receiver.requests[1]["headers"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_proxy_environment_variables_are_ignored(
    ca, ca_bundle, start_receiver, make_transport, monkeypatch, scheme
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    receiver = start_receiver(ca.issue_cert("receiver.test") if scheme == "https" else None)

    result = make_transport(ca_bundle=ca_bundle).send(
        f"{scheme}://receiver.test:{receiver.port}/ok", BODY, {}
    )

    assert result.ok, result
    assert receiver.connections == 1


def test_concurrent_sends_get_independent_results(start_receiver, make_transport):
    receiver = start_receiver()
    transport = make_transport(timeout=1.5)
    base = f"http://receiver.test:{receiver.port}"
    jobs = {f"fast-{n}": f"{base}/ok" for n in range(4)}
    jobs |= {
        "slow": f"{base}/slow",
        "drip": f"{base}/drip-body",
        "error": f"{base}/status?code=503",
        "blocked": f"http://mixed.test:{receiver.port}/ok",
    }

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {
            name: pool.submit(transport.send, url, name.encode(), {"X-Job": name})
            for name, url in jobs.items()
        }
        results: dict[str, AttemptResult] = {name: f.result() for name, f in futures.items()}

    for n in range(4):
        fast = results[f"fast-{n}"]
        assert fast.ok and fast.response_excerpt == f"fast-{n}"
        assert fast.duration_ms < 500
    assert results["slow"].ok and results["slow"].response_excerpt == "slow"
    assert results["slow"].duration_ms >= 550
    assert results["drip"].error_kind == "timeout" and results["drip"].status_code == 200
    assert results["drip"].duration_ms < 2200
    assert results["error"].error_kind == "http_status" and results["error"].status_code == 503
    assert results["blocked"].error_kind == "address_blocked"
    assert {r["headers"]["X-Job"] for r in receiver.requests} == set(jobs) - {"blocked"}


def test_ca_bundle_adds_to_the_default_trust_store(ca, ca_bundle):
    import certifi

    from dispatcher.transport import _trust_store

    default = len(_trust_store(None).get_ca_certs())
    assert default >= len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs()) > 0
    assert len(_trust_store(ca_bundle).get_ca_certs()) == default + 1
