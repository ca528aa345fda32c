"""Loopback plumbing: free ports, listening sockets, waiting for a condition, and raw HTTP
requests a client library would not send (a fresh connection per GET, half-sent requests)."""

from __future__ import annotations

import http.client
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
