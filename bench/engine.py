"""The delivery engine under real load, black-box: API and dispatcher processes, receivers in
their own processes. Each scenario measures its baseline in the same run.

Usage: .venv/bin/python -m bench.engine [SCENARIO ...] [--postgres URL] [--pings N]

Scenarios (default: all):
  dead        a healthy subscription's ping latency while 10 subscriptions of another org point
              at receivers that read the request and never answer (backlog 10 each)
  dead-same   the same, the dead subscriptions in the healthy subscription's own org
  slow        org D's ping while org C has 2 subscriptions to a receiver answering after 2.5 s,
              15 queued each (3 s deadline)
  dead-many   50 dead subscriptions over 5 orgs (backlog 10 each) beside one healthy
  throughput  deliveries/s of `python -m dispatcher --once` ÷ a plain pool of 10 threads posting
              the same signed bodies with requests sessions, receiver answering at once and
              after 20 ms, 3,000 deliveries
Latency is from the 202 of POST /webhooks/{id}/test to the receiver reading the request.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

from harness.dispatcher import dispatcher_env, start_dispatcher
from harness.receivers import ReceiverProcess
from harness.servers import start_gunicorn
from partner_api import provisioning
from partner_api.config import Config
from partner_api.db import apply_schema, bind, database, drop_tables
from partner_api.delivery import signing
from partner_api.delivery.outbox import publish_event
from partner_api.delivery.subscriptions import create_subscription


def fresh_database(postgres: str | None, workdir: Path) -> str:
    if postgres:
        bind(postgres)
        drop_tables()
        url = postgres
    else:
        url = f"sqlite:///{workdir / f'bench-{time.monotonic_ns()}.sqlite3'}"
    bind(url)
    apply_schema()
    return url


class Stack:
    """gunicorn (the API) and `python -m dispatcher`, on one database."""

    def __init__(self, database_url: str, log_path: Path, dispatchers: int = 1, **settings: str):
        self.env = dispatcher_env(
            database_url, inherit=True, PARTNER_API_MAX_SUBSCRIPTIONS_PER_ORG="100", **settings
        )
        self.api = start_gunicorn(
            self.env,
            log_path,
            workers=2,
            config=None,
            probe="/api/v1/partner/openapi.json",
            inherit_env=True,
        )
        self.dispatchers = [
            start_dispatcher(self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(dispatchers)
        ]
        self.base = f"{self.api.base}/api/v1/partner"
        self.session = requests.Session()

    def subscribe(self, token: str, url: str) -> tuple[str, str]:
        answer = self.session.post(
            f"{self.base}/webhooks", json={"url": url}, headers=_bearer(token), timeout=10
        )
        answer.raise_for_status()
        body = answer.json()
        return body["id"], body["secret"]

    def ping(self, token: str, subscription: tuple[str, str]) -> tuple[str, float]:
        answer = self.session.post(
            f"{self.base}/webhooks/{subscription[0]}/test",
            json={"secret": subscription[1]},
            headers=_bearer(token),
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json()["event_id"], time.time()

    def close(self) -> None:
        for process in (self.api.process, *self.dispatchers):
            process.terminate()
        for process in (self.api.process, *self.dispatchers):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def partner(name: str) -> tuple[str, str]:
    with database.connection_context():
        org = provisioning.create_org(name)
        _, token = provisioning.create_key(org.id, "bench", ["webhooks:manage"], 1_000_000)
    return org.id, token


def queue_events(org_id: str, count: int) -> None:
    """`count` events for the org: one delivery each for every subscription it has."""
    with database.connection_context():
        for n in range(count):
            publish_event(org_id, "vc.test.ping", {"backlog": n})


def ping_latencies(stack, token, subscription, receiver, pings: int) -> list[float]:
    """Ping `pings` times at irregular intervals; seconds from each 202 to its arrival."""
    latencies = []
    for _ in range(pings):
        event_id, sent = stack.ping(token, subscription)
        if receiver.wait_for(lambda e=event_id: e in receiver.arrivals, timeout=60):
            latencies.append(max(0.0, receiver.arrivals[event_id] - sent))
        else:
            latencies.append(float("inf"))  # not delivered within a minute
        time.sleep(random.uniform(0.2, 0.9))  # noqa: S311 - jitter, not security
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def describe(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5):6.2f} s  p99 {percentile(values, 0.99):6.2f} s"


def latency_scenario(
    name, postgres, workdir, pings, *, load, timeout="10", poll="2", dispatchers=1
):
    """Ping a healthy subscription alone (baseline), then with `load(stack, healthy_org)`."""
    url = fresh_database(postgres, workdir)
    stack = Stack(
        url,
        workdir / f"api-{time.monotonic_ns()}.log",
        dispatchers,
        PARTNER_API_DELIVERY_TIMEOUT=timeout,
        PARTNER_API_POLL_INTERVAL=poll,
    )
    healthy = ReceiverProcess("ok")
    others: list[ReceiverProcess] = []
    try:
        org_id, token = partner("healthy")
        subscription = stack.subscribe(token, healthy.url())
        baseline = ping_latencies(stack, token, subscription, healthy, max(5, pings // 2))
        others.extend(load(stack, org_id, token))
        loaded = ping_latencies(stack, token, subscription, healthy, pings)
    finally:
        stack.close()
        for receiver in [healthy, *others]:
            receiver.close()
    target = float(poll) + 1
    verdict = "meets" if percentile(loaded, 0.99) <= target else "MISSES"
    name = f"{name} ×{dispatchers}" if dispatchers > 1 else name
    print(f"{name:12} alone:  {describe(baseline)}")
    print(f"{name:12} loaded: {describe(loaded)}  ({verdict} p99 <= {target:g} s)")


def dead_load(orgs: int, per_org: int, backlog: int, same_org: bool = False):
    def load(stack, healthy_org, healthy_token):
        silent = ReceiverProcess("silent")
        for n in range(orgs):
            org_id, token = (healthy_org, healthy_token) if same_org else partner(f"dead {n}")
            subs = [stack.subscribe(token, silent.url(f"/dead/{n}/{i}")) for i in range(per_org)]
            with database.connection_context():
                for _ in range(backlog):
                    for sub_id, _secret in subs:
                        publish_event(org_id, "vc.test.ping", {}, subscription_id=sub_id)
        return [silent]

    return load


def slow_load(stack, healthy_org, healthy_token):
    slow = ReceiverProcess("delay:2.5")
    org_id, token = partner("slow org")
    subs = [stack.subscribe(token, slow.url(f"/slow/{i}")) for i in range(2)]
    with database.connection_context():
        for _ in range(15):
            for sub_id, _secret in subs:
                publish_event(org_id, "vc.test.ping", {}, subscription_id=sub_id)
    return [slow]


def pool_rate(receiver: ReceiverProcess, deliveries: int, senders: int = 10) -> float:
    """The baseline: signed posts from a plain pool of `senders` threads with requests sessions."""
    secret = "whsec_" + "A" * 43 + "="
    sessions = threading.local()

    def post(n: int) -> None:
        session = getattr(sessions, "session", None)
        if session is None:
            session = sessions.session = requests.Session()
        body = f'{{"event":"vc.test.ping","id":"evt_pool{n}","data":{{}}}}'.encode()
        headers = signing.attempt_headers(secret, f"evt_pool{n}", int(time.time()), body)
        headers["Content-Type"] = "application/json"
        session.post(receiver.url(), data=body, headers=headers, timeout=10).close()

    with concurrent.futures.ThreadPoolExecutor(senders) as pool:
        list(pool.map(post, range(deliveries)))
    return _rate(receiver.times[-deliveries:])


def dispatcher_rate(
    postgres, workdir, receiver: ReceiverProcess, deliveries: int, dispatcher_url=None
) -> float:
    """`python -m dispatcher --once` over `deliveries` due deliveries across 10 subscriptions;
    `dispatcher_url`: the dispatcher's DATABASE_URL, when not the database's own (a pooler)."""
    url = fresh_database(postgres, workdir)
    org_id, token = partner("throughput")
    with database.connection_context():
        config = Config(
            allow_http_webhooks=True,
            webhook_allow_cidrs=(ipaddress.ip_network("127.0.0.0/8"),),
        )
        for i in range(10):
            create_subscription(org_id, receiver.url(f"/sub/{i}"), None, "", config)
    queue_events(org_id, deliveries // 10)
    env = dispatcher_env(dispatcher_url or url, inherit=True)
    seen = len(receiver.times)
    once = start_dispatcher(env, "--once", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if once.wait() != 0:
        raise subprocess.CalledProcessError(once.returncode, once.args)
    return _rate(receiver.times[seen:])


def _rate(times: list[float]) -> float:
    """Deliveries per second between the first and the last arrival."""
    return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else 0.0


def throughput(postgres, workdir, deliveries: int) -> None:
    for mode, label in (("ok", "at once"), ("delay:0.02", "after 20 ms")):
        receiver = ReceiverProcess(mode)
        try:
            pool = pool_rate(receiver, deliveries)
            ours = dispatcher_rate(postgres, workdir, receiver, deliveries)
        finally:
            receiver.close()
        print(
            f"throughput receiver answering {label:11}: plain pool {pool:6.0f}/s, "
            f"dispatcher {ours:6.0f}/s, ratio {ours / pool:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=[])
    parser.add_argument("--postgres", help="also run on this scratch PostgreSQL database")
    parser.add_argument("--pings", type=int, default=20)
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument(
        "--dispatchers", type=int, default=1, help="dispatcher processes in latency scenarios"
    )
    args = parser.parse_args()
    chosen = args.scenarios or ["dead", "dead-same", "slow", "dead-many", "throughput"]
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for backend, postgres in backends:
            print(f"== {backend}")
            for scenario in chosen:
                if scenario == "throughput":
                    throughput(postgres, workdir, args.deliveries)
                    continue
                load, settings = {
                    "dead": (dead_load(1, 10, 10), {}),
                    "dead-same": (dead_load(1, 10, 10, same_org=True), {}),
                    "slow": (slow_load, {"timeout": "3"}),
                    "dead-many": (dead_load(5, 10, 10), {}),
                }[scenario]
                latency_scenario(
                    scenario,
                    postgres,
                    workdir,
                    args.pings,
                    load=load,
                    dispatchers=args.dispatchers,
                    **settings,
                )


if __name__ == "__main__":
    main()
