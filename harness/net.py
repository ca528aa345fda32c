"""Loopback plumbing: free ports, listening sockets, waiting for a condition, raw HTTP
requests a client library would not send (a fresh connection per request, half-sent requests),
and load that keeps a number of requests in flight."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import time

ME_PATH = "/api/v1/partner/me"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket bound to an ephemeral loopback port, inheritable by a child process (which
    then owns the port: no other process can take it in between)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def get(port: int, path: str, headers=None, timeout: float = 5.0):
    """(status, headers, body, seconds) of one GET on a fresh loopback connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return response.status, response.headers, body, time.perf_counter() - started
    finally:
        connection.close()


def half_sent_requests(port: int, token: str) -> list[socket.socket]:
    """Two requests that never finish: one stops inside its headers, one (authenticated, so
    the view waits for it) inside its body. Close the sockets to end them."""
    header_stall = socket.create_connection(("127.0.0.1", port))
    header_stall.sendall(b"GET /api/v1/partner/me HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    body_stall = socket.create_connection(("127.0.0.1", port))
    body_stall.sendall(
        b"POST /api/v1/partner/webhooks HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    return [header_stall, body_stall]


def post_json(port: int, path: str, body: dict, headers=None, timeout: float = 30.0):
    """(status, headers, body, seconds) of one JSON POST on a fresh loopback connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        answer = response.read()
        return response.status, response.headers, answer, time.perf_counter() - started
    finally:
        connection.close()


def keep_sending(send, clients: int, seconds: float) -> list:
    """Call `send()` from `clients` threads, each again as soon as its last call returned, for
    `seconds`; returns every call's result once the last one has returned."""
    deadline = time.monotonic() + seconds

    def loop() -> list:
        results = []
        while time.monotonic() < deadline:
            results.append(send())
        return results

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        loops = [pool.submit(loop) for _ in range(clients)]
    return [result for finished in loops for result in finished.result()]
