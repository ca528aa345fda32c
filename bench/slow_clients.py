"""GET /me while two half-sent requests stay open: gunicorn exposed vs behind the nginx site.

Usage: .venv/bin/python -m bench.slow_clients   (needs nginx: `make nginx`)

Starts gunicorn (deploy/gunicorn.conf.py, 2 workers) and nginx (deploy/nginx/, on loopback
ports) over a scratch SQLite database, and in the same run times GET /me idle and while one
request stalls in its headers and one in its body, straight at gunicorn (the baseline) and
through nginx. Straight at gunicorn the answer waits for the worker timeout (about 30 s).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from harness.net import get, half_sent_requests
from harness.seed import sqlite_with_key
from harness.servers import nginx_binary, start_gunicorn, start_nginx

ME = "/api/v1/partner/me"


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


def main() -> None:
    if nginx_binary() is None:
        raise SystemExit("nginx is not installed: run `make nginx` (as root)")
    scratch = Path(tempfile.mkdtemp(prefix="slow-clients-bench-"))
    url, token = sqlite_with_key(scratch / "bench.sqlite3", "Bench")
    with start_gunicorn({"DATABASE_URL": url}, scratch / "gunicorn.log") as gunicorn:
        nginx, nginx_port = start_nginx(scratch / "nginx", gunicorn.port)
        try:
            rows = [
                ("behind nginx", *measure(nginx_port, token, 11)),
                ("gunicorn exposed (baseline)", *measure(gunicorn.port, token, 1)),
            ]
        finally:
            nginx.terminate()
            nginx.wait(timeout=60)
    print("| GET /me | idle (ms) | 2 half-sent open (ms) |")
    print("|---|---:|---:|")
    for label, idle, stalled in rows:
        print(f"| {label} | {idle:.1f} | {stalled:.1f} |")


if __name__ == "__main__":
    main()
