"""Webhook signatures: `X-VC-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

Shared by the dispatcher (signing) and anyone verifying (tests, partner docs).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-VC-Signature"
TIMESTAMP_HEADER = "X-VC-Timestamp"
REPLAY_WINDOW_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for one attempt."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: str,
    timestamp_header: str,
    signature_header: str,
    body: bytes,
    now: int,
    tolerance: int = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver does: fresh timestamp and a matching signature (constant-time)."""
    try:
        timestamp = int(timestamp_header)
    except (TypeError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header or "")
