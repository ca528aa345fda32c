"""The signature headers of one attempt, checked against recipes written independently of ours."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from standardwebhooks import Webhook

from partner_api.config import ROOT
from partner_api.delivery import signing
from partner_api.delivery.subscriptions import new_secret

BODY = b'{"event":"vc.test.ping","id":"evt_1","data":{"message":"caf\xc3\xa9"}}'
TIMESTAMP = 1795780830


def test_attempt_headers_are_both_sets_with_one_timestamp():
    secret = new_secret()
    headers = signing.attempt_headers(secret, "evt_1", TIMESTAMP, BODY)
    own = hmac.new(secret.encode(), f"{TIMESTAMP}.".encode() + BODY, hashlib.sha256).hexdigest()
    standard = Webhook(secret).sign(
        "evt_1", dt.datetime.fromtimestamp(TIMESTAMP, dt.UTC), BODY.decode()
    )
    assert headers == {
        "X-VC-Timestamp": "1795780830",
        "X-VC-Signature": "v1=" + own,
        "webhook-id": "evt_1",
        "webhook-timestamp": "1795780830",
        "webhook-signature": standard,
    }


def test_a_secret_that_is_not_base64_is_refused_rather_than_signed_with_other_bytes():
    with pytest.raises(ValueError):
        signing.standard_signature("whsec_not base64!", "evt_1", TIMESTAMP, BODY)


def test_the_partner_docs_document_every_signature_header():
    docs = (ROOT / "docs" / "partners.md").read_text()
    for name in (
        signing.TIMESTAMP_HEADER,
        signing.SIGNATURE_HEADER,
        signing.WEBHOOK_ID_HEADER,
        signing.WEBHOOK_TIMESTAMP_HEADER,
        signing.WEBHOOK_SIGNATURE_HEADER,
    ):
        assert f"| `{name}` |" in docs, name
