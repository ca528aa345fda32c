"""Webhook signatures: `X-VC-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

Receivers verify with the same recipe (README) and a 5-minute replay window.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-VC-Signature"
TIMESTAMP_HEADER = "X-VC-Timestamp"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for one attempt."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}
