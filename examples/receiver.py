#!/usr/bin/env python3
"""A Partner API webhook receiver: verifies each delivery, skips repeats, prints each event once.

Standard library only: run it to try deliveries, or copy `verify_webhook` into your receiver.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import hashlib
import hmac
import http.server
import json
import os
import queue
import re
import sys
import threading
import time

SECRET_ENV = "WEBHOOK_SECRET"
USAGE = f"""
examples:
  python3 examples/receiver.py --port 9999 --secret whsec_...
  {SECRET_ENV}=whsec_... python3 examples/receiver.py --port 9999

Answers 200 to a verified delivery (and to a repeat of an event it already has, which it does
not print again), 400 with the reason to one that fails verification (missing header, bad
format, timestamp more than 5 minutes away, signature mismatch), and 500 to every delivery
with --fail. Each verified event goes to stdout as `verified: <JSON>`; the rest to stderr.

Then send a delivery again (the test ping's `delivery_id`, once delivered or dead-lettered):
  curl -X POST -H "Authorization: Bearer $TOKEN" \\
    $API/api/v1/partner/webhooks/wh_.../deliveries/dlv_.../redeliver
It arrives with the same event id: this receiver answers 200 and does not print it again.
"""
MAX_BODY = 1024 * 1024
SEEN_IDS = 100_000  # event ids remembered for de-duplication (oldest forgotten first)


class WebhookVerificationError(Exception):
    """A delivery that must not be trusted; `reason` is one of:

    - `missing_header`: neither complete header set (`X-VC-Timestamp` + `X-VC-Signature`, or
      `webhook-id` + `webhook-timestamp` + `webhook-signature`) is present;
    - `bad_format`: a timestamp or signature header is not in the documented format;
    - `stale_timestamp`: the timestamp is more than `tolerance` seconds in the past;
    - `future_timestamp`: the timestamp is more than `tolerance` seconds in the future;
    - `mismatch`: the signature is not the body's under this secret (altered body, other secret).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_OUR_SIGNATURE = re.compile(r"v1=[0-9a-f]{64}")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")


def verify_webhook(raw_body: bytes, headers, secret: str, tolerance: int = 300, *, now=None):
    """Check one delivery's signature and timestamp; returns the parsed event.

    `raw_body` is the body bytes exactly as received; `headers` any mapping of header names
    (case-insensitive) to values; `secret` the subscription's `whsec_…` secret. Our own
    `X-VC-*` headers are checked when present, else the Standard Webhooks ones. Raises
    WebhookVerificationError (see its `reason`); ValueError if `secret` is not `whsec_…`.
    """
    key = _standard_key(secret)
    found = {name.lower(): value for name, value in headers.items()}
    now = time.time() if now is None else now
    if "x-vc-timestamp" in found and "x-vc-signature" in found:
        timestamp = _check_timestamp(found["x-vc-timestamp"], now, tolerance)
        signature = found["x-vc-signature"]
        if not _OUR_SIGNATURE.fullmatch(signature):
            raise WebhookVerificationError("bad_format", "X-VC-Signature is not v1=<64 hex>")
        digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw_body, hashlib.sha256)
        if not hmac.compare_digest("v1=" + digest.hexdigest(), signature):
            raise WebhookVerificationError("mismatch", "X-VC-Signature does not match")
    elif all(f"webhook-{name}" in found for name in ("id", "timestamp", "signature")):
        timestamp = _check_timestamp(found["webhook-timestamp"], now, tolerance)
        signed = f"{found['webhook-id']}.{timestamp}.".encode() + raw_body
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        # Space-separated `v1,<base64>` entries: a sender may sign with several keys.
        candidates = [_standard_signature(entry) for entry in found["webhook-signature"].split()]
        if not candidates:
            raise WebhookVerificationError("bad_format", "webhook-signature is empty")
        if not any(hmac.compare_digest(expected, c) for c in candidates if c is not None):
            raise WebhookVerificationError("mismatch", "webhook-signature does not match")
    else:
        raise WebhookVerificationError(
            "missing_header",
            "expected X-VC-Timestamp and X-VC-Signature, "
            "or webhook-id, webhook-timestamp and webhook-signature",
        )
    try:
        return json.loads(raw_body)
    except ValueError:  # signed by us, so not expected; still no reason to crash on it
        raise WebhookVerificationError("bad_format", "the body is not JSON") from None


