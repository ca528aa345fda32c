"""Operations endpoints (/healthz, /readyz, /metrics) and the request id, in-process."""

from __future__ import annotations

import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from partner_api.db import database
from partner_api.delivery import queue_metrics
from partner_api.delivery.outbox import publish_event
from partner_api.models import Delivery, Subscription

from .conftest import assert_problem, bearer

ME = "/api/v1/partner/me"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of a Prometheus text scrape."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_total(text: str, route: str, status: str, method: str = "GET") -> float:
    labels = frozenset({"route": route, "method": method, "status": status}.items())
    return samples(text).get(("partner_api_http_requests_total", labels), 0.0)


def test_healthz_answers_ok_without_auth_or_rate_limit_headers(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    assert "X-RateLimit-Limit" not in response.headers


def test_readyz_is_ok_when_the_database_answers_with_the_current_schema(client):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


@pytest.mark.parametrize(
    "statement",
    ["DROP TABLE delivery_failures", "ALTER TABLE deliveries DROP COLUMN lease_token"],
)
def test_readyz_is_503_schema_not_current_when_a_table_or_column_is_missing(client, statement):
    with database.connection_context():
        database.execute_sql(statement)
    assert_problem(client.get("/readyz"), 503, "schema_not_current")
    assert client.get("/healthz").status_code == 200


def test_readyz_is_503_database_unavailable_and_healthz_still_answers(make_app):
    down = f"postgresql://nobody@127.0.0.1:{closed_port()}/none"
    client = make_app(database_url=down).test_client()
    body = assert_problem(client.get("/readyz"), 503, "database_unavailable")
    assert "127.0.0.1" not in body["detail"]  # where the database lives stays in the log
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_operations_endpoints_are_not_in_the_partner_openapi_document(client):
    paths = client.get("/api/v1/partner/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path.endswith(("healthz", "readyz", "metrics"))]


def test_metrics_count_requests_by_route_template_method_and_status(client, make_key):
    _, _, token = make_key()
    for _ in range(3):
        assert client.get(ME, headers=bearer(token)).status_code == 200
    client.get(ME)
    client.get("/api/v1/partner/webhooks/wh_nope/failures", headers=bearer(token))
    client.get("/no/such/path")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    # The counters are per process, so other tests' requests may be in them: compare deltas.
    before = text
    client.get(ME, headers=bearer(token))
    after = client.get("/metrics").get_data(as_text=True)
    assert requests_total(after, ME, "200") == requests_total(before, ME, "200") + 1
    assert requests_total(text, ME, "401") >= 1
    assert requests_total(text, "/api/v1/partner/webhooks/{subscription_id}/failures", "404") >= 1
    assert requests_total(text, "<unmatched>", "404") >= 1
    assert 'partner_api_http_request_duration_seconds_bucket{le="0.005",method="GET",route=' in text
    assert "wh_nope" not in text and "/no/such/path" not in text  # labels stay bounded


def test_a_method_outside_http_s_own_is_counted_as_other_so_it_cannot_add_series(client):
    before = client.get("/metrics").get_data(as_text=True)
    for method in ("FROB", "PURGE", "XYZZY"):
        assert client.open(ME, method=method).status_code == 405
    after = client.get("/metrics").get_data(as_text=True)
    other = requests_total(after, "<unmatched>", "405", "OTHER") - requests_total(
        before, "<unmatched>", "405", "OTHER"
    )
    assert other == 3
    assert "FROB" not in after and "XYZZY" not in after


@pytest.mark.parametrize("incoming", ["req-42.a_b-C", "x" * 64, "7", "lb.check_1"])
def test_request_id_is_kept_when_sane_and_echoed(client, incoming):
    response = client.get("/healthz", headers={"X-Request-Id": incoming})
    assert response.headers["X-Request-Id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        "",
        "x" * 65,
        "vc_123",
        "whsec_abc",
        "req-vc_kq3NpD5",  # a key after a prefix
        "trace.WHSEC_abc",
        "a:b",
        "has space",
        'quote"d',
        "caf\u00e9",
        "<script>",
    ],
)
def test_an_unsafe_request_id_is_replaced_by_a_generated_one(client, incoming):
    response = client.get(ME, headers={"X-Request-Id": incoming})
    generated = response.headers["X-Request-Id"]
    assert generated != incoming and len(generated) == 32 and generated.isalnum()


def test_every_answer_carries_a_request_id_errors_included(client):
    ids = {client.get(path).headers["X-Request-Id"] for path in (ME, "/nope", "/readyz")}
    assert len(ids) == 3


def test_a_missing_multiprocess_directory_is_created_at_start(make_app, tmp_path):
    directory = tmp_path / "not" / "there"
    client = make_app(prometheus_multiproc_dir=str(directory)).test_client()
    assert directory.is_dir()
    assert client.get("/metrics").status_code == 200


def gauge(text: str, name: str) -> float | None:
    return samples(text).get((name, frozenset()))


def seed_a_backlog(client, make_key, clock) -> None:
    """Two subscriptions, three events 10 s apart, one subscription disabled: 3 due, 3 held."""
    org, _, token = make_key()
    for _ in range(2):
        created = client.post(
            "/api/v1/partner/webhooks",
            json={"url": "https://hooks.example.com/in"},
            headers=bearer(token),
        )
        assert created.status_code == 201
    with database.connection_context():
        for n in range(3):
            publish_event(org.id, "vc.test.ping", {"n": n})
            clock.advance(10)
        disabled = Subscription.select().order_by(Subscription.id).first()
        Subscription.update(status="disabled").where(Subscription.id == disabled.id).execute()
        Delivery.update(status="held").where(Delivery.subscription == disabled.id).execute()


def test_the_api_s_metrics_carry_the_queue_gauges_read_once_per_window(
    client, make_key, clock, monkeypatch
):
    reads = []
    read = queue_metrics.stats.queue_gauges
    monkeypatch.setattr(
        queue_metrics.stats, "queue_gauges", lambda now: reads.append(now) or read(now)
    )
    seed_a_backlog(client, make_key, clock)

    scraped = client.get("/metrics").get_data(as_text=True)
    assert gauge(scraped, "partner_api_database_up") == 1
    assert gauge(scraped, "partner_api_deliveries_due") == 3
    assert gauge(scraped, "partner_api_oldest_due_seconds") == 30
    assert gauge(scraped, "partner_api_deliveries_held") == 3
    assert gauge(scraped, "partner_api_subscriptions_disabled") == 1
    assert len(reads) == 1

    clock.advance(queue_metrics.MAX_AGE_SECONDS - 1)
    again = client.get("/metrics").get_data(as_text=True)
    assert len(reads) == 1  # within the window: the same read, no query
    assert gauge(again, "partner_api_oldest_due_seconds") == 30

    clock.advance(1)
    later = client.get("/metrics").get_data(as_text=True)
    assert len(reads) == 2
    assert gauge(later, "partner_api_oldest_due_seconds") == 30 + queue_metrics.MAX_AGE_SECONDS


def test_a_database_that_does_not_answer_gives_up_0_and_no_queue_gauges_not_a_500(
    make_app, clock, caplog
):
    down = f"postgresql://nobody@127.0.0.1:{closed_port()}/none"
    response = make_app(database_url=down).test_client().get("/metrics")
    assert response.status_code == 200
    scraped = response.get_data(as_text=True)
    assert gauge(scraped, "partner_api_database_up") == 0
    assert gauge(scraped, "partner_api_deliveries_due") is None
    assert "queue gauges unavailable" in caplog.text


def test_the_queue_gauges_appear_once_beside_every_worker_s_counts(make_app, tmp_path):
    directory = tmp_path / "metrics"
    client = make_app(prometheus_multiproc_dir=str(directory)).test_client()
    scraped = client.get("/metrics").get_data(as_text=True)
    assert scraped.count("\npartner_api_deliveries_due ") == 1
    assert gauge(scraped, "partner_api_database_up") == 1
