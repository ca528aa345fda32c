"""GET /me while slow or noisy clients are at work: gunicorn exposed vs behind the nginx site,
and one noisy address vs another through the site as it was and as shipped.

Usage: .venv/bin/python -m bench.slow_clients [--seconds N]   (needs nginx: `make nginx`)

Starts gunicorn (deploy/gunicorn.conf.py, 2 workers) and nginx (deploy/nginx/, on loopback
ports) over a scratch SQLite database. First, in the same run, times GET /me idle and while one
request stalls in its headers and one in its body, straight at gunicorn (the baseline) and
through nginx; straight at gunicorn the answer waits for the worker timeout (about 30 s).
Then one address (127.0.0.2) keeps a load going, each connection reopened as soon as nginx
closes it, while another (127.0.0.1) sends GET /me for N seconds, 20 ms apart: through the site
before its per-address limits (bench/targets/nginx-site-before-limits.conf) and through the
shipped one, each with Debian's `worker_connections 768` and with the 4096 the docs recommend.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import selectors
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from harness.net import get, half_sent_requests
from harness.seed import sqlite_with_key
from harness.servers import (
    DEBIAN_WORKER_CONNECTIONS,
    RECOMMENDED_WORKER_CONNECTIONS,
    SITE,
    nginx_binary,
    start_gunicorn,
    start_nginx,
)
from partner_api.config import ROOT

ME = "/api/v1/partner/me"
NOISY_ADDRESS = "127.0.0.2"
SITES = {
    "before the limits": ROOT / "bench" / "targets" / "nginx-site-before-limits.conf",
    "as shipped": SITE,
}
HEADER_STALL = b"GET /api/v1/partner/me HTTP/1.1\r\nHost: x\r\nX-Slow: "
BODY_STALL = (
    b"POST /api/v1/partner/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{"
)
WHOLE_REQUEST = b"GET /api/v1/partner/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
# (label, what each of the noisy address's connections sends, how many it keeps open)
LOADS = [
    ("800 half-sent (400 in headers, 400 in bodies)", [HEADER_STALL, BODY_STALL], 800),
    ("300 whole requests in flight (no key: 401s)", [WHOLE_REQUEST], 300),
]


def measure(port: int, token: str, stalled_samples: int) -> tuple[float, float]:
    """(idle median, median while two half-sent requests are open), in ms."""
    auth = {"Authorization": f"Bearer {token}"}
    idle = statistics.median(get(port, ME, auth)[3] for _ in range(11))
    stalls = half_sent_requests(port, token)
    try:
        time.sleep(0.3)  # let the stalled requests reach whoever takes them
        stalled = statistics.median(
            get(port, ME, auth, timeout=120)[3] for _ in range(stalled_samples)
        )
    finally:
        for sock in stalls:
            sock.close()
    return idle * 1000, stalled * 1000


class NoisyAddress:
    """`count` connections from NOISY_ADDRESS, each sending one of `requests` (in turn) and
    reopened as soon as nginx closes it, on a thread of its own until stopped."""

    def __init__(self, port: int, requests: list[bytes], count: int):
        self.port, self.requests, self.count = port, requests, count
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def _open(self, selector, request: bytes) -> None:
        sock = socket.socket()
        sock.bind((NOISY_ADDRESS, 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", self.port))
        selector.register(sock, selectors.EVENT_WRITE, request)
        self.opened += 1

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for number in range(self.count):
                self._open(selector, self.requests[number % len(self.requests)])
            while not self._stop.is_set():
                for key, events in selector.select(timeout=0.1):
                    self._step(selector, key, events)
            for key in list(selector.get_map().values()):
                key.fileobj.close()

    def _step(self, selector, key, events) -> None:
        sock, request = key.fileobj, key.data
        try:
            if events & selectors.EVENT_WRITE:
                sock.send(request)  # a few dozen bytes: one send
                selector.modify(sock, selectors.EVENT_READ, request)
                return
            if sock.recv(65536):
                return  # an answer: read on until nginx closes
        except OSError:
            pass
        selector.unregister(sock)
        sock.close()
        self._open(selector, request)


def measure_beside(port: int, token: str, seconds: float) -> tuple[float, float, float]:
    """(share of GET /me answered 200, p50 ms, p99 ms) from 127.0.0.1 over `seconds`."""
    auth = {"Authorization": f"Bearer {token}"}
    timings, answered = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        # Reset, refused or timed out: counted as not answered.
        with contextlib.suppress(OSError, http.client.HTTPException):
            answered += get(port, ME, auth, timeout=5.0)[0] == 200
        timings.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    timings.sort()
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    return answered / len(timings), statistics.median(timings), p99


def noisy_neighbour_rows(scratch: Path, upstream_port: int, token: str, seconds: float):
    """One row per load, site and worker_connections."""
    rows = []
    for load, requests, count in LOADS:
        for site_label, site in SITES.items():
            for connections in (DEBIAN_WORKER_CONNECTIONS, RECOMMENDED_WORKER_CONNECTIONS):
                prefix = scratch / f"nginx-{len(rows)}"
                nginx, port = start_nginx(
                    prefix, upstream_port, site=site, worker_connections=connections
                )
                try:
                    with NoisyAddress(port, requests, count) as noisy:
                        time.sleep(1.0)  # let the load take hold
                        share, p50, p99 = measure_beside(port, token, seconds)
                    rows.append((load, site_label, connections, share, p50, p99, noisy.opened))
                finally:
                    nginx.terminate()
                    nginx.wait(timeout=60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="GET /me time per row")
    args = parser.parse_args()
    if nginx_binary() is None:
        raise SystemExit("nginx is not installed: run `make nginx` (as root)")
    scratch = Path(tempfile.mkdtemp(prefix="slow-clients-bench-"))
    url, token = sqlite_with_key(scratch / "bench.sqlite3", "Bench")
    # The key's own rate limit out of the way: the rows measure nginx, minutes' worth of GETs.
    env = {"DATABASE_URL": url, "PARTNER_API_DEFAULT_RATE_LIMIT": "1000000"}
    with start_gunicorn(env, scratch / "gunicorn.log") as gunicorn:
        nginx, nginx_port = start_nginx(scratch / "nginx", gunicorn.port)
        try:
            rows = [
                ("behind nginx", *measure(nginx_port, token, 11)),
                ("gunicorn exposed (baseline)", *measure(gunicorn.port, token, 1)),
            ]
        finally:
            nginx.terminate()
            nginx.wait(timeout=60)
        noisy = noisy_neighbour_rows(scratch, gunicorn.port, token, args.seconds)
    print("| GET /me | idle (ms) | 2 half-sent open (ms) |")
    print("|---|---:|---:|")
    for label, idle, stalled in rows:
        print(f"| {label} | {idle:.1f} | {stalled:.1f} |")
    print()
    print(
        "| 127.0.0.2 keeps | site | worker_connections | 127.0.0.1's GET /me answered "
        "| p50 (ms) | p99 (ms) | connections 127.0.0.2 opened |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for load, site, connections, share, p50, p99, opened in noisy:
        cells = (load, site, connections, f"{share:.0%}", f"{p50:.1f}", f"{p99:.1f}", f"{opened:,}")
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
