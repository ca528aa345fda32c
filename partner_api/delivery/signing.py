"""Webhook signatures: every attempt carries our `X-VC-*` headers and the Standard Webhooks set.

`attempt_headers` is the one place that builds them; docs/partners.md and OpenAPI describe the same.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"

# Ours (contract.md, "Wire format"): `v1=<hex HMAC-SHA256(secret UTF-8, "<timestamp>.<body>")>`.
TIMESTAMP_HEADER = "X-VC-Timestamp"
SIGNATURE_HEADER = "X-VC-Signature"

# Standard Webhooks (standardwebhooks.com), so partners can verify with an off-the-shelf library:
# `v1,<base64 HMAC-SHA256(base64-decoded secret after whsec_, "<id>.<timestamp>.<body>")>`.
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-VC-Signature` value for one attempt."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one attempt."""
    # validate=True: every secret we issue is `whsec_` + base64, and a key silently
    # decoded from something else would sign with bytes no partner library derives.
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    message = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def attempt_headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every signature header of one attempt; `event_id` is the same on every attempt."""
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        WEBHOOK_ID_HEADER: event_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: standard_signature(secret, event_id, timestamp, body),
    }
