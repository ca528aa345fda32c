"""Loopback plumbing: free ports, listening sockets, waiting for a condition, raw HTTP
requests a client library would not send (a fresh connection per request, half-sent requests),
and load that keeps a number of requests in flight."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import selectors
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


def half_sent_requests(
    port: int, token: str, pairs: int = 1, source: str = "127.0.0.1"
) -> list[socket.socket]:
    """`pairs` pairs of requests that never finish, from the loopback address `source` (any of
    127/8 on Linux): one stops inside its headers, one (authenticated, so the view waits for
    it) inside its body. Close the sockets to end them."""
    stalled = []
    for _ in range(pairs):
        header_stall = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        stalled.append(header_stall)
        header_stall.sendall(b"GET /api/v1/partner/me HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        body_stall = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        stalled.append(body_stall)
        body_stall.sendall(
            b"POST /api/v1/partner/webhooks HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
    return stalled


def answers_received(sockets: list[socket.socket], seconds: float) -> dict[socket.socket, bytes]:
    """What each socket has received within `seconds` (sockets that received nothing are left
    out); reads without blocking, so one silent socket does not hold up the rest."""
    received: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if data:
                    received[key.fileobj] = received.get(key.fileobj, b"") + data
                else:
                    selector.unregister(key.fileobj)
    return received


def parse_answer(data: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
    """(status, headers, body) of one whole HTTP/1.1 answer in `data`."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, _, header_lines = head.partition(b"\r\n")
    headers = http.client.parse_headers(io.BytesIO(header_lines + b"\r\n\r\n"))
    return (
        int(status_line.split()[1]),
        headers,
        body[: int(headers.get("Content-Length", len(body)))],
    )


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
