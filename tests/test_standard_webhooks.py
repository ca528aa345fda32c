"""Standard Webhooks libraries that no one here wrote verify real dispatcher deliveries.

The PyPI `standardwebhooks` runs in-process; the npm one runs in Node.js from tests/node/
(skipped, with the reason, where Node or its installed modules are absent).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import subprocess

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher.dispatch import Dispatcher
from harness.receivers import Receiver
from partner_api import clock as clock_module
from partner_api.config import ROOT
from partner_api.delivery import signing
from partner_api.delivery.subscriptions import new_secret

from .conftest import FakeClock, bearer

HOOKS = "/api/v1/partner/webhooks"
NODE_DIR = ROOT / "tests" / "node"
STALE_BY = 600  # seconds: past the 5-minute tolerance of every Standard Webhooks library


@pytest.fixture
def real_time_clock():
    """A fake clock started at the real time: the verifiers compare timestamps with their own."""
    fake = FakeClock(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=STALE_BY))
    clock_module.set_clock(fake)
    yield fake
    clock_module.reset_clock()


@pytest.fixture
def captured(subscribe, client, make_key, config, real_time_clock):
    """Real deliveries to a local receiver: one signed 10 minutes ago (stale), then one fresh
    event whose first attempt fails and whose retry succeeds. Returns (secret, requests)."""
    org, _, token = make_key()
    dispatcher = Dispatcher(config)
    try:
        with Receiver([(200, {}, b"ok"), (500, {}, b"no"), (200, {}, b"ok")]) as receiver:
            sub = subscribe(org.id, receiver.url())
            for advance in (0, STALE_BY):
                real_time_clock.advance(advance)
                answer = client.post(
                    f"{HOOKS}/{sub.id}/test",
                    json={"secret": sub.secret},
                    headers=bearer(token),
                )
                assert answer.status_code == 202, answer.get_json()
                dispatcher.run_until_idle()
            real_time_clock.advance(60)  # the first retry comes due
            dispatcher.run_until_idle()
    finally:
        dispatcher.close()
    assert len(receiver.requests) == 3
    return sub.secret, receiver.requests


def cases(secret: str, requests: list[dict]) -> dict[str, tuple[str, bytes, dict]]:
    """name → (secret, body, headers): the real deliveries, and the same altered."""
    stale, failed, retried = requests
    return {
        "first_attempt": (secret, failed["body"], failed["headers"]),
        "retry": (secret, retried["body"], retried["headers"]),
        "tampered_body": (
            secret,
            retried["body"].replace(b'"data":{', b'"data":{"x":1,'),
            retried["headers"],
        ),
        "wrong_secret": (new_secret(), retried["body"], retried["headers"]),
        "stale": (secret, stale["body"], stale["headers"]),
    }


def test_every_attempt_carries_both_header_sets_with_one_id_and_one_timestamp(captured):
    _, requests = captured
    stale, failed, retried = requests
    for request in requests:
        headers = request["headers"]
        assert headers[signing.WEBHOOK_ID_HEADER] == json.loads(request["body"])["id"]
        assert headers[signing.WEBHOOK_TIMESTAMP_HEADER] == headers[signing.TIMESTAMP_HEADER]
        assert headers[signing.SIGNATURE_HEADER].startswith("v1=")
        assert headers[signing.WEBHOOK_SIGNATURE_HEADER].startswith("v1,")
    assert failed["headers"]["webhook-id"] == retried["headers"]["webhook-id"]
    assert failed["headers"]["webhook-id"] != stale["headers"]["webhook-id"]
    # Fresh on every attempt, like X-VC-Timestamp.
    assert (
        int(retried["headers"]["webhook-timestamp"])
        == int(failed["headers"]["webhook-timestamp"]) + 60
    )


def test_pypi_standardwebhooks_verifies_deliveries_and_rejects_altered_ones(captured):
    outcomes = {}
    for name, (secret, body, headers) in cases(*captured).items():
        try:
            payload = Webhook(secret).verify(body, headers)
        except WebhookVerificationError as error:
            outcomes[name] = f"rejected: {error}"
        else:
            assert payload == json.loads(body)
            outcomes[name] = "verified"
    assert outcomes == {
        "first_attempt": "verified",
        "retry": "verified",
        "tampered_body": "rejected: No matching signature found",
        "wrong_secret": "rejected: No matching signature found",
        "stale": "rejected: Message timestamp too old",
    }


@pytest.fixture
def node() -> str:
    """The Node.js executable, with tests/node's locked modules installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the npm Standard Webhooks check needs Node.js")
    if not (NODE_DIR / "node_modules" / "standardwebhooks").is_dir():
        pytest.skip("tests/node has no node_modules: run `make node-deps` (npm ci) first")
    return node


def test_npm_standardwebhooks_verifies_deliveries_and_rejects_altered_ones(node, captured):
    payload = {
        "cases": [
            {
                "name": name,
                "secret": secret,
                "body_base64": base64.b64encode(body).decode(),
                "headers": headers,
            }
            for name, (secret, body, headers) in cases(*captured).items()
        ]
    }
    result = subprocess.run(
        [node, "verify.mjs"],
        cwd=NODE_DIR,
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "first_attempt": "verified",
        "retry": "verified",
        "tampered_body": "rejected: No matching signature found",
        "wrong_secret": "rejected: No matching signature found",
        "stale": "rejected: Message timestamp too old",
    }
