"""Delivery throughput of one dispatcher against a local receiver that takes 20 ms to answer.

Usage: .venv/bin/python bench/dispatch_bench.py [--deliveries 400] [--postgres URL]

Runs `Dispatcher.run_until_idle()` over the same backlog with 1 sender (the baseline: one
attempt at a time) and with the default 10 senders, in the same run, and prints deliveries/s.
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.dispatch import Dispatcher  # noqa: E402
from partner_api import provisioning  # noqa: E402
from partner_api.config import Config  # noqa: E402
from partner_api.db import apply_schema, bind, database, drop_tables  # noqa: E402
from partner_api.events import publish_event  # noqa: E402
from partner_api.webhooks.subscriptions import create_subscription  # noqa: E402

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
SUBSCRIPTIONS = 10
ANSWER_DELAY = 0.02


class SlowishReceiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(ANSWER_DELAY)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def seed(url: str, receiver_url: str, deliveries: int) -> None:
    bind(url)
    drop_tables()
    apply_schema()
    config = Config(
        allow_http_webhooks=True,
        webhook_allow_cidrs=LOOPBACK,
        max_subscriptions_per_org=SUBSCRIPTIONS,
    )
    with database.connection_context():
        org = provisioning.create_org("bench")
        for _ in range(SUBSCRIPTIONS):
            create_subscription(org.id, receiver_url, None, "", config)
        for n in range(deliveries // SUBSCRIPTIONS):
            publish_event(org.id, "vc.test.ping", {"n": n})


def measure(url: str, receiver_url: str, deliveries: int, workers: int) -> float:
    seed(url, receiver_url, deliveries)
    config = Config(
        database_url=url,
        webhook_allow_cidrs=LOOPBACK,
        allow_http_webhooks=True,
        dispatch_workers=workers,
    )
    dispatcher = Dispatcher(config)
    started = time.perf_counter()
    sent = dispatcher.run_until_idle()
    elapsed = time.perf_counter() - started
    dispatcher.close()
    assert sent == deliveries, (sent, deliveries)
    return deliveries / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=400)
    parser.add_argument("--postgres", default=None, help="also run on this PostgreSQL URL")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowishReceiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver_url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    print(
        f"deliveries/s, {args.deliveries} deliveries over {SUBSCRIPTIONS} subscriptions, "
        f"receiver answers in {ANSWER_DELAY * 1000:.0f} ms"
    )
    print(f"{'backend':10} {'1 sender':>10} {'10 senders':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("sqlite", f"sqlite:///{tmp}/bench.db")]
        if args.postgres:
            backends.append(("postgres", args.postgres))
        for name, url in backends:
            baseline = measure(url, receiver_url, args.deliveries, 1)
            pooled = measure(url, receiver_url, args.deliveries, 10)
            print(f"{name:10} {baseline:>10.0f} {pooled:>11.0f}")
    server.shutdown()


if __name__ == "__main__":
    main()
