"""The `Idempotency-Key` header on `POST /webhooks` and `POST /webhooks/{id}/test`: its
grammar and OpenAPI parameter, the `idempotent` view decorator that answers a retry with the
first answer, and `recorder`, which a view hands its work function so the answer is stored in
the work's own transaction (partner_api/idempotency_keys.py keeps the answers).
"""

from __future__ import annotations

import functools
import re

from flask import current_app, g, request

from partner_api import idempotency_keys
from partner_api.errors import DomainError
from partner_api.idempotency_keys import AnsweredMeanwhile, KeyedRequest, StoredAnswer

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# 1–255 printable ASCII characters; HTTP drops spaces around a header value, so a key neither
# starts nor ends with one (it would not arrive as sent).
KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"
_KEY = re.compile(KEY_PATTERN)
PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "description": (
        "Makes a retry safe: the same key from your org with the same request within 24 hours "
        "answers the first answer again (status, body, headers) without doing the work twice; "
        "with a different request it is 422 `idempotency_key_reused`. Two requests with one key "
        "at once: the second waits for the first and answers the same (a create may instead be "
        "refused at once, 429 `dns_lookups_in_flight`, while the first resolves the webhook host: "
        "retry it after `Retry-After`). Keys are per org and per "
        "operation. 1–255 printable ASCII characters (a UUID is a good key); only successful "
        "answers are kept, so a refused request can be retried with the same key."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    },
    "example": "4f1c2d9e-7b1a-4c55-9a7e-2f0d3c1b8e6a",
}


def _keyed_request(operation: str) -> KeyedRequest | None:
    """This request's key (None without the header), refused unless it follows the grammar."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _KEY.match(key):
        raise DomainError(
            "invalid_idempotency_key",
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, not "
            "starting or ending with a space.",
            field=HEADER,
            location="headers",
        )
    asked = {"path": request.view_args or {}, "body": request.get_json(silent=True)}
    return KeyedRequest(g.caller.org_id, operation, key, idempotency_keys.request_hash(asked))


def _replayed(answer: StoredAnswer):
    response = current_app.json.response(answer.body)
    response.status_code = answer.status
    response.headers.update(answer.headers)
    return response


def idempotent(view):
    """Honour the Idempotency-Key header on this view (its name is the operation the keys are
    scoped to): a stored answer is given again, else the view runs and its work function
    records the answer through `recorder`."""

    @functools.wraps(view)
    def answer_once(*args, **kwargs):
        keyed = _keyed_request(view.__name__)
        if keyed is None:
            return view(*args, **kwargs)
        stored = idempotency_keys.stored_answer(keyed)
        if stored is not None:
            return _replayed(stored)
        g.keyed_request = keyed
        try:
            return view(*args, **kwargs)
        except AnsweredMeanwhile:
            # A request with the same key committed first; this one's work was rolled back.
            # Its answer is at most seconds old, so it is there (or a reuse: 422).
            return _replayed(idempotency_keys.stored_answer(keyed))

    return answer_once


def recorder(answer_of):
    """What the view hands its work function to call inside the work's transaction with the
    result: stores `answer_of(result)` = (status, body, headers) under this request's key.
    None when the request carried no key."""
    keyed = g.get("keyed_request")
    if keyed is None:
        return None

    def record(result) -> None:
        status, body, headers = answer_of(result)
        idempotency_keys.record_answer(keyed, StoredAnswer(status, body, headers))

    return record
