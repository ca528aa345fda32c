"""A partner whose DNS never answers, against real gunicorn with the shipped
deploy/gunicorn.conf.py: one key keeps more creates in flight than there are workers, and
another org's GET /me keeps answering while the creates over the cap are refused at once.

The strict latency figure (p99) is the benchmark's, `python -m bench.slow_dns`; here a
generous bound only says that /me never waited for a hung lookup (the 5 s deadline).
"""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from harness.dns import HANG
from harness.net import ME_PATH, get, keep_sending, post_json
from harness.servers import start_gunicorn

from .conftest import WEBHOOKS, bearer

WORKERS = 3  # what the shipped config runs on a 1-vCPU VM (2 × cores + 1)
IN_FLIGHT = WORKERS + 1
LOAD_SECONDS = 4.0  # under the 5 s lookup deadline: every admitted create is still hung
HUNG_URL = "https://hung.example.com/hook"
AT_ONCE = 1.0  # seconds: far above an answer's, far below the deadline's


@pytest.fixture
def server(database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "HARNESS_DNS": json.dumps({"hung.example.com": HANG})}
    log_path = tmp_path / "gunicorn.log"
    with start_gunicorn(
        env, log_path, app="harness.fake_dns_app:app", workers=WORKERS, probe=ME_PATH
    ) as gunicorn:
        yield gunicorn


def test_a_partners_hung_dns_leaves_another_orgs_requests_answered(server, make_key):
    partner = make_key(rate_limit=1_000_000)
    other = make_key(scopes=(), rate_limit=1_000_000, org_name="Other")

    def hung_create():
        status, headers, body, seconds = post_json(
            server.port, WEBHOOKS, {"url": HUNG_URL}, bearer(partner.token)
        )
        return status, json.loads(body)["code"], headers.get("Retry-After"), seconds

    def me():
        status, _, _, seconds = get(server.port, ME_PATH, bearer(other.token))
        return status, seconds

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        creates = pool.submit(keep_sending, hung_create, IN_FLIGHT, LOAD_SECONDS)
        answers = keep_sending(me, 1, LOAD_SECONDS)
        creates = creates.result()

    assert len(answers) >= 10 and {status for status, _ in answers} == {200}
    assert max(seconds for _, seconds in answers) < AT_ONCE, sorted(answers)[-5:]
    # The org's one lookup slot held a create for the whole deadline...
    hung = [c for c in creates if c[1] == "host_unresolvable"]
    assert [(status, seconds >= 4.5) for status, _, _, seconds in hung] == [(422, True)]
    # ...and every other create was refused at once, saying when to retry.
    refused = [c for c in creates if c[1] != "host_unresolvable"]
    assert len(refused) >= IN_FLIGHT
    assert {(status, code) for status, code, _, _ in refused} == {(429, "dns_lookups_in_flight")}
    retry_afters = {int(retry_after) for _, _, retry_after, _ in refused}
    assert retry_afters <= set(range(1, 7)) and max(retry_afters) > 1  # the hang was seen
    assert max(seconds for *_, seconds in refused) < AT_ONCE