def _standard_key(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        raise ValueError("the secret is not whsec_ followed by base64 (the subscription's)")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise ValueError("the secret is not whsec_ followed by base64 (the subscription's)")
    return key


def _check_timestamp(value: str, now: float, tolerance: int) -> str:
    if not _TIMESTAMP.fullmatch(value):
        raise WebhookVerificationError("bad_format", "the timestamp is not Unix seconds")
    age = now - int(value)
    if age > tolerance:
        raise WebhookVerificationError("stale_timestamp", f"signed {int(age)} s ago")
    if -age > tolerance:
        raise WebhookVerificationError("future_timestamp", f"signed {int(-age)} s ahead")
    return value


def _standard_signature(entry: str) -> bytes | None:
    """The signature bytes of one `v1,<base64>` entry; None for another version."""
    version, _, encoded = entry.partition(",")
    if version != "v1":
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise WebhookVerificationError("bad_format", "webhook-signature is not v1,<base64>")


class Receiver(http.server.ThreadingHTTPServer):
    """Verifies and acknowledges on the request thread; one worker thread handles events."""

    daemon_threads = True

    def __init__(self, address, secret: str, fail: bool = False):
        super().__init__(address, _Handler)
        self.secret = secret
        self.fail = fail
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.seen_lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._handle_events, daemon=True).start()

    def first_sighting(self, event_id: str) -> bool:
        with self.seen_lock:
            if event_id in self.seen:
                return False
            self.seen[event_id] = None
            if len(self.seen) > SEEN_IDS:
                self.seen.popitem(last=False)
            return True

    def _handle_events(self):
        # Your processing goes here: off the request thread, so the sender gets its 2xx at once.
        while True:
            event = self.events.get()
            print("verified:", json.dumps(event, separators=(",", ":")), flush=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server naming)
        server: Receiver = self.server
        length = self.headers.get("Content-Length", "")
        if not _CONTENT_LENGTH.fullmatch(length):  # chunked bodies are not expected either
            return self._answer(411, "a Content-Length is required")
        if int(length) > MAX_BODY:
            self.close_connection = True
            return self._answer(413, "the body is too large")
        body = self.rfile.read(int(length))
        if server.fail:
            return self._answer(500, "answering 500 to every delivery (--fail)")
        try:
            event = verify_webhook(body, self.headers, server.secret)
        except WebhookVerificationError as error:
            return self._answer(400, f"rejected: {error}")
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str):
            return self._answer(400, "rejected: the event has no id")
        if server.first_sighting(event_id):
            server.events.put(event)
        else:
            self.log_message("repeat of %s ignored", event_id)
        self._answer(200, "ok", log=False)

    def _answer(self, status: int, reason: str, log: bool = True):
        if log:
            self.log_message("%d %s", status, reason)
        payload = reason.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code="-", size="-"):
        pass  # one line per refusal or repeat is enough; verified events go to stdout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9999, help="port (0: any free one)")
    parser.add_argument("--secret", help=f"the subscription's whsec_… secret (or ${SECRET_ENV})")
    parser.add_argument("--fail", action="store_true", help="answer 500 to every delivery")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0-65535")
    secret = args.secret or os.environ.get(SECRET_ENV, "")
    if not secret:
        print(f"error: no secret: pass --secret whsec_… or set {SECRET_ENV}", file=sys.stderr)
        return 2
    try:
        _standard_key(secret)
        server = Receiver((args.host, args.port), secret, fail=args.fail)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"receiver listening on http://{host}:{port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
