"""Real scrapes: the API under gunicorn with 2 workers, and a polling dispatcher's endpoint."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.dispatcher import dispatcher_env, start_dispatcher
from harness.net import wait_for
from harness.receivers import Receiver
from harness.servers import SHIPPED_CONFIG, start_gunicorn
from partner_api import provisioning
from partner_api.db import apply_schema, bind, database
from partner_api.delivery.outbox import publish_event
from partner_api.web import metrics as api_metrics

from .conftest import gunicorn_server
from .test_operations import requests_total, samples

ME = "/api/v1/partner/me"


def status_of(url: str, headers=None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10):
            return 200
    except urllib.error.HTTPError as error:
        return error.code


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def half_sent(port: int) -> socket.socket:
    stall = socket.create_connection(("127.0.0.1", port))
    stall.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    time.sleep(0.3)  # let a worker take it
    return stall


def batch_of_requests(base: str, count: int) -> list[int]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: status_of(base + ME), range(count)))


# Long: one gunicorn run, scraped before and after a worker is killed.
def test_api_metrics_under_gunicorn_sum_both_workers_and_survive_a_dead_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    bind(url)
    apply_schema()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale junk from an earlier run")
    log_path = tmp_path / "gunicorn.log"
    env = {
        "DATABASE_URL": url,
        "PARTNER_API_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    server = start_gunicorn(env, log_path)
    process, base, port = server.process, server.base, server.port
    try:
        # A half-sent request holds the sync worker that took it, so each batch of 20 is
        # answered by the other worker: both count, whatever the scheduler would have done.
        first_stall = half_sent(port)
        statuses = batch_of_requests(base, 20)
        second_stall = half_sent(port)  # taken by the worker that answered the first batch
        first_stall.close()
        statuses += batch_of_requests(base, 20)
        second_stall.close()
        assert statuses == [401] * 40
        assert status_of(base + "/healthz", {"X-Request-Id": "probe-7"}) == 200
        pids = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("*.db")}
        assert len(pids) == 2, pids  # both workers answered some of them
        # Whichever worker answers a scrape, it reports every worker's requests.
        for _ in range(4):
            assert requests_total(fetch(base + "/metrics"), ME, "401") == 40

        os.kill(int(sorted(pids)[0]), signal.SIGKILL)
        assert wait_for(lambda: log_path.read_text().count("Booting worker") >= 3, 30)
        scraped = fetch(base + "/metrics")
        assert requests_total(scraped, ME, "401") == 40  # a dead worker's counts stay
        latency = samples(scraped)[
            (
                "partner_api_http_request_duration_seconds_count",
                frozenset({"route": ME, "method": "GET"}.items()),
            )
        ]
        assert latency == 40
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    requests = [r for r in records if r["logger"] == "partner_api.requests"]
    assert len(requests) == 40 and all(r["request_id"] for r in requests)
    assert any("Booting worker" in r["message"] for r in records)


def seed_two_subscriptions(subscribe, good: Receiver, failing: Receiver) -> None:
    with database.connection_context():
        org = provisioning.create_org("Acme")
        failing_org = provisioning.create_org("Flaky")
    subscribe(org.id, good.url())
    subscribe(failing_org.id, failing.url())
    with database.connection_context():
        for n in range(3):
            publish_event(org.id, "vc.test.ping", {"n": n})
        for n in range(2):
            publish_event(failing_org.id, "vc.test.ping", {"n": n})


# Long: one dispatcher run, scraped and its log read; each check needs the same run.
def test_dispatcher_serves_its_metrics_on_the_configured_port(subscribe, database_url):
    with Receiver() as good, Receiver([(500, {}, b"down")]) as failing:
        seed_two_subscriptions(subscribe, good, failing)
        process = start_dispatcher(
            dispatcher_env(
                database_url,
                PARTNER_API_METRICS_PORT="0",
                PARTNER_API_POLL_INTERVAL="0.2",
                PARTNER_API_AUTO_DISABLE_AFTER="2",
                PARTNER_API_AUTO_DISABLE_MIN_SECONDS="0",
                PARTNER_API_LOG_FORMAT="json",
            )
        )
        try:
            first = json.loads(process.stdout.readline())
            found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", first["message"])
            assert found, first
            endpoint = found.group(1)

            def attempts_ended_and_the_gauges_show_it():
                scraped = samples(fetch(endpoint))
                # The queue gauges are a read at most a few seconds old.
                return (
                    scraped[("partner_api_delivery_attempt_seconds_count", frozenset())] == 5
                    and scraped.get(("partner_api_subscriptions_disabled", frozenset())) == 1
                )

            assert wait_for(attempts_ended_and_the_gauges_show_it, 30)
            scraped = samples(fetch(endpoint))
            started = time.time()
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output

    def value(name, **labels):
        return scraped[(name, frozenset(labels.items()))]

    assert value("partner_api_delivery_attempts_total", outcome="ok") == 3
    assert value("partner_api_delivery_attempts_total", outcome="http_status") == 2
    assert value("partner_api_delivery_attempts_total", outcome="timeout") == 0
    assert value("partner_api_subscriptions_disabled") == 1
    assert value("partner_api_deliveries_held") == 2  # the disabled subscription's retries
    assert value("partner_api_deliveries_due") == 0
    assert value("partner_api_oldest_due_seconds") == 0
    assert value("partner_api_dispatcher_senders") == 10
    assert started - value("partner_api_dispatcher_last_poll_timestamp_seconds") < 5
    # Every line the process wrote is one JSON object; the attempt lines keep their fields.
    records = [json.loads(line) for line in output.splitlines()]
    attempts = [r for r in records if r["message"] == "attempt"]
    assert sorted(r["outcome"] for r in attempts) == ["http_status"] * 2 + ["ok"] * 3
    assert all(
        {"delivery", "subscription", "attempt", "outcome", "status", "duration_ms"} <= set(r)
        for r in attempts
    )


def test_a_metrics_port_in_use_stops_the_dispatcher_with_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    bind(url)
    apply_schema()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_dispatcher(
            dispatcher_env(url, PARTNER_API_METRICS_PORT=str(port)), stderr=subprocess.PIPE
        )
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip() == (
        f"dispatcher: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    )


def test_once_serves_no_metrics_so_a_taken_metrics_port_neither_fails_nor_is_bound(
    subscribe, database_url
):
    """Cron mode: a scrape target alive for a second a minute would make `up == 0` fire all
    day, and the long-running dispatcher's port being taken must not fail the run."""
    with Receiver() as receiver:
        seed_two_subscriptions(subscribe, receiver, receiver)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = dispatcher_env(database_url, PARTNER_API_METRICS_PORT=str(port))
            process = start_dispatcher(env, "--once")
            output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert len(receiver.requests) == 5  # every due delivery went out
    assert "--once serves no metrics: PARTNER_API_METRICS_PORT ignored" in output
    assert "metrics on http" not in output


def healthz_total(base: str) -> float:
    labels = frozenset({"route": "/healthz", "method": "GET", "status": "200"}.items())
    return samples(fetch(base + "/metrics")).get(("partner_api_http_requests_total", labels), 0.0)


def spread_over_two_workers(base: str, count: int) -> list[int]:
    """`count` health checks in two batches, each answered by a different one of two workers
    (a half-sent request holds the sync worker that took it)."""
    port = int(base.rsplit(":", 1)[1])
    first_stall = half_sent(port)
    statuses = [status_of(base + "/healthz") for _ in range(count // 2)]
    second_stall = half_sent(port)  # taken by the worker that answered the first batch
    first_stall.close()
    statuses += [status_of(base + "/healthz") for _ in range(count - count // 2)]
    second_stall.close()
    return statuses


RECYCLE_AFTER = 20  # gunicorn's max_requests for the recycling test


@pytest.mark.parametrize("config", [SHIPPED_CONFIG, None], ids=["shipped config", "plain"])
def test_recycled_workers_leave_a_bounded_number_of_metrics_files_and_exact_counts(
    tmp_path, config
):
    url = f"sqlite:///{tmp_path / 'api.sqlite3'}"
    bind(url)
    apply_schema()
    metrics_dir = tmp_path / "metrics"
    log_path = tmp_path / "gunicorn.log"
    env = {
        "DATABASE_URL": url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GUNICORN_CMD_ARGS": f"--max-requests {RECYCLE_AFTER} --max-requests-jitter 0",
    }
    metrics_dir.mkdir()
    files_seen = []

    def health_check(_):
        assert status_of(server.base + "/healthz") == 200
        files_seen.append(len(list(metrics_dir.glob("*.db"))))

    with start_gunicorn(env, log_path, workers=2, config=config) as server:
        # Four at a time, so both workers answer and are recycled while the other lives.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(health_check, range(300)))
        # A scrape is a request too (it may recycle its worker): each counts as the next one.
        assert healthz_total(server.base) == 300
        latency = samples(fetch(server.base + "/metrics"))[
            (
                "partner_api_http_request_duration_seconds_count",
                frozenset({"route": "/healthz", "method": "GET"}.items()),
            )
        ]
        assert latency == 300
    recycled = log_path.read_text().count("Booting worker") - 2
    assert recycled >= 300 // RECYCLE_AFTER - 1  # each worker answered its 20 and was replaced
    # Two kinds (counter, histogram) per live worker, per dead one not merged yet, and merged:
    # bounded, where every recycled worker used to leave two files for good (~30 here).
    assert max(files_seen) <= 2 * 2 + 2 * 2 + 2, files_seen


def test_plain_gunicorn_sums_every_worker_in_a_default_directory_cleaned_at_restart(
    database_url,
):
    """`gunicorn -w 2 wsgi:app` with no config file and no PROMETHEUS_MULTIPROC_DIR."""
    directory = Path(api_metrics._default_directory(database_url))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "counter_999999.db").write_bytes(b"an earlier run's file")
    with gunicorn_server(database_url, workers=2) as base:
        assert spread_over_two_workers(base, 20) == [200] * 20
        writers = {path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db")}
        assert len(writers) == 2, writers  # both workers answered, in the default directory
        for _ in range(4):  # whichever worker answers the scrape
            assert healthz_total(base) == 20
        scraped = fetch(base + "/metrics")
        assert scraped.count("\npartner_api_deliveries_due ") == 1  # once, not per worker
        assert samples(scraped)[("partner_api_database_up", frozenset())] == 1
    with gunicorn_server(database_url, workers=2) as base:  # a restart
        assert healthz_total(base) == 0
        assert status_of(base + "/healthz") == 200
        assert healthz_total(base) == 1
